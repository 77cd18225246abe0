"""The Service Bus triggers and the janitor timer, called as the host would, on a stub runtime."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest
from azure.functions.servicebus import ServiceBusMessage as HostMessage

from core.errors import StoreUnavailable, TransportError
from core.models import ReceivedMessage
from core.settlement import Disposition, Settlement
from infrastructure.servicebus.transport import HOST_LOCK_PREFIX
from triggers import sb_triggers
from triggers.azure_runtime import set_runtime
from triggers.outage import OutageBackoff


@functools.cache
def functions() -> dict[str, Any]:
    app = func.FunctionApp()
    app.register_functions(sb_triggers.bp)
    return {str(f.get_function_name()): f for f in app.get_functions()}


class StubRuntime:
    def __init__(self, disposition: Disposition = Disposition.COMPLETE, error: Exception | None = None) -> None:
        self.seen: list[ReceivedMessage] = []
        self.dead: list[tuple[str, str, str]] = []
        self.flushes = 0
        self.janitor_runs = 0
        self._disposition, self._error = disposition, error
        self.engine = SimpleNamespace(handle_job_messages=self._handle, handle_task_messages=self._handle)
        self.transport = SimpleNamespace(dead_letter=lambda m, r, d: self.dead.append((m.message_id, r, d)))
        self.relay = SimpleNamespace(flush=self._flush)
        self.janitor = SimpleNamespace(run_once=self._janitor)
        self.settings = SimpleNamespace(outage_budget_seconds=480.0)

    def _handle(self, messages: Sequence[ReceivedMessage]) -> list[Settlement]:
        self.seen.extend(messages)
        if self._error is not None:
            raise self._error
        return [Settlement(m, self._disposition, "UnknownTaskType", "no handler") for m in messages]

    def _flush(self) -> int:
        self.flushes += 1
        return 0

    def _janitor(self) -> Any:
        self.janitor_runs += 1
        return SimpleNamespace(as_dict=lambda: {})


@pytest.fixture(autouse=True)
def restore_runtime() -> Iterator[None]:
    previous = set_runtime(None)
    yield
    set_runtime(previous)


@pytest.fixture
def stub() -> StubRuntime:
    return install(StubRuntime())


def install(runtime: StubRuntime) -> StubRuntime:
    set_runtime(runtime)  # type: ignore[arg-type]
    return runtime


def message(body: bytes = b'{"kind": "task", "job_id": "J1"}', delivery_count: int | None = 2) -> HostMessage:
    return HostMessage(
        body=body,
        message_id="t:1:a1",
        delivery_count=delivery_count,
        application_properties={"job_id": "J1", "attempt": 1},
        user_properties={},
        lock_token="lock-1",
    )


def test_bindings() -> None:
    f = functions()
    assert set(f) == {"process_job_message", "process_task_message", "janitor"}
    for name, queue in (("process_job_message", "%JOBS_QUEUE%"), ("process_task_message", "%TASKS_QUEUE%")):
        [binding] = json.loads(f[name].get_function_json())["bindings"]
        assert binding == {
            "direction": "IN",
            "type": "serviceBusTrigger",
            "name": "msg",
            "connection": "ServiceBusConnection",
            "queueName": queue,
        }
    [timer] = json.loads(f["janitor"].get_function_json())["bindings"]
    assert timer["type"] == "timerTrigger"
    assert timer["schedule"] in ("%JANITOR_SCHEDULE%", sb_triggers.DEFAULT_JANITOR_SCHEDULE)


def test_complete_returns_and_flushes_the_relay(stub: StubRuntime) -> None:
    functions()["process_task_message"].get_user_function()(message())
    [seen] = stub.seen
    assert (seen.queue, seen.message_id, seen.body) == ("tasks", "t:1:a1", {"kind": "task", "job_id": "J1"})
    assert seen.properties == {"job_id": "J1", "attempt": 1}
    assert seen.delivery_count == 2
    assert seen.lock_token == f"{HOST_LOCK_PREFIX}lock-1"
    assert stub.flushes == 1
    assert stub.dead == []


def test_missing_delivery_count_falls_back_to_the_attempt_property(stub: StubRuntime) -> None:
    functions()["process_job_message"].get_user_function()(message(delivery_count=None))
    assert (stub.seen[0].queue, stub.seen[0].delivery_count) == ("jobs", 1)


def test_dead_letter_is_recorded_and_the_function_returns() -> None:
    runtime = install(StubRuntime(Disposition.DEAD_LETTER))
    functions()["process_task_message"].get_user_function()(message())
    assert runtime.dead == [("t:1:a1", "UnknownTaskType", "no handler")]
    assert runtime.flushes == 1


def test_malformed_body_is_recorded_without_reaching_the_engine() -> None:
    runtime = install(StubRuntime())
    functions()["process_task_message"].get_user_function()(message(body=b"\xffnot json"))
    assert runtime.seen == []
    [(mid, reason, _)] = runtime.dead
    assert (mid, reason) == ("t:1:a1", "MalformedMessage")


def test_abandon_raises_so_the_host_redelivers() -> None:
    runtime = install(StubRuntime(Disposition.ABANDON))
    with pytest.raises(sb_triggers.MessageAbandoned):
        functions()["process_task_message"].get_user_function()(message())
    assert runtime.flushes == 1


def test_unexpected_errors_propagate_after_flushing() -> None:
    runtime = install(StubRuntime(error=RuntimeError("database down")))
    with pytest.raises(RuntimeError, match="database down"):
        functions()["process_job_message"].get_user_function()(message())
    assert runtime.flushes == 1


def test_janitor_timer_runs_one_pass(stub: StubRuntime) -> None:
    timer = SimpleNamespace(past_due=False)
    functions()["janitor"].get_user_function()(timer)
    assert stub.janitor_runs == 1


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class OutageRuntime(StubRuntime):
    """The state store is down until `until` on the fake clock."""

    def __init__(self, clock: FakeTime, until: float, error: Exception) -> None:
        super().__init__()
        self.clock, self.until, self.outage = clock, until, error

    def _handle(self, messages: Sequence[ReceivedMessage]) -> list[Settlement]:
        if self.clock.now < self.until:
            raise self.outage
        return super()._handle(messages)


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    clock = FakeTime()
    monkeypatch.setattr(
        sb_triggers,
        "backoff_factory",
        lambda budget: OutageBackoff(budget_seconds=budget, sleep=clock.sleep, clock=lambda: clock.now,
                                     jitter=lambda: 0.5),
    )
    return clock


def deliver_until_done(clock: FakeTime, max_deliveries: int = 10) -> tuple[int, list[float]]:
    """The host's loop: deliver, abandon at once on an exception, until the function returns or the message
    would be dead-lettered. Answers the deliveries used and the (fake) time each invocation took."""
    took: list[float] = []
    for delivery in range(1, max_deliveries + 1):
        started = clock.now
        try:
            functions()["process_task_message"].get_user_function()(message(delivery_count=delivery))
        except Exception:
            took.append(clock.now - started)
            clock.now += 0.1  # redelivered at once
            continue
        took.append(clock.now - started)
        return delivery, took
    return max_deliveries + 1, took


@pytest.mark.parametrize(
    "error",
    [StoreUnavailable("connection refused"), TransportError("service bus unreachable", transient=True)],
    ids=["database", "transport"],
)
def test_a_ten_minute_outage_dead_letters_nothing(fake_time: FakeTime, error: Exception) -> None:
    runtime = install(OutageRuntime(fake_time, until=600.0, error=error))
    deliveries, took = deliver_until_done(fake_time)
    assert deliveries <= 2, "the outage is waited out inside the invocation, not by spending deliveries"
    assert max(took) <= 480.0 < 600.0, "each invocation stays within the budget, below functionTimeout"
    assert len(runtime.seen) == 1 and runtime.dead == []
    assert fake_time.sleeps[0] == pytest.approx(2.0) and max(fake_time.sleeps) <= 60.0


def test_an_outage_longer_than_the_budget_gives_the_message_back(fake_time: FakeTime) -> None:
    install(OutageRuntime(fake_time, until=10_000.0, error=StoreUnavailable("down")))
    with pytest.raises(StoreUnavailable):
        functions()["process_task_message"].get_user_function()(message())
    assert 400.0 < fake_time.now <= 480.0


def test_errors_that_are_not_outages_are_not_waited_on(fake_time: FakeTime) -> None:
    install(StubRuntime(error=RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        functions()["process_task_message"].get_user_function()(message())
    assert fake_time.sleeps == []
