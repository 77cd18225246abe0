"""End to end on real PostgreSQL with the Service Bus transport over the SDK fake, driven through the triggers.

`HostSimulator` plays the Functions host: it receives from the fake in peek-lock mode, hands each message to the
blueprint's trigger function as an `azure.functions` message, completes it when the function returns and
abandons it when the function raises.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from azure.functions.servicebus import ServiceBusMessage as HostMessage
from azure.servicebus import ServiceBusMessage

from core.models import DeadLetterSelector, JobStatus
from infrastructure.servicebus import transport as sb
from infrastructure.servicebus.mapping import decode_properties
from infrastructure.settings import Settings
from tests.fakes.servicebus_fake import FakeReceivedMessage, FakeServiceBus
from triggers import sb_triggers
from triggers.azure_runtime import set_runtime
from triggers.runtime import Runtime, build_runtime

QUEUES = {"jobs": "cm-jobs", "tasks": "cm-tasks"}


def host_message(raw: FakeReceivedMessage) -> HostMessage:
    return HostMessage(
        body=raw.data,
        message_id=raw.message_id,
        delivery_count=raw.delivery_count + 1,
        application_properties=decode_properties(raw.application_properties),
        user_properties={},
        lock_token=raw.lock_token,
        enqueued_time_utc=raw.enqueued_time_utc,
        sequence_number=raw.sequence_number,
        content_type=raw.content_type,
    )


class HostSimulator:
    def __init__(self, bus: FakeServiceBus) -> None:
        self.bus = bus
        self.triggers: dict[str, Callable[[HostMessage], None]] = {
            QUEUES["jobs"]: sb_triggers.process_job_message,
            QUEUES["tasks"]: sb_triggers.process_task_message,
        }
        self.receivers = {entity: bus.get_queue_receiver(entity) for entity in self.triggers}
        self.failures = 0

    def pump(self) -> int:
        handled = 0
        for entity, trigger in self.triggers.items():
            receiver = self.receivers[entity]
            for raw in receiver.receive_messages(max_message_count=10, max_wait_time=0.05):
                handled += 1
                try:
                    trigger(host_message(raw))
                except Exception:
                    self.failures += 1
                    receiver.abandon_message(raw)
                else:
                    receiver.complete_message(raw)
        return handled

    def run_until(self, done: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "timed out"
            self.pump()


@pytest.fixture
def bus() -> FakeServiceBus:
    return FakeServiceBus(lock_seconds=30.0, max_delivery_count=3)


@pytest.fixture
def runtime(drill_settings: Settings, bus: FakeServiceBus, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setattr(sb, "client_factory", lambda connection: bus)
    settings = drill_settings.model_copy(
        update={
            "transport": "servicebus",
            "servicebus_connection": "Endpoint=sb://fake.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=x",
            "jobs_queue": QUEUES["jobs"],
            "tasks_queue": QUEUES["tasks"],
        }
    )
    with build_runtime(settings, worker_id="sb-test") as rt:
        previous = set_runtime(rt)
        try:
            yield rt
        finally:
            set_runtime(previous)


def status(runtime: Runtime, job_id: str) -> JobStatus:
    job = runtime.store.get_job(job_id)
    assert job is not None
    return job.status


def test_job_with_retries_completes_through_service_bus(runtime: Runtime, bus: FakeServiceBus) -> None:
    assert isinstance(runtime.transport, sb.ServiceBusTransport)
    submitted = runtime.engine.submit("hello_world", {"n": 3, "fail_attempts": 1})
    job_id = submitted.job.job_id
    host = HostSimulator(bus)

    host.run_until(lambda: status(runtime, job_id).terminal)

    assert status(runtime, job_id) is JobStatus.COMPLETED
    retried = [mid for entity, mid, _ in bus.scheduled if entity == QUEUES["tasks"]]
    assert len(retried) == 6, "every task of both stages failed once and came back as a scheduled message"
    assert host.failures == 0
    with runtime.database.connection() as conn:
        row = conn.execute("SELECT count(*) FROM queue_messages WHERE state = 'ready'").fetchone()
    assert row == (0,), "the relay flushed every outbox row"
    assert runtime.transport.list_dead_letters(DeadLetterSelector()) == []


def test_dead_letters_from_both_places_are_listed_replayed_and_purged(
    runtime: Runtime, bus: FakeServiceBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = HostSimulator(bus)
    poison = ServiceBusMessage(b"not json", message_id="poison-1", application_properties={"job_id": "none"})
    bus.get_queue_sender(QUEUES["tasks"]).send_messages(poison)

    def crash(messages: Any) -> Any:
        raise RuntimeError("worker crashed")

    monkeypatch.setattr(runtime.engine, "handle_job_messages", crash)
    job_id = runtime.engine.submit("hello_world", {"n": 2}).job.job_id
    for _ in range(6):
        host.pump()
    assert host.failures == 3

    dead = runtime.transport.list_dead_letters(DeadLetterSelector())
    assert [(d.id.split(":")[0], d.reason) for d in dead] == [
        ("pg", "MalformedMessage"),
        ("sb", "MaxDeliveryCountExceeded"),
    ]
    parked, crashed = dead
    assert (parked.queue, parked.message_id) == ("tasks", "poison-1")
    assert (crashed.queue, crashed.properties["job_id"], crashed.delivery_count) == ("jobs", job_id, 3)
    assert runtime.transport.get_dead_letter(crashed.id) == crashed
    assert status(runtime, job_id) is JobStatus.QUEUED

    monkeypatch.undo()
    assert runtime.transport.replay_dead_letters(DeadLetterSelector(job_id=job_id)) == [crashed]
    host.run_until(lambda: status(runtime, job_id).terminal)
    assert status(runtime, job_id) is JobStatus.COMPLETED

    assert runtime.transport.list_dead_letters(DeadLetterSelector()) == [parked]
    assert runtime.transport.purge_dead_letters(DeadLetterSelector(reason="MalformedMessage")) == 1
    assert runtime.transport.list_dead_letters(DeadLetterSelector()) == []
