"""Long, hung and cancelled handlers on the real PostgreSQL: locks and leases renewed while a handler runs, a
hung attempt timed out without costing capacity, cancel stops work, and no unstarted message is counted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from core.models import DeadLetterSelector, JobStatus
from infrastructure.servicebus import transport as sb
from infrastructure.settings import Settings
from tests.fakes.servicebus_fake import FakeServiceBus
from tests.integration.engine_helpers import rows, run_to_end, task_rows
from triggers.runtime import Runtime, build_runtime

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def short_locks(drill_settings: Settings) -> Iterator[Runtime]:
    settings = drill_settings.model_copy(update={"lock_seconds": 1.0, "task_lease_seconds": 1.0,
                                                 "lease_grace_seconds": 0.2})
    with build_runtime(settings, worker_id="short-locks") as rt:
        yield rt


def test_a_handler_longer_than_the_lock_and_the_lease_runs_exactly_once(short_locks: Runtime) -> None:
    rt = short_locks
    job_id = rt.engine.submit("drill_long", {"n": 2, "sleep_ms": 3500}).job.job_id
    job = run_to_end(rt, job_id, concurrency=2)
    assert job.status is JobStatus.COMPLETED
    stage1 = task_rows(rt, job_id, 1)
    assert [(r[1], r[2], r[3]) for r in stage1] == [("completed", 1, []), ("completed", 1, [])]
    deliveries = rows(rt, "SELECT message_id, delivery_count FROM queue_messages WHERE queue = 'tasks' "
                          "AND body ->> 'stage' = '1'")
    assert sorted(count for _, count in deliveries) == [1, 1], deliveries


class Concurrency:
    """Wraps a handler to record how many calls run at once (the hung one excluded)."""

    def __init__(self, handler: Callable[..., Any]) -> None:
        self._handler = handler
        self._lock = threading.Lock()
        self.running = 0
        self.peak_after_hang = 0
        self.hang_started: float | None = None

    def __call__(self, params: dict[str, Any], context: Any) -> Any:
        if params.get("hang") and context.attempt == 1:
            self.hang_started = time.monotonic()
            return self._handler(params, context)
        with self._lock:
            self.running += 1
            if self.hang_started is not None and time.monotonic() > self.hang_started + 2.5:
                self.peak_after_hang = max(self.peak_after_hang, self.running)
        try:
            return self._handler(params, context)
        finally:
            with self._lock:
                self.running -= 1


def test_a_hung_handler_is_timed_out_retried_and_the_worker_keeps_full_concurrency(runtime: Runtime) -> None:
    handlers = runtime.registries.tasks._handlers
    counting = Concurrency(handlers["drill.work"])
    handlers["drill.work"] = counting
    # Stage time limit 2 s; task 0's first attempt hangs for an hour.
    job_id = runtime.engine.submit("drill_continue", {"n": 24, "hang_index": 0, "sleep_ms": 250}).job.job_id
    job = run_to_end(runtime, job_id, concurrency=2)
    assert job.status is JobStatus.COMPLETED
    [hung, *others] = task_rows(runtime, job_id, 1)
    assert (hung[1], hung[2]) == ("completed", 2)
    assert [e["type"] for e in hung[3]] == ["TaskTimeout"] and "time limit of 2s" in hung[3][0]["message"]
    assert {(r[1], r[2]) for r in others} == {("completed", 1)}
    assert runtime.engine.abandoned_handler_threads == 1
    assert counting.peak_after_hang == 2, "after the hang the worker ran at full concurrency again"


def test_cancel_stops_work_only_in_flight_tasks_finish_and_they_stop_early(runtime: Runtime) -> None:
    job_id = runtime.engine.submit("drill_continue", {"n": 20, "cooperative_ms": 3000}).job.job_id
    worker = runtime.worker(concurrency=2, wait_seconds=0.2, janitor_interval_seconds=0.5)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while rows(runtime, "SELECT count(*) FROM tasks WHERE job_id = %s AND status = 'running'", job_id)[0][0] < 2:
            assert time.monotonic() < deadline, "two tasks never started"
            time.sleep(0.05)
        cancelled_at = time.monotonic()
        assert runtime.store.cancel_job(job_id, "operator changed their mind")
        while not (job := runtime.store.get_job(job_id)) or not job.status.terminal:
            assert time.monotonic() < deadline, "the cancelled job never ended"
            time.sleep(0.05)
        took = time.monotonic() - cancelled_at
    finally:
        worker.stop()
    assert job.status is JobStatus.CANCELLED
    assert took < 2.5, f"in-flight handlers did not stop early ({took:.1f}s)"
    tasks = task_rows(runtime, job_id, 1)
    started = [r for r in tasks if r[2] > 0]
    assert 2 <= len(started) <= 3, [(r[0], r[1], r[2]) for r in started]
    assert all(r[4] is None or r[4]["stopped_early"] for r in started)
    assert {r[1] for r in tasks if r[2] == 0} == {"cancelled"}


def mixed_jobs(rt: Runtime) -> list[str]:
    """Fast hello_world tasks and slow drill tasks interleaved in one task queue."""
    ids = []
    for i in range(3):
        ids.append(rt.engine.submit("hello_world", {"n": 12, "message": f"fast{i}"}).job.job_id)
        ids.append(rt.engine.submit("drill_long", {"n": 3, "sleep_ms": 400, "tag": f"slow{i}"}).job.job_id)
    return ids


def run_all(rt: Runtime, job_ids: list[str]) -> None:
    worker = rt.worker(concurrency=1, wait_seconds=0.2, janitor_interval_seconds=0.5)

    def finished() -> bool:
        return all((j := rt.store.get_job(job_id)) is not None and j.status.terminal for job_id in job_ids)

    assert worker.run_until(finished, timeout=90)
    for job_id in job_ids:
        job = rt.store.get_job(job_id)
        assert job is not None and job.status is JobStatus.COMPLETED, job_id


def test_fast_messages_behind_slow_ones_are_never_dead_lettered_on_the_postgres_queue(
    drill_settings: Settings,
) -> None:
    settings = drill_settings.model_copy(update={"max_deliveries": 2, "lock_seconds": 2.0})
    with build_runtime(settings, worker_id="mixed") as rt:
        run_all(rt, mixed_jobs(rt))
        assert rt.transport.list_dead_letters(DeadLetterSelector()) == []
        [(max_count,)] = rows(rt, "SELECT max(delivery_count) FROM queue_messages")
        assert max_count == 1


def test_fast_messages_behind_slow_ones_are_never_dead_lettered_on_service_bus(
    drill_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = FakeServiceBus(lock_seconds=2.0, max_delivery_count=2)
    monkeypatch.setattr(sb, "client_factory", lambda connection: bus)
    settings = drill_settings.model_copy(update={
        "transport": "servicebus", "max_deliveries": 2, "lock_seconds": 2.0,
        "servicebus_connection": "Endpoint=sb://fake.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=x",
    })
    with build_runtime(settings, worker_id="mixed-sb") as rt:
        run_all(rt, mixed_jobs(rt))
        assert rt.transport.list_dead_letters(DeadLetterSelector()) == []
        assert bus.abandoned == 0, "an unstarted message was handed back with its delivery counted"


def test_a_finalize_longer_than_the_lock_runs_once(short_locks: Runtime) -> None:
    rt = short_locks
    definition = rt.registries.jobs.get("drill_long")
    original = definition.finalize
    calls: list[float] = []

    def slow_finalize(context: Any) -> Any:
        calls.append(time.monotonic())
        time.sleep(3.0)  # three lock lengths: the job message's lock is renewed while it runs
        return original(context)

    definition.finalize = slow_finalize  # type: ignore[method-assign]
    job_id = rt.engine.submit("drill_long", {"n": 1, "tag": "slow-finalize"}).job.job_id
    job = run_to_end(rt, job_id, concurrency=1)
    assert job.status is JobStatus.COMPLETED
    assert len(calls) == 1
    [(deliveries,)] = rows(rt, "SELECT max(delivery_count) FROM queue_messages WHERE queue = 'jobs'")
    assert deliveries == 1
