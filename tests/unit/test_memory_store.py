"""InMemoryStore on its own: each guarded transition of the PostgreSQL store, with the messages it sends."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from core.ids import job_id_for, task_id_for
from core.models import (
    ClaimedTask,
    ErrorClass,
    ErrorInfo,
    FailurePolicy,
    JobStatus,
    NewJob,
    OutcomeKind,
    OutgoingMessage,
    StagePlan,
    StageStatus,
    TaskOutcome,
    TaskSpec,
)
from core.ports import StateStore
from infrastructure.memory.store import InMemoryStore
from infrastructure.memory.transport import InMemoryTransport


class Recorder(InMemoryTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[OutgoingMessage] = []
        self.refuse = False

    def send(self, messages: Sequence[OutgoingMessage]) -> None:
        if self.refuse:
            raise ConnectionError("transport down")
        self.sent.extend(messages)
        super().send(messages)

    def ids(self) -> list[str]:
        return [m.message_id for m in self.sent]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2024, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def transport() -> Recorder:
    return Recorder()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(transport: Recorder, clock: Clock) -> InMemoryStore:
    store = InMemoryStore(transport, clock=clock)
    port: StateStore = store  # mypy proves the port is implemented
    return store if port is store else InMemoryStore(transport)


def new_job(stages: int = 2, policy: FailurePolicy = FailurePolicy.FAIL_FAST, tag: str = "") -> NewJob:
    params = {"tag": tag}
    return NewJob(job_id_for("t", params), "t", params, stages, policy)


def plan(job: NewJob, stage: int, n: int, max_attempts: int = 3, timeout: float = 10.0) -> StagePlan:
    return StagePlan(job.job_id, stage, f"s{stage}", [TaskSpec("work", {"i": i}) for i in range(n)],
                     max_attempts, timeout)


def started(store: InMemoryStore, n: int = 3, stages: int = 2, policy: FailurePolicy = FailurePolicy.FAIL_FAST,
            ) -> tuple[NewJob, list[ClaimedTask]]:
    job = new_job(stages, policy)
    store.create_job(job)
    assert store.start_stage(plan(job, 1, n))
    claimed = store.claim_tasks([task_id_for(job.job_id, 1, i) for i in range(n)], "w")
    assert len(claimed) == n
    return job, claimed


def done(task: ClaimedTask, **result: int) -> TaskOutcome:
    return TaskOutcome(task, OutcomeKind.COMPLETED, result=dict(result))


def failed(task: ClaimedTask, kind: OutcomeKind = OutcomeKind.FAILED, delay: float = 0.0) -> TaskOutcome:
    error = ErrorInfo("Boom", ErrorClass.PERMANENT, "boom", attempt=task.attempt)
    return TaskOutcome(task, kind, error=error, retry_delay_seconds=delay)


def kinds(store: InMemoryStore, job_id: str) -> list[str]:
    snapshot = store.snapshot(job_id, events=1000)
    assert snapshot is not None
    return [e.kind for e in snapshot.events]


def task_status(store: InMemoryStore, job_id: str, stage: int = 1) -> dict[str, int]:
    return store.stage_counts(job_id).get(stage, {})


def test_create_job_once_with_its_first_stage_message(store: InMemoryStore, transport: Recorder) -> None:
    job = new_job()
    record, created = store.create_job(job)
    again, created_again = store.create_job(job)
    assert created and not created_again and again == record
    assert (record.status, record.current_stage, record.outcome) == (JobStatus.QUEUED, 1, None)
    assert transport.ids() == [f"j:{job.job_id}:s1"]
    assert kinds(store, job.job_id) == ["submitted"]
    with pytest.raises(ValueError, match="invalid job row"):
        store.create_job(NewJob("not-a-hash", "t", {}, 1, FailurePolicy.FAIL_FAST))


def test_returned_json_is_a_copy(store: InMemoryStore) -> None:
    job = new_job(tag="a")
    record, _ = store.create_job(job)
    record.parameters["tag"] = "mutated"
    job.parameters["tag"] = "mutated too"
    fetched = store.get_job(job.job_id)
    assert fetched is not None and fetched.parameters == {"tag": "a"}


def test_start_stage_is_guarded(store: InMemoryStore, transport: Recorder) -> None:
    job = new_job()
    assert not store.start_stage(plan(job, 1, 2))
    store.create_job(job)
    assert not store.start_stage(plan(job, 2, 2))
    assert store.start_stage(plan(job, 1, 2))
    assert not store.start_stage(plan(job, 1, 5))
    assert task_status(store, job.job_id) == {"queued": 2}
    assert transport.ids()[1:] == [f"t:{job.job_id}-s1-t{i}:a1" for i in range(2)]
    record = store.get_job(job.job_id)
    assert record is not None and record.status is JobStatus.PROCESSING


def test_zero_task_stages_advance_then_finalize(store: InMemoryStore, transport: Recorder) -> None:
    job = new_job(stages=2)
    store.create_job(job)
    assert store.start_stage(plan(job, 1, 0))
    assert transport.ids()[-1] == f"j:{job.job_id}:s2"
    assert store.start_stage(plan(job, 2, 0))
    assert transport.ids()[-1] == f"j:{job.job_id}:final"
    record = store.get_job(job.job_id)
    assert record is not None
    assert (record.status, record.outcome, record.current_stage) == (JobStatus.FINALIZING, JobStatus.COMPLETED, 2)
    assert kinds(store, job.job_id) == ["submitted", "stage_started", "stage_completed", "stage_started",
                                        "stage_completed", "finalizing"]
    assert store.stage_counts(job.job_id) == {}


def test_claim_rules(store: InMemoryStore, clock: Clock) -> None:
    job, (a, b, c) = started(store)
    assert store.claim_tasks([a.task_id], "other") == []
    assert a.attempt == 1 and a.failure_policy is FailurePolicy.FAIL_FAST and a.parameters == {"i": 0}
    store.record_outcomes([failed(b, OutcomeKind.RETRY, delay=5.0)])
    assert store.claim_tasks([b.task_id], "w") == []
    clock.advance(5)
    (b2,) = store.claim_tasks([b.task_id, b.task_id], "w")
    assert b2.attempt == 2
    clock.advance(5)
    assert store.claim_tasks([a.task_id], "w") == []
    clock.advance(0.001)
    (a2,) = store.claim_tasks([a.task_id, "no-such-task"], "w2")
    assert a2.attempt == 2
    store.cancel_job(job.job_id, "stop")
    clock.advance(60)
    assert store.claim_tasks([c.task_id], "w") == []


def test_outcomes_are_guarded_on_status_and_attempt(store: InMemoryStore, clock: Clock) -> None:
    job, (a, b, _) = started(store)
    clock.advance(11)
    (a2,) = store.claim_tasks([a.task_id], "w2")
    store.record_outcomes([done(a, v=1)])
    assert task_status(store, job.job_id) == {"running": 3}
    store.record_outcomes([done(a2, v=2), done(a2, v=3), done(b, v=4)])
    store.record_outcomes([done(b, v=5)])
    assert [r.result for r in store.stage_results(job.job_id, 1)] == [{"v": 2}, {"v": 4}]
    snapshot = store.snapshot(job.job_id)
    assert snapshot is not None and snapshot.stages[0].remaining == 1


def test_last_completion_advances_once(store: InMemoryStore, transport: Recorder) -> None:
    job, claimed = started(store)
    store.record_outcomes([done(t, v=t.index) for t in claimed[:2]])
    assert transport.ids()[-1].endswith(":a1")
    store.record_outcomes([done(claimed[2], v=2)])
    store.record_outcomes([done(t, v=9) for t in claimed])
    assert transport.ids()[-1] == f"j:{job.job_id}:s2"
    assert kinds(store, job.job_id).count("stage_completed") == 1
    record = store.get_job(job.job_id)
    assert record is not None and (record.current_stage, record.status) == (2, JobStatus.PROCESSING)


def test_retry_sends_the_next_attempt_later(store: InMemoryStore, transport: Recorder) -> None:
    job, (a, *_) = started(store)
    store.record_outcomes([failed(a, OutcomeKind.RETRY, delay=2.5)])
    message = transport.sent[-1]
    assert (message.message_id, message.delay_seconds, message.body["attempt"]) == (f"t:{a.task_id}:a2", 2.5, 2)
    snapshot = store.snapshot(job.job_id)
    assert snapshot is not None and snapshot.next_retry is not None
    assert snapshot.next_retry.task_id == a.task_id and len(snapshot.next_retry.errors) == 1
    assert snapshot.events[-1].detail["retry_in_s"] == 2.5


def test_fail_fast_finalizes_and_cancels_unstarted(store: InMemoryStore, transport: Recorder) -> None:
    job, (a, b, _) = started(store)
    store.record_outcomes([failed(b, OutcomeKind.RETRY, delay=9)])
    store.record_outcomes([failed(a)])
    record = store.get_job(job.job_id)
    assert record is not None and (record.status, record.outcome) == (JobStatus.FINALIZING, JobStatus.FAILED)
    assert record.error is not None and record.error["task_id"] == a.task_id
    assert task_status(store, job.job_id) == {"failed": 1, "cancelled": 1, "running": 1}
    assert transport.ids()[-1] == f"j:{job.job_id}:final"
    snapshot = store.snapshot(job.job_id)
    assert snapshot is not None
    assert snapshot.events[-1].kind == "job_failed" and snapshot.events[-1].detail["cancelled_tasks"] == 1
    assert not store.fail_job(job.job_id, ErrorInfo("X", ErrorClass.UNKNOWN, "again"))
    assert store.finish_job(job.job_id, JobStatus.FAILED, {"r": 1}, None)
    assert not store.finish_job(job.job_id, JobStatus.FAILED, {"r": 2}, None)
    assert task_status(store, job.job_id) == {"failed": 1, "cancelled": 2}
    final = store.snapshot(job.job_id)
    assert final is not None and final.job.result == {"r": 1}
    assert final.stages[0].status is StageStatus.CANCELLED and final.job.finished_at is not None


def test_continue_policy_counts_failures(store: InMemoryStore) -> None:
    job, (a, b, c) = started(store, stages=1, policy=FailurePolicy.CONTINUE)
    store.record_outcomes([failed(a), done(b), done(c)])
    record = store.get_job(job.job_id)
    assert record is not None
    assert (record.status, record.outcome) == (JobStatus.FINALIZING, JobStatus.COMPLETED_WITH_ERRORS)
    snapshot = store.snapshot(job.job_id)
    assert snapshot is not None and (snapshot.stages[0].failed, snapshot.stages[0].remaining) == (1, 0)


def test_finish_job_merges_a_finalize_error(store: InMemoryStore) -> None:
    job, (a, *_) = started(store)
    store.record_outcomes([failed(a)])
    store.finish_job(job.job_id, JobStatus.FAILED, None, ErrorInfo("E", ErrorClass.UNKNOWN, "in finalize"))
    record = store.get_job(job.job_id)
    assert record is not None and record.error is not None
    assert record.error["type"] == "Boom" and record.error["finalize_error"]["message"] == "in finalize"


def test_cancel_and_finish_from_queued(store: InMemoryStore) -> None:
    job = new_job()
    store.create_job(job)
    assert store.cancel_job(job.job_id, "no longer needed")
    assert kinds(store, job.job_id)[-1] == "job_cancelled"
    assert not store.cancel_job(job.job_id, "twice")
    assert store.finish_job(job.job_id, JobStatus.CANCELLED, None, None)
    record = store.get_job(job.job_id)
    assert record is not None and (record.status, record.outcome) == (JobStatus.CANCELLED, JobStatus.CANCELLED)
    other = new_job(tag="b")
    store.create_job(other)
    assert not store.finish_job(other.job_id, JobStatus.COMPLETED, None, None)
    assert store.finish_job(other.job_id, JobStatus.CANCELLED, None, None)


def test_requeue_expired_leases(store: InMemoryStore, transport: Recorder, clock: Clock) -> None:
    job, (a, b, c) = started(store)
    store.record_outcomes([done(c)])
    clock.advance(10 + 4)
    assert store.requeue_expired_leases(grace_seconds=5) == 0
    clock.advance(2)
    assert store.requeue_expired_leases(grace_seconds=5, limit=1) == 1
    assert store.requeue_expired_leases(grace_seconds=5) == 1
    assert task_status(store, job.job_id) == {"queued": 2, "completed": 1}
    assert transport.ids()[-2:] == [f"t:{a.task_id}:a2", f"t:{b.task_id}:a2"]
    snapshot = store.snapshot(job.job_id)
    assert snapshot is not None
    (error,) = snapshot.recent_errors[0].errors
    assert (error["type"], error["class"], error["attempt"], error["where"]) == ("LeaseExpired", "transient", 1, "w")
    assert [e.kind for e in snapshot.events[-2:]] == ["task_lease_expired"] * 2
    (again,) = store.claim_tasks([a.task_id], "w2")
    assert again.attempt == 2


def test_no_requeue_once_the_job_is_over(store: InMemoryStore, clock: Clock) -> None:
    job, _ = started(store)
    store.cancel_job(job.job_id, "stop")
    clock.advance(100)
    assert store.requeue_expired_leases(grace_seconds=0) == 0


def test_stuck_jobs(store: InMemoryStore, clock: Clock) -> None:
    job, (a, *_) = started(store)
    idle = new_job(tag="idle")
    store.create_job(idle)
    clock.advance(50)
    store.record_outcomes([done(a)])
    clock.advance(20)
    assert [j.job_id for j in store.stuck_jobs(60)] == [idle.job_id]
    clock.advance(50)
    assert {j.job_id for j in store.stuck_jobs(60)} == {job.job_id, idle.job_id}
    assert len(store.stuck_jobs(60, limit=1)) == 1


def test_snapshot_views(store: InMemoryStore, clock: Clock) -> None:
    job, (a, b, c) = started(store)
    clock.advance(1)
    assert store.claim_tasks([], "w") == []
    store.record_outcomes([failed(b, OutcomeKind.RETRY, delay=3)])
    snapshot = store.snapshot(job.job_id, events=2)
    assert snapshot is not None
    assert [e.kind for e in snapshot.events] == ["stage_started", "task_retry_scheduled"]
    assert snapshot.oldest_running is not None and snapshot.oldest_running.task_id in (a.task_id, c.task_id)
    assert snapshot.stages[0].counts == {"running": 2, "retry_scheduled": 1}
    assert store.snapshot("f" * 64) is None
    assert store.stage_results(job.job_id, 7) == []


def test_add_event_for_a_missing_job_does_nothing(store: InMemoryStore) -> None:
    job = new_job()
    store.create_job(job)
    store.add_event(job.job_id, "dead_lettered", {"reason": "X"}, stage=1, task_id="t")
    assert kinds(store, job.job_id)[-1] == "dead_lettered"
    store.add_event("e" * 64, "dead_lettered", {})
    assert store.get_job("e" * 64) is None and store.snapshot("e" * 64) is None


def test_refused_send_rolls_the_transition_back(store: InMemoryStore, transport: Recorder) -> None:
    job, claimed = started(store)
    transport.refuse = True
    with pytest.raises(ConnectionError):
        store.record_outcomes([done(t) for t in claimed])
    transport.refuse = False
    assert task_status(store, job.job_id) == {"running": 3}
    assert kinds(store, job.job_id) == ["submitted", "stage_started"]
    store.record_outcomes([done(t) for t in claimed])
    assert kinds(store, job.job_id)[-1] == "stage_completed"


def test_concurrent_completions_advance_exactly_once(store: InMemoryStore, transport: Recorder) -> None:
    job, claimed = started(store, n=200)
    barrier = threading.Barrier(8)

    def finish(part: list[ClaimedTask]) -> None:
        barrier.wait()
        for task in part:
            store.record_outcomes([done(task, v=task.index), done(task, v=-1)])

    threads = [threading.Thread(target=finish, args=(claimed[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert transport.ids().count(f"j:{job.job_id}:s2") == 1
    assert kinds(store, job.job_id).count("stage_completed") == 1
    assert [r.result for r in store.stage_results(job.job_id, 1)] == [{"v": i} for i in range(200)]
