"""Store contract, part 2: planner failures, the finalize fence, finish, cancel, retry and rerun rounds, on every
store adapter; and that none of it reads the event log."""

from __future__ import annotations

from dataclasses import replace

from core.ids import task_id_for
from core.models import ErrorClass, ErrorInfo, JobStatus, OutcomeKind, StageStatus
from core.retry import RetryPolicy
from core.rounds import FinalizeDecision, Refusal
from core.states import job_sources
from tests.contract.store_harness import LEASE, Harness, done, failed, finish, plan

POLICY = RetryPolicy(initial_interval=2.0, backoff_coefficient=2.0, maximum_interval=10.0, maximum_attempts=3,
                     jitter=0.0)
TRANSIENT = ErrorInfo("ConnectionError", ErrorClass.TRANSIENT, "share is down")


# -- planner failures ------------------------------------------------------------------------------------------
def test_a_transient_planner_error_is_retried_by_a_scheduled_stage_message(h: Harness) -> None:
    job = h.new_job()
    assert h.store.planning_failed(job.job_id, 1, 0, TRANSIENT, POLICY) == 2.0
    message = h.sent()[-1]
    assert (message.message_id, message.delay_seconds, message.body["attempt"]) == (
        f"j:{job.job_id}:s1:p1", 2.0, 1)
    record = h.store.get_job(job.job_id)
    assert record is not None and (record.status, record.plan_attempts) == (JobStatus.QUEUED, 1)
    assert h.store.planning_failed(job.job_id, 1, 0, TRANSIENT, POLICY) is None  # a stale message: ignored
    assert h.store.planning_failed(job.job_id, 1, 1, TRANSIENT, POLICY) == 4.0
    assert h.store.planning_failed(job.job_id, 1, 2, TRANSIENT, POLICY) is None  # attempts used up
    record = h.store.get_job(job.job_id)
    assert record is not None and (record.status, record.outcome) == (JobStatus.FINALIZING, JobStatus.FAILED)
    assert record.error is not None and record.error["type"] == "ConnectionError"
    assert h.ids()[-1] == f"j:{job.job_id}:final"
    assert h.kinds(job.job_id).count("stage_planning_retry") == 2


def test_a_permanent_planner_error_fails_the_job_at_once(h: Harness) -> None:
    job, claimed = h.started(n=1)
    h.store.record_outcomes([done(claimed[0])])
    bad = ErrorInfo("ValueError", ErrorClass.PERMANENT, "bad plan")
    assert h.store.planning_failed(job.job_id, 2, 0, bad, POLICY) is None
    record = h.store.get_job(job.job_id)
    assert record is not None and (record.status, record.outcome) == (JobStatus.FINALIZING, JobStatus.FAILED)
    assert h.store.planning_failed(job.job_id, 2, 0, TRANSIENT, POLICY) is None  # the job has moved on


def test_planner_attempts_start_again_on_the_next_stage(h: Harness) -> None:
    job = h.new_job()
    assert h.store.planning_failed(job.job_id, 1, 0, TRANSIENT, POLICY) is not None
    assert h.store.start_stage(plan(job, 1, 1))
    (task,) = h.store.claim_tasks([task_id_for(job.job_id, 1, 0)], "w")
    h.store.record_outcomes([done(task)])
    record = h.store.get_job(job.job_id)
    assert record is not None and (record.current_stage, record.plan_attempts) == (2, 0)


# -- the finalize fence ----------------------------------------------------------------------------------------
def test_finalize_is_fenced_by_a_claim_that_expires_and_is_renewed(h: Harness) -> None:
    job = h.new_job(stages=1)
    assert h.store.start_stage(plan(job, 1, 0))
    assert h.store.begin_finalize(job.job_id, "f1", 30.0).decision is FinalizeDecision.RUN
    second = h.store.begin_finalize(job.job_id, "f2", 30.0)
    assert second.decision is FinalizeDecision.DEFERRED and 29 <= second.delay_seconds <= 30
    h.advance(20)
    assert h.store.renew_finalize_claim(job.job_id, "f1", 30.0)
    h.advance(20)
    assert h.store.begin_finalize(job.job_id, "f2", 30.0).decision is FinalizeDecision.DEFERRED
    h.advance(11)
    assert h.store.begin_finalize(job.job_id, "f2", 30.0).decision is FinalizeDecision.RUN  # expired: taken over
    assert not h.store.renew_finalize_claim(job.job_id, "f1", 30.0)
    assert not h.store.finish_job(job.job_id, "f1", JobStatus.COMPLETED, {"by": "f1"}, None)
    assert h.store.finish_job(job.job_id, "f2", JobStatus.COMPLETED, {"by": "f2"}, None)
    assert not h.store.finish_job(job.job_id, "f2", JobStatus.COMPLETED, {"by": "again"}, None)
    record = h.store.get_job(job.job_id)
    assert record is not None and (record.status, record.result) == (JobStatus.COMPLETED, {"by": "f2"})
    assert h.store.begin_finalize(job.job_id, "f3", 30.0).decision is FinalizeDecision.IGNORED
    deferred = [m.message_id for m in h.sent() if ":final:d" in m.message_id]
    assert deferred == [f"j:{job.job_id}:final:d1", f"j:{job.job_id}:final:d2"]


def test_finalize_waits_for_live_leases_and_deferral_ids_never_come_from_the_event_log(h: Harness) -> None:
    job, (a, b, c) = h.started(stages=1)
    h.store.record_outcomes([failed(a)])
    first = h.store.begin_finalize(job.job_id, "f1", 30.0)
    assert first.decision is FinalizeDecision.DEFERRED and first.delay_seconds == 5.0
    h.prune_events()
    assert h.store.begin_finalize(job.job_id, "f1", 30.0).decision is FinalizeDecision.DEFERRED
    deferred = [m.message_id for m in h.sent() if ":final:d" in m.message_id]
    assert deferred == [f"j:{job.job_id}:final:d1", f"j:{job.job_id}:final:d2"]
    h.store.record_outcomes([done(b), done(c)])
    assert h.store.begin_finalize(job.job_id, "f1", 30.0).decision is FinalizeDecision.RUN


def test_finish_merges_a_finalize_error_and_cancels_what_is_left(h: Harness) -> None:
    job, (a, b, _) = h.started()
    h.store.record_outcomes([failed(b, OutcomeKind.RETRY, delay=9)])
    h.store.record_outcomes([failed(a)])
    h.advance(LEASE + 1)
    assert h.store.begin_finalize(job.job_id, "f1", 30.0).decision is FinalizeDecision.RUN
    error = ErrorInfo("E", ErrorClass.UNKNOWN, "in finalize").to_json()
    assert h.store.finish_job(job.job_id, "f1", JobStatus.FAILED, None, error)
    record = h.store.get_job(job.job_id)
    assert record is not None and record.error is not None and record.finished_at is not None
    assert record.error["type"] == "Boom" and record.error["finalize_error"]["message"] == "in finalize"
    assert h.counts(job.job_id) == {"failed": 1, "cancelled": 2}
    snapshot = h.store.snapshot(job.job_id)
    assert snapshot is not None and snapshot.stages[0].status is StageStatus.CANCELLED


# -- cancel ----------------------------------------------------------------------------------------------------
def test_cancel_releases_unstarted_tasks_at_once_and_late_outcomes_change_nothing(h: Harness) -> None:
    job, (a, b, c) = h.started(n=4, claim=3)
    result = h.store.cancel(job.job_id, {"type": "Cancelled", "class": "permanent", "message": "stop"})
    assert result.accepted and result.status is JobStatus.FINALIZING
    assert h.counts(job.job_id) == {"running": 3, "cancelled": 1}
    assert h.store.live_jobs([job.job_id]) == set()
    h.store.record_outcomes([done(a, v=1), failed(b, OutcomeKind.RETRY, delay=1)])
    assert h.counts(job.job_id) == {"completed": 1, "cancelled": 2, "running": 1}
    assert not any(":a2" in i for i in h.ids()), "no retry is scheduled for a cancelled job"
    refused = h.store.cancel(job.job_id, {"message": "again"})
    assert not refused.accepted and refused.refusal is Refusal.NOT_ALLOWED
    h.advance(LEASE + 1)
    finish(h, job.job_id, JobStatus.CANCELLED)
    before = h.store.get_job(job.job_id)
    h.store.record_outcomes([done(c, v=3)])
    assert h.store.get_job(job.job_id) == before
    assert h.counts(job.job_id) == {"completed": 1, "cancelled": 3}
    assert h.kinds(job.job_id)[-1] == "late_outcome"


def test_cancel_of_a_queued_job_then_finish(h: Harness) -> None:
    job = h.new_job()
    assert h.store.cancel_job(job.job_id, "no longer needed")
    assert h.kinds(job.job_id)[-1] == "job_cancelled"
    assert not h.store.cancel_job(job.job_id, "twice")
    finish(h, job.job_id, JobStatus.CANCELLED)
    record = h.store.get_job(job.job_id)
    assert record is not None and (record.status, record.outcome) == (JobStatus.CANCELLED, JobStatus.CANCELLED)
    assert h.store.cancel("a" * 64, {}).refusal is Refusal.NOT_FOUND


# -- retry and rerun rounds ------------------------------------------------------------------------------------
def test_retry_reruns_the_failed_and_cancelled_tasks_in_a_new_round(h: Harness) -> None:
    job, (a, b, c) = h.started(n=4, claim=3)
    h.store.record_outcomes([done(a), failed(b)])
    h.advance(LEASE + 1)
    finish(h, job.job_id, JobStatus.FAILED)
    assert h.counts(job.job_id) == {"completed": 1, "failed": 1, "cancelled": 2}
    result = h.store.retry(job.job_id, 1, more_attempts=3)
    assert result.accepted and (result.round, result.tasks_requeued, result.stage_resent) == (1, 3, False)
    record = h.store.get_job(job.job_id)
    assert record is not None and (record.status, record.round, record.error) == (JobStatus.PROCESSING, 1, None)
    requeued = sorted(i for i in h.ids() if i.endswith(":x1"))
    assert requeued == sorted([f"t:{b.task_id}:a2:x1", f"t:{c.task_id}:a2:x1",
                               f"t:{task_id_for(job.job_id, 1, 3)}:a1:x1"])
    claimed = h.store.claim_tasks([b.task_id, c.task_id, task_id_for(job.job_id, 1, 3)], "w")
    assert {t.round for t in claimed} == {1}
    h.store.record_outcomes([failed(claimed[0], OutcomeKind.RETRY, delay=1)])
    assert h.ids()[-1] == f"t:{claimed[0].task_id}:a{claimed[0].attempt + 1}:x1"
    h.advance(2)
    (again,) = h.store.claim_tasks([claimed[0].task_id], "w")
    h.store.record_outcomes([done(t) for t in (again, *claimed[1:])])
    assert h.ids()[-1] == f"j:{job.job_id}:s2:x1"


def test_retry_refusals_and_a_stage_never_planned(h: Harness) -> None:
    job = h.new_job()
    assert h.store.retry(job.job_id, 1, 3).refusal is Refusal.NOT_ALLOWED  # not ended
    assert h.store.retry("b" * 64, 1, 3).refusal is Refusal.NOT_FOUND
    h.store.cancel_job(job.job_id, "before it started")
    finish(h, job.job_id, JobStatus.CANCELLED)
    result = h.store.retry(job.job_id, 1, 3)
    assert result.accepted and result.stage_resent and h.ids()[-1] == f"j:{job.job_id}:s1:x1"
    done_job, (t,) = h.started(n=1, stages=1, tag="done")
    h.store.record_outcomes([done(t)])
    finish(h, done_job.job_id, JobStatus.COMPLETED)
    assert h.store.retry(done_job.job_id, 1, 3).refusal is Refusal.NOT_ALLOWED
    partial, (p,) = h.started(n=1, stages=2, tag="partial")
    h.store.record_outcomes([failed(p)])
    finish(h, partial.job_id, JobStatus.FAILED)
    assert h.store.retry(partial.job_id, 1, 3).accepted
    h.store.cancel_job(partial.job_id, "stop")
    finish(h, partial.job_id, JobStatus.CANCELLED, owner="f2")
    running = h.store.claim_tasks([p.task_id], "w")
    assert running == [], "a cancelled job's task is not claimed"


def test_rerun_starts_a_fresh_round_of_the_same_job_and_keeps_history(h: Harness) -> None:
    job, claimed = h.started(n=2, stages=1)
    h.store.record_outcomes([done(t, v=t.index) for t in claimed])
    finish(h, job.job_id, JobStatus.COMPLETED)
    again, created = h.store.create_job(job)
    assert not created and again.status is JobStatus.COMPLETED  # a plain duplicate submit creates nothing
    result = h.store.rerun(job.job_id)
    assert result.accepted and (result.round, result.status) == (1, JobStatus.QUEUED)
    record = h.store.get_job(job.job_id)
    assert record is not None
    assert (record.status, record.current_stage, record.round, record.result) == (JobStatus.QUEUED, 1, 1, None)
    assert h.ids()[-1] == f"j:{job.job_id}:s1:x1"
    assert h.store.stage_counts(job.job_id) == {}
    assert h.store.start_stage(plan(job, 1, 2))
    assert h.ids()[-2:] == [f"t:{task_id_for(job.job_id, 1, i)}:a1:x1" for i in range(2)]
    second = h.store.claim_tasks([t.task_id for t in claimed], "w")
    assert [t.attempt for t in second] == [1, 1] and {t.round for t in second} == {1}
    h.store.record_outcomes([done(t, v=10 + t.index) for t in second])
    finish(h, job.job_id, JobStatus.COMPLETED, owner="f2")
    assert [r.result for r in h.store.stage_results(job.job_id, 1)] == [{"v": 10}, {"v": 11}]
    kinds = h.kinds(job.job_id)
    assert kinds.count("job_finished") == 2 and "job_rerun" in kinds
    assert h.store.rerun(job.job_id).round == 2
    assert h.store.rerun(job.job_id).refusal is Refusal.NOT_ALLOWED  # queued: not ended


def test_pruning_the_event_log_changes_no_decision(h: Harness) -> None:
    job, (a, b, _) = h.started()
    h.prune_events()
    h.store.record_outcomes([failed(a, OutcomeKind.RETRY, delay=1), done(b)])
    h.prune_events()
    h.advance(LEASE + 2)
    assert h.store.requeue_expired_leases(grace_seconds=0) == 1
    h.prune_events()
    assert h.store.snapshot(job.job_id) is not None
    assert h.counts(job.job_id) == {"retry_scheduled": 1, "completed": 1, "queued": 1}


def test_a_plan_made_in_an_earlier_round_creates_nothing_in_the_next(h: Harness) -> None:
    """A stage message planned in round 0 (from round 0's results) that comes after a rerun brought the job back to
    that stage creates nothing; the plan of the job's own round does."""
    job, claimed = h.started(n=2, stages=1)
    h.store.record_outcomes([done(t) for t in claimed])
    finish(h, job.job_id, JobStatus.COMPLETED)
    stale = replace(plan(job, 1, 3), round=0)
    assert h.store.rerun(job.job_id).round == 1
    assert not h.store.start_stage(stale)
    assert h.store.stage_counts(job.job_id) == {}
    # The job row's own guard holds the round too (for a rerun between a unit's read and its update).
    sources = job_sources(JobStatus.PROCESSING)
    assert h.store.backend.transaction(lambda uow: uow.start_job_stages([(job.job_id, 1, 0)], sources)) == set()
    assert h.store.start_stage(replace(plan(job, 1, 2), round=1))
    assert h.counts(job.job_id) == {"queued": 2}
