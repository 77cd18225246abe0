"""Store contract, part 3: a completed round of a job type that keeps the default finalize ends in the transaction
that completes its last stage; every other ending still goes through the finalize message, on every adapter."""

from __future__ import annotations

from typing import ClassVar

from core.ids import task_id_for
from core.jobs import FinalizeContext, JobDefinition, JobParameters, Stage
from core.models import JSON, FailurePolicy, JobStatus
from core.rounds import FinalizeDecision
from core.store import cancel_error
from tests.contract.store_harness import LEASE, Harness, done, failed, plan

INLINE = frozenset({"t"})
"""The harness's job type `t`, declared as one that keeps the default finalize."""


class _Default(JobDefinition):
    job_type = "t"
    stages: ClassVar = (Stage("s1", "work"), Stage("s2", "work"))
    Parameters = JobParameters


def default_finalize(h: Harness, job_id: str) -> JSON:
    """What `JobDefinition.finalize` returns over the store's `stage_counts`, as a finalize message would run it."""
    job = h.store.get_job(job_id)
    assert job is not None and job.outcome is not None
    context = FinalizeContext(job_id, job.job_type, job.parameters, job.outcome, {}, h.store.stage_counts(job_id))
    return _Default().finalize(context)


def run_two_stages(h: Harness, tag: str, inline: frozenset[str]) -> str:
    job, first = h.started(n=3, stages=2, tag=tag)
    h.store.record_outcomes([done(t, v=t.index) for t in first], inline)
    assert h.store.start_stage(plan(job, 2, 2), inline)
    second = h.store.claim_tasks([task_id_for(job.job_id, 2, i) for i in range(2)], "w")
    h.store.record_outcomes([done(t) for t in second[:1]], inline)
    record = h.store.get_job(job.job_id)
    assert record is not None and record.status is JobStatus.PROCESSING
    h.store.record_outcomes([done(t) for t in second[1:]], inline)
    return job.job_id


def test_a_default_finalize_job_completes_inline_with_the_default_result(h: Harness) -> None:
    job_id = run_two_stages(h, "inline", INLINE)
    record = h.store.get_job(job_id)
    assert record is not None and record.finished_at is not None
    assert (record.status, record.outcome, record.error) == (JobStatus.COMPLETED, JobStatus.COMPLETED, None)
    assert record.result == {"outcome": "completed", "stages": {"1": {"completed": 3}, "2": {"completed": 2}}}
    assert not any(i.startswith(f"j:{job_id}:final") for i in h.ids()), "no finalize message"
    kinds = h.kinds(job_id)
    assert kinds[-3:] == ["stage_completed", "finalizing", "job_finished"] and kinds.count("job_finished") == 1
    snapshot = h.store.snapshot(job_id)
    assert snapshot is not None
    assert snapshot.events[-1].detail == {"status": "completed", "round": 0, "finalize": "inline"}
    # The same job type through the finalize message gives exactly the same result.
    other = run_two_stages(h, "message", frozenset())
    assert h.ids()[-1] == f"j:{other}:final"
    start = h.store.begin_finalize(other, "f1", 30.0)
    assert start.decision is FinalizeDecision.RUN and start.job is not None
    assert (start.job.job_id, start.job.status, start.job.outcome) == (other, JobStatus.FINALIZING,
                                                                      JobStatus.COMPLETED)
    assert default_finalize(h, other) == record.result
    # It ended exactly once: a stray finalize message or a late outcome changes nothing.
    assert h.store.begin_finalize(job_id, "f1", 30.0).decision is FinalizeDecision.IGNORED
    assert not h.store.finish_job(job_id, "f1", JobStatus.COMPLETED, {"again": True}, None)
    assert h.store.get_job(job_id) == record


def test_a_zero_task_round_completes_inline_when_its_stage_is_created(h: Harness) -> None:
    job = h.new_job(stages=1, tag="empty")
    assert h.store.start_stage(plan(job, 1, 0), INLINE)
    record = h.store.get_job(job.job_id)
    assert record is not None and (record.status, record.result) == (
        JobStatus.COMPLETED, {"outcome": "completed", "stages": {}})
    assert h.kinds(job.job_id)[-2:] == ["finalizing", "job_finished"]


def test_a_rerun_round_completes_inline_again(h: Harness) -> None:
    job, claimed = h.started(n=2, stages=1, tag="rerun")
    h.store.record_outcomes([done(t) for t in claimed], INLINE)
    assert h.store.rerun(job.job_id).accepted
    assert h.store.start_stage(plan(job, 1, 1), INLINE)
    (again,) = h.store.claim_tasks([task_id_for(job.job_id, 1, 0)], "w")
    h.store.record_outcomes([done(again)], INLINE)
    record = h.store.get_job(job.job_id)
    assert record is not None and (record.status, record.round) == (JobStatus.COMPLETED, 1)
    assert record.result == {"outcome": "completed", "stages": {"1": {"completed": 1}}}
    assert h.kinds(job.job_id).count("job_finished") == 2


def test_a_custom_finalize_job_still_gets_its_finalize_message(h: Harness) -> None:
    job, claimed = h.started(n=2, stages=1, tag="custom")
    h.store.record_outcomes([done(t) for t in claimed], frozenset({"another_type"}))
    record = h.store.get_job(job.job_id)
    assert record is not None and (record.status, record.outcome) == (JobStatus.FINALIZING, JobStatus.COMPLETED)
    assert h.ids()[-1] == f"j:{job.job_id}:final"
    start = h.store.begin_finalize(job.job_id, "f1", 30.0)
    assert start.decision is FinalizeDecision.RUN and start.job is not None and start.job.status is JobStatus.FINALIZING
    assert h.store.finish_job(job.job_id, "f1", JobStatus.COMPLETED, {"custom": 1}, None)
    assert h.store.begin_finalize(job.job_id, "f2", 30.0).decision is FinalizeDecision.IGNORED
    record = h.store.get_job(job.job_id)
    assert record is not None and (record.status, record.result) == (JobStatus.COMPLETED, {"custom": 1})


def _ends_through_the_finalize_message(h: Harness, job_id: str, outcome: JobStatus) -> None:
    record = h.store.get_job(job_id)
    assert record is not None and (record.status, record.outcome) == (JobStatus.FINALIZING, outcome)
    assert f"j:{job_id}:final" in h.ids()
    h.advance(LEASE + 1)
    assert h.store.begin_finalize(job_id, "f1", 30.0).decision is FinalizeDecision.RUN


def test_completed_with_errors_still_goes_through_the_finalize_message(h: Harness) -> None:
    job, (a, b) = h.started(n=2, stages=1, policy=FailurePolicy.CONTINUE, tag="errors")
    h.store.record_outcomes([done(a), failed(b)], INLINE)
    _ends_through_the_finalize_message(h, job.job_id, JobStatus.COMPLETED_WITH_ERRORS)


def test_a_failed_job_still_goes_through_the_finalize_message(h: Harness) -> None:
    job, (a, b) = h.started(n=2, stages=1, tag="failed")
    h.store.record_outcomes([done(a), failed(b)], INLINE)
    _ends_through_the_finalize_message(h, job.job_id, JobStatus.FAILED)


def test_a_cancelled_job_still_goes_through_the_finalize_message(h: Harness) -> None:
    job, (a, b) = h.started(n=2, stages=1, tag="cancelled")
    assert h.store.cancel(job.job_id, cancel_error("stop")).accepted
    h.store.record_outcomes([done(a), done(b)], INLINE)  # every task completed, but the round was cancelled
    _ends_through_the_finalize_message(h, job.job_id, JobStatus.CANCELLED)
