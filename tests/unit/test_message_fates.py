"""Each message has its own fate: isolation in a batch, early messages deferred, lost retries re-sent."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import pytest

from core.errors import TransientError
from core.ids import job_id_for
from core.messages import task_message
from core.models import (
    JOBS_QUEUE,
    TASKS_QUEUE,
    FailurePolicy,
    JobStatus,
    NewJob,
    ReceivedMessage,
    StagePlan,
    TaskOutcome,
    TaskSpec,
    TaskStatus,
)
from core.settlement import Disposition
from core.store import Store
from core.uow import GuardFailed, StoreBackend, UnitOfWork
from infrastructure.memory.store import InMemoryStore
from infrastructure.memory.transport import InMemoryTransport
from tests.unit.helpers import Harness, RefusingStore

pytestmark = pytest.mark.timeout(30)


def start_stage_one(h: Harness, params: dict[str, object]) -> str:
    job_id = h.engine.submit("probe_continue", params).job.job_id
    h.settle(h.engine.handle_job_messages(h.transport.receive(JOBS_QUEUE, 1, 0)))
    return job_id


def test_a_poison_outcome_does_not_sink_the_healthy_ones_committed_with_it() -> None:
    h = Harness()
    h.store = RefusingStore(h.transport, clock=h.now)
    h.engine = h.engine_with(h.probe.handlers())
    job_id = start_stage_one(h, {"n": 4, "sum_stage": False})
    batch = h.transport.receive(TASKS_QUEUE, 4, 0)
    assert len(batch) == 4
    settlements = h.engine.handle_task_messages(batch)
    assert [s.disposition for s in settlements] == [Disposition.SETTLED] * 4
    h.settle(settlements)
    h.drain()
    snapshot = h.store.snapshot(job_id, events=100)
    assert snapshot is not None and snapshot.job.status is JobStatus.COMPLETED_WITH_ERRORS
    [poisoned] = snapshot.recent_errors
    assert poisoned.task_id.endswith("-s1-t1") and poisoned.status is TaskStatus.FAILED
    assert poisoned.errors[-1]["type"] == "OutcomeNotRecorded" and "invalid byte" in poisoned.errors[-1]["message"]
    assert sorted(h.probe.calls.values()) == [1, 1, 1, 1]


def test_an_outage_while_recording_gives_messages_back_with_backoff() -> None:
    class DownStore(InMemoryStore):
        def record_outcomes(
            self, outcomes: Sequence[TaskOutcome], inline_finish: frozenset[str] = frozenset(),
            acknowledge: Sequence[ReceivedMessage] = (),
        ) -> None:
            raise TransientError("connection reset")

    h = Harness()
    h.store = DownStore(h.transport, clock=h.now)
    h.engine = h.engine_with(h.probe.handlers())
    start_stage_one(h, {"n": 2})
    settlements = h.engine.handle_task_messages(h.transport.receive(TASKS_QUEUE, 2, 0))
    assert [s.disposition for s in settlements] == [Disposition.ABANDON] * 2
    assert all(s.delay_seconds > 0 for s in settlements)


def retry_pending(h: Harness, job_id: str) -> str:
    """Run stage 1 of a one-task job whose first attempt fails transiently: the task waits for its retry."""
    h.probe.failures[(0, 1)] = lambda: TransientError("share is down")
    h.settle(h.engine.handle_task_messages(h.transport.receive(TASKS_QUEUE, 1, 0)))
    task_id = f"{job_id}-s1-t0"
    snapshot = h.store.snapshot(job_id)
    assert snapshot is not None and snapshot.next_retry is not None
    assert snapshot.next_retry.task_id == task_id and snapshot.next_retry.status is TaskStatus.RETRY_SCHEDULED
    return task_id


def test_a_retry_message_that_comes_early_is_deferred_to_the_due_time_not_dropped() -> None:
    h = Harness()
    job_id = start_stage_one(h, {"n": 1, "sum_stage": False})
    task_id = retry_pending(h, job_id)
    early = task_message(task_id, job_id, "probe_continue", 1, "probe.square", 2)
    h.transport.send([early.__class__(early.queue, "early-copy", early.body, early.properties)])
    [message] = h.transport.receive(TASKS_QUEUE, 1, 0)
    assert message.message_id == "early-copy"
    assert [s.disposition for s in h.engine.handle_task_messages([message])] == [Disposition.COMPLETE]
    snapshot = h.store.snapshot(job_id)
    assert snapshot is not None and snapshot.next_retry is not None
    assert snapshot.next_retry.status is TaskStatus.RETRY_SCHEDULED and snapshot.next_retry.attempt == 1
    h.transport.complete([message])
    h.drain()
    assert h.job(job_id).status is JobStatus.COMPLETED
    assert h.probe.calls[task_id] == 2


def test_a_stale_message_for_a_waiting_task_is_not_resent() -> None:
    h = Harness()
    job_id = start_stage_one(h, {"n": 1, "sum_stage": False})
    task_id = retry_pending(h, job_id)
    stale = task_message(task_id, job_id, "probe_continue", 1, "probe.square", 1)
    assert h.store.defer_early_tasks([(task_id, stale.body["attempt"])]) == []
    assert h.store.defer_early_tasks([(task_id, 2)]) == [task_id]


def test_the_janitor_resends_a_retry_whose_message_was_lost() -> None:
    h = Harness()
    job_id = start_stage_one(h, {"n": 1, "sum_stage": False})
    task_id = retry_pending(h, job_id)
    h.clock.advance(10)
    [lost] = h.transport.receive(TASKS_QUEUE, 1, 0)
    h.transport.complete([lost])  # the retry message vanished without being run
    assert h.janitor.run_once().resent_retries == 0  # due, but not overdue yet
    h.clock.advance(301)
    assert h.janitor.run_once().resent_retries == 1
    assert h.janitor.run_once().resent_retries == 0  # due again from now: no second copy at once
    h.drain()
    assert h.job(job_id).status is JobStatus.COMPLETED
    assert h.probe.calls[task_id] == 2
    assert "task_retry_resent" in h.event_kinds(job_id)


@pytest.mark.parametrize("holds_queue", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
def test_a_message_whose_claim_fails_is_given_back_alone(batch: int, holds_queue: bool) -> None:
    class ClaimRefusingStore(InMemoryStore):
        def claim_tasks(self, task_ids: Sequence[str], worker_id: str, lease_seconds: float | None = None) -> Any:
            if any(t.endswith("-s1-t0") for t in task_ids):
                raise RuntimeError("claim exploded")
            return super().claim_tasks(task_ids, worker_id, lease_seconds)

    h = Harness()
    h.store = ClaimRefusingStore(h.transport, clock=h.now, holds_queue=holds_queue)
    h.engine = h.engine_with(h.probe.handlers())
    start_stage_one(h, {"n": 3})
    messages = sorted(h.transport.receive(TASKS_QUEUE, 3, 0), key=lambda m: m.body["task_id"])[:batch]
    fates = {m.body["task_id"][-6:]: s.disposition
             for s in h.engine.handle_task_messages(messages) for m in [s.message]}
    # Recorded: completed by the store's commit where its database holds the queue, else left to the consumer.
    recorded = Disposition.SETTLED if holds_queue else Disposition.COMPLETE
    expected = {"-s1-t0": Disposition.ABANDON, "-s1-t1": recorded, "-s1-t2": recorded}
    assert fates == {k: v for k, v in expected.items() if k in fates} and len(fates) == batch
    settled_by_commit = sum(1 for d in fates.values() if d is Disposition.SETTLED)
    assert h.transport.pending_count(TASKS_QUEUE) == 3 - settled_by_commit


class _FirstUnitRollsBack:
    """A backend whose first unit of work rolls back unrun, as one does when its job's closing guarded update finds
    the job moved on (`GuardFailed`); every later unit runs."""

    def __init__(self, backend: StoreBackend) -> None:
        self._backend = backend
        self.holds_queue = backend.holds_queue
        self.rolled_back = False

    def transaction(self, work: Callable[[UnitOfWork], Any]) -> Any:
        if not self.rolled_back:
            self.rolled_back = True
            raise GuardFailed("the job moved on while its stage was being created")
        return self._backend.transaction(work)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def test_a_stage_start_that_rolls_back_still_settles_its_stage_message() -> None:
    transport = InMemoryTransport()
    memory = InMemoryStore(transport)
    job = NewJob(job_id_for("t", {}), "t", {}, 1, FailurePolicy.CONTINUE)
    memory.create_job(job)
    [message] = transport.receive(JOBS_QUEUE, 1, 0)
    backend = _FirstUnitRollsBack(memory.backend)
    store = Store(cast(StoreBackend, backend))

    plan = StagePlan(job.job_id, 1, "s1", [TaskSpec("work", {})], 1, 10.0)
    assert store.start_stages([plan], acknowledge=[message]) == [False]

    assert backend.rolled_back
    assert transport.pending_count(JOBS_QUEUE) == 0  # settled by a unit of its own
    assert transport.pending_count(TASKS_QUEUE) == 0  # and nothing of the rolled-back unit was written
