"""Store contract, fan-in: a batch of completions is one statement, and the stage it takes to zero is closed after
it - by the worker, or by the janitor if the worker stopped in between - exactly once, on every store adapter."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import pytest

from core.models import FailurePolicy, JobStatus, StageStatus
from core.outcomes import WIDE_STAGE_TASKS, close_stage, complete_counted, counted_alone
from core.uow import UnitOfWork
from tests.contract.store_harness import Harness, at_once, done, failed, finish

R = TypeVar("R")


def test_a_completion_batch_reports_each_stage_counter(h: Harness) -> None:
    job, claimed = h.started(n=3)
    counted = h.store.backend.statement(lambda uow: complete_counted(uow, [done(t) for t in claimed[:2]]))
    assert sorted(c.task_id for c in counted.changes) == sorted(t.task_id for t in claimed[:2])
    assert counted.remaining == {(job.job_id, 1): 1}
    again = h.store.backend.statement(lambda uow: complete_counted(uow, [done(claimed[0])]))
    assert (again.changes, again.remaining) == ([], {})  # guarded: counted once


def test_a_stage_left_at_zero_is_closed_by_the_janitor_once(h: Harness) -> None:
    job, claimed = h.started(n=2)
    # The worker's statement ran, then the worker stopped before closing the stage.
    h.store.backend.statement(lambda uow: complete_counted(uow, [done(t) for t in claimed]))
    record = h.store.get_job(job.job_id)
    assert record is not None and record.current_stage == 1
    snapshot = h.store.snapshot(job.job_id)
    assert snapshot is not None and (snapshot.stages[0].status, snapshot.stages[0].remaining) == (
        StageStatus.PROCESSING, 0)

    assert h.store.close_counted_stages() == 1
    assert h.ids()[-1] == f"j:{job.job_id}:s2"
    record = h.store.get_job(job.job_id)
    assert record is not None and (record.current_stage, record.status) == (2, JobStatus.PROCESSING)
    assert h.store.close_counted_stages() == 0
    assert h.kinds(job.job_id).count("stage_completed") == 1


def test_closing_a_stage_twice_advances_the_job_once(h: Harness) -> None:
    job, claimed = h.started(n=2, stages=1)
    h.store.backend.statement(lambda uow: complete_counted(uow, [done(t) for t in claimed]))
    barrier = threading.Barrier(2)

    def close() -> None:  # the worker and the janitor at the same moment
        barrier.wait()
        h.store.backend.transaction(lambda uow: close_stage(uow, job.job_id, 1))

    at_once(close, close)
    assert h.ids().count(f"j:{job.job_id}:final") == 1
    assert h.kinds(job.job_id).count("stage_completed") == 1
    assert h.kinds(job.job_id).count("finalizing") == 1
    record = h.store.get_job(job.job_id)
    assert record is not None and record.status is JobStatus.FINALIZING


def test_the_worker_closes_the_stage_its_completions_took_to_zero(h: Harness) -> None:
    job, claimed = h.started(n=2, stages=1)
    h.store.record_outcomes([done(t) for t in claimed])
    assert h.store.close_counted_stages() == 0
    assert h.kinds(job.job_id).count("stage_completed") == 1
    record = h.store.get_job(job.job_id)
    assert record is not None and record.status is JobStatus.FINALIZING


def test_a_claim_knows_its_stage_width_and_a_wide_stage_closes_after_its_last_batch(h: Harness) -> None:
    job, claimed = h.started(n=WIDE_STAGE_TASKS)
    assert {t.stage_tasks for t in claimed} == {WIDE_STAGE_TASKS}
    _, narrow = h.started(n=2, tag="narrow")
    assert counted_alone([done(t) for t in claimed]) and not counted_alone([done(t) for t in narrow])
    for i in range(0, WIDE_STAGE_TASKS, 16):
        h.store.record_outcomes([done(t) for t in claimed[i:i + 16]])
    assert h.store.close_counted_stages() == 0
    assert h.ids().count(f"j:{job.job_id}:s2") == 1
    record = h.store.get_job(job.job_id)
    assert record is not None and record.current_stage == 2


def test_a_close_that_comes_after_a_retry_reopened_the_stage_changes_nothing(h: Harness) -> None:
    job, (a, b, c) = h.started(n=3, policy=FailurePolicy.CONTINUE)
    h.store.record_outcomes([failed(a)])
    counted = h.store.backend.statement(lambda uow: complete_counted(uow, [done(b), done(c)]))
    assert counted.remaining == {(job.job_id, 1): 0}  # the worker stalls here, before its close
    assert h.store.cancel_job(job.job_id, "operator")
    finish(h, job.job_id, JobStatus.CANCELLED)
    assert h.store.retry(job.job_id, 1, more_attempts=2).tasks_requeued == 1  # stage 1 open again, counter 1

    assert not h.store.backend.transaction(lambda uow: close_stage(uow, job.job_id, 1))
    snapshot, record = h.store.snapshot(job.job_id), h.store.get_job(job.job_id)
    assert snapshot is not None and (snapshot.stages[0].status, snapshot.stages[0].remaining) == (
        StageStatus.PROCESSING, 1)
    assert record is not None and record.current_stage == 1


def test_the_janitor_finishes_inline_the_job_types_that_keep_the_default_finalize(h: Harness) -> None:
    job, claimed = h.started(n=2, stages=1)
    h.store.backend.statement(lambda uow: complete_counted(uow, [done(t) for t in claimed]))
    assert h.store.close_counted_stages(inline_finish=frozenset({job.job_type})) == 1
    record = h.store.get_job(job.job_id)
    assert record is not None and record.status is JobStatus.COMPLETED
    assert f"j:{job.job_id}:final" not in h.ids()


def test_a_stage_the_janitor_fails_to_close_does_not_stop_the_others(h: Harness) -> None:
    (bad, bad_claimed), (good, good_claimed) = h.started(n=2, tag="bad"), h.started(n=2, tag="good")
    h.store.backend.statement(lambda uow: complete_counted(uow, [done(t) for t in bad_claimed + good_claimed]))
    backend = h.store.backend
    real = backend.transaction

    def failing_for_bad(work: Callable[[UnitOfWork], R]) -> R:
        if isinstance(work, partial) and work.keywords.get("job_id") == bad.job_id:
            raise RuntimeError("the database refused this one")
        return real(work)

    backend.transaction = failing_for_bad  # type: ignore[method-assign]
    try:
        assert h.store.close_counted_stages() == 1
    finally:
        backend.transaction = real  # type: ignore[method-assign]
    record = h.store.get_job(good.job_id)
    assert record is not None and record.current_stage == 2
    assert h.store.close_counted_stages() == 1  # the one that failed, on the next pass


def test_a_single_statement_unit_refuses_a_second_statement_and_buffered_writes(h: Harness) -> None:
    job, _ = h.started(n=1)

    def two(uow: UnitOfWork) -> None:
        uow.read_jobs([job.job_id])
        uow.read_jobs([job.job_id])

    with pytest.raises(RuntimeError, match="second statement"):
        h.store.backend.statement(two)
    with pytest.raises(RuntimeError, match="events or messages"):
        h.store.backend.statement(lambda uow: uow.event(job.job_id, "never", {}))
    assert "never" not in h.kinds(job.job_id)


def test_one_batch_closes_several_jobs_stages_each_its_own_way(h: Harness) -> None:
    """One batch takes three jobs' stages to zero: a fail-fast job's last task fails (its stage completes, the job
    fails), a job's first stage completes (it advances), a job's only stage completes (it goes to finalizing)."""
    failing, failing_tasks = h.started(n=2, tag="failing")
    advancing, advancing_tasks = h.started(n=2, tag="advancing", policy=FailurePolicy.CONTINUE)
    ending, ending_tasks = h.started(n=2, tag="ending", stages=1)
    h.store.record_outcomes([done(failing_tasks[0]), done(advancing_tasks[0]), done(ending_tasks[0])])
    h.store.record_outcomes([failed(failing_tasks[1]), done(advancing_tasks[1]), done(ending_tasks[1])])

    states = {job.job_id: h.store.get_job(job.job_id) for job in (failing, advancing, ending)}
    assert all(states.values())
    summary = {job_id: (j.status, j.outcome, j.current_stage) for job_id, j in states.items() if j}
    assert summary == {
        failing.job_id: (JobStatus.FINALIZING, JobStatus.FAILED, 1),
        advancing.job_id: (JobStatus.PROCESSING, None, 2),
        ending.job_id: (JobStatus.FINALIZING, JobStatus.COMPLETED, 1),
    }
    for job in (failing, advancing, ending):
        assert h.kinds(job.job_id).count("stage_completed") == 1, job.job_id
    assert f"j:{advancing.job_id}:s2" in h.ids()
    assert {f"j:{failing.job_id}:final", f"j:{ending.job_id}:final"} <= set(h.ids())
