"""Worker threads on the in-memory pair: run a job to the end, stop cleanly, abandon batches that blow up."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from core import attempts
from core.engine import CoreMachine
from core.errors import StoreUnavailable
from core.janitor import Janitor, JanitorConfig
from core.jobs import JobRegistry, Stage
from core.models import JobStatus, ReceivedMessage, StagePlan, TaskOutcome
from core.ports import NullRelay
from core.registry import TaskContext
from core.worker import Worker, WorkerConfig
from infrastructure.memory.store import InMemoryStore
from infrastructure.memory.transport import InMemoryTransport
from tests.unit.helpers import Probe, ProbeHandlers, task_registry

pytestmark = pytest.mark.timeout(60)

CONFIG = WorkerConfig(concurrency=2, wait_seconds=0.05, janitor_interval_seconds=0.1)


class QuickProbe(Probe):
    """Probe with half-second leases, so a lost outcome is taken back quickly."""

    job_type = "quick_probe"
    stages = (Stage("square", "probe.square", timeout_seconds=0.5), Stage("sum", "probe.sum", timeout_seconds=0.5))


class FlakyStore(InMemoryStore):
    """Loses the connection the first `failures` times outcomes are recorded."""

    failures = 1

    def record_outcomes(
        self, outcomes: Sequence[TaskOutcome], inline_finish: frozenset[str] = frozenset(),
        acknowledge: Sequence[ReceivedMessage] = (),
    ) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("connection reset while committing outcomes")
        super().record_outcomes(outcomes, inline_finish, acknowledge)


def engine_on(store: InMemoryStore, handlers: ProbeHandlers, jobs: JobRegistry) -> CoreMachine:
    return CoreMachine(store, NullRelay(), jobs, task_registry(handlers.handlers()), "unit-worker")


def run(worker: Worker, store: InMemoryStore, job_id: str) -> JobStatus:
    def finished() -> bool:
        job = store.get_job(job_id)
        return job is not None and job.status.terminal

    assert worker.run_until(finished, timeout=20, poll_seconds=0.02)
    job = store.get_job(job_id)
    assert job is not None
    return job.status


_POOL_THREAD = re.compile(r"coremachine-\d+-")
"""A PostgreSQL connection pool's own threads (named after the pool, `coremachine-<pid>`), not the engine's."""


def worker_threads(settle_seconds: float = 2.0) -> list[threading.Thread]:
    """CoreMachine threads still alive once idle heartbeat and handler threads (of any engine, also earlier
    tests') have had time to end: they stop on their own half a second after their last work."""
    deadline = time.monotonic() + settle_seconds
    while True:
        alive = [t for t in threading.enumerate()
                 if t.name.startswith("coremachine-") and not _POOL_THREAD.match(t.name)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def test_worker_runs_a_job_with_two_task_threads_and_stops_cleanly() -> None:
    transport = InMemoryTransport()
    store = InMemoryStore(transport)
    handlers = ProbeHandlers()
    together = threading.Barrier(2, timeout=5)
    threads: set[str] = set()
    square = handlers.square

    def rendezvous(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
        threads.add(threading.current_thread().name)
        if params["i"] < 2:
            together.wait()
        return square(params, context)

    handlers.square = rendezvous  # type: ignore[method-assign]
    engine = engine_on(store, handlers, JobRegistry([Probe()]))
    worker = Worker(engine, transport, CONFIG, Janitor(store, NullRelay()))
    job_id = engine.submit("probe", {"n": 8}).job.job_id
    assert run(worker, store, job_id) is JobStatus.COMPLETED
    job = store.get_job(job_id)
    assert job is not None and job.result == {"outcome": "completed", "total": 140, "squares": 8}
    assert not together.broken and len(threads) >= 2
    assert (worker.stats.job_messages, worker.stats.task_messages, worker.stats.failures) == (3, 9, 0)
    assert worker_threads() == []
    worker.stop()
    transport.close()


class FlakyStageStore(InMemoryStore):
    """Loses the connection the first time a stage is created."""

    failures = 1

    def start_stages(
        self, plans: Sequence[StagePlan], inline_finish: frozenset[str] = frozenset(),
        acknowledge: Sequence[ReceivedMessage] = (),
    ) -> list[bool]:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("connection reset while creating a stage")
        return super().start_stages(plans, inline_finish, acknowledge)


def test_job_batch_that_raises_is_abandoned_and_redelivered() -> None:
    transport = InMemoryTransport()
    store = FlakyStageStore(transport)
    handlers = ProbeHandlers()
    engine = engine_on(store, handlers, JobRegistry([Probe()]))
    worker = Worker(engine, transport, CONFIG)
    job_id = engine.submit("probe", {"n": 3}).job.job_id
    assert run(worker, store, job_id) is JobStatus.COMPLETED
    assert worker.stats.failures == 1
    assert worker_threads() == []


def test_task_batch_that_raises_is_abandoned_and_the_task_recovered() -> None:
    transport = InMemoryTransport()
    store = FlakyStore(transport)
    handlers = ProbeHandlers()
    engine = engine_on(store, handlers, JobRegistry([QuickProbe()]))
    janitor = Janitor(store, NullRelay(), JanitorConfig(lease_grace_seconds=0.0))
    worker = Worker(engine, transport, WorkerConfig(concurrency=1, wait_seconds=0.05, janitor_interval_seconds=0.1),
                    janitor)
    job_id = engine.submit("quick_probe", {"n": 1}).job.job_id
    assert run(worker, store, job_id) is JobStatus.COMPLETED
    assert worker.stats.failures == 1
    assert handlers.calls[f"{job_id}-s1-t0"] == 2
    snapshot = store.snapshot(job_id, events=100)
    assert snapshot is not None
    assert "task_lease_expired" in [e.kind for e in snapshot.events]


def test_a_fast_handler_that_hangs_on_the_task_thread_is_timed_out_and_the_thread_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Known-fast handlers run on the task thread itself (no hand-off); when one hangs anyway, its attempt is
    still timed out at the stage's limit, the rest of its batch is run and recorded elsewhere, and a fresh
    thread keeps the worker at full concurrency."""
    monkeypatch.setattr(attempts, "INLINE_SECONDS", 0.1)  # a loaded machine may stretch a no-op call a little
    monkeypatch.setattr(attempts, "INLINE_SHARE", 0.2)
    transport = InMemoryTransport()
    store = InMemoryStore(transport)
    handlers = ProbeHandlers()
    release = threading.Event()
    hung_in: list[str] = []
    square = handlers.square

    def square_or_hang(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
        if params["i"] == 30 and context.attempt == 1:
            hung_in.append(threading.current_thread().name)
            release.wait(30)  # deaf to context.cancelled: only the time limit gets the worker out
        return square(params, context)

    handlers.square = square_or_hang  # type: ignore[method-assign]
    engine = engine_on(store, handlers, JobRegistry([QuickProbe()]))
    worker = Worker(engine, transport, WorkerConfig(concurrency=1, wait_seconds=0.05, janitor_interval_seconds=0.1))
    job_id = engine.submit("quick_probe", {"n": 40}).job.job_id
    try:
        started = time.monotonic()
        assert run(worker, store, job_id) is JobStatus.COMPLETED
        assert time.monotonic() - started < 10, "stop() does not wait for the abandoned thread"
        job = store.get_job(job_id)
        assert job is not None and job.result == {"outcome": "completed", "total": sum(i * i for i in range(40)),
                                                   "squares": 40}
        assert hung_in == ["coremachine-tasks-0"], "the hang happened on the task thread itself"
        assert engine.abandoned_handler_threads == 1
        assert handlers.calls[f"{job_id}-s1-t30"] == 1, "attempt 2 ran (attempt 1 never reached the counter)"
        snapshot = store.snapshot(job_id, events=200)
        assert snapshot is not None
        timeouts = [e for e in snapshot.events if e.task_id == f"{job_id}-s1-t30" and e.kind == "task_retry_scheduled"]
        assert timeouts and "TaskTimeout" in str(timeouts[0].detail)
        assert [t.name for t in threading.enumerate() if t.name.endswith("coremachine-tasks-0")] == \
            ["abandoned-coremachine-tasks-0"]
    finally:
        release.set()
    abandoned = [t for t in threading.enumerate() if t.name == "abandoned-coremachine-tasks-0"]
    for thread in abandoned:
        thread.join(5)
        assert not thread.is_alive()
    assert handlers.calls[f"{job_id}-s1-t30"] == 2, "the late attempt returned into nothing: no outcome recorded"
    assert store.get_job(job_id).status is JobStatus.COMPLETED  # type: ignore[union-attr]
    assert worker_threads() == []
