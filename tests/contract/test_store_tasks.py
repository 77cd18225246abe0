"""Store contract, part 1: jobs, stages, claims, outcomes, fan-in and leases, on every store adapter."""

from __future__ import annotations

import threading
from dataclasses import replace
from functools import partial

from core.ids import job_id_for, task_id_for
from core.models import ClaimedTask, ErrorClass, ErrorInfo, FailurePolicy, JobStatus, NewJob, OutcomeKind
from tests.contract.store_harness import LEASE, Harness, at_once, done, failed, plan


def test_create_job_once_with_its_first_stage_message(h: Harness) -> None:
    job = h.new_job()
    again, created = h.store.create_job(job)
    assert not created and (again.status, again.current_stage, again.outcome, again.round) == (
        JobStatus.QUEUED, 1, None, 0)
    assert h.ids() == [f"j:{job.job_id}:s1"]
    assert h.kinds(job.job_id) == ["submitted"]


def test_many_jobs_are_created_in_one_unit_each_id_once(h: Harness) -> None:
    existing = h.new_job(tag="existing")
    fresh = [NewJob(job_id_for("t", {"tag": t}), "t", {"tag": t}, 2, FailurePolicy.FAIL_FAST) for t in ("a", "b")]
    results = h.store.create_jobs([fresh[0], existing, fresh[1], fresh[0]])
    assert [(record.job_id, created) for record, created in results] == [
        (fresh[0].job_id, True), (existing.job_id, False), (fresh[1].job_id, True), (fresh[0].job_id, False)]
    assert [record.status for record, _ in results] == [JobStatus.QUEUED] * 4
    for job in (existing, *fresh):
        assert h.kinds(job.job_id) == ["submitted"]
    assert sorted(h.ids()) == sorted(f"j:{job.job_id}:s1" for job in (existing, *fresh))


def test_returned_json_is_a_copy(h: Harness) -> None:
    job = h.new_job(tag="a")
    record = h.store.get_job(job.job_id)
    assert record is not None
    record.parameters["tag"] = "mutated"
    fetched = h.store.get_job(job.job_id)
    assert fetched is not None and fetched.parameters == {"tag": "a"}


def test_start_stage_is_guarded(h: Harness) -> None:
    job = h.new_job()
    assert not h.store.start_stage(plan(job, 2, 2))
    assert h.store.start_stage(plan(job, 1, 2))
    assert not h.store.start_stage(plan(job, 1, 5))
    assert h.counts(job.job_id) == {"queued": 2}
    assert h.ids()[1:] == [f"t:{job.job_id}-s1-t{i}:a1" for i in range(2)]
    record = h.store.get_job(job.job_id)
    assert record is not None and record.status is JobStatus.PROCESSING


def test_stages_of_several_jobs_start_in_one_unit_each_guarded_on_its_own(h: Harness) -> None:
    fresh, other, created, cancelled = (h.new_job(tag=t) for t in ("fresh", "other", "created", "cancelled"))
    assert h.store.start_stage(plan(created, 1, 1))
    h.store.cancel_job(cancelled.job_id, "stop")
    plans = [plan(fresh, 1, 2), plan(other, 2, 1), plan(created, 1, 3), plan(cancelled, 1, 1), plan(other, 1, 0)]
    assert h.store.start_stages(plans[:4]) == [True, False, False, False]
    assert h.counts(fresh.job_id) == {"queued": 2} and h.counts(created.job_id) == {"queued": 1}
    assert h.counts(cancelled.job_id) == {} and h.counts(other.job_id) == {}
    assert h.store.start_stages([plans[4], plan(fresh, 2, 1)]) == [True, False]  # zero tasks: on to stage 2
    assert h.ids()[-1] == f"j:{other.job_id}:s2"
    assert [i for i in h.ids() if i.startswith(f"t:{fresh.job_id}")] == [
        f"t:{fresh.job_id}-s1-t{i}:a1" for i in range(2)]
    for job, kinds in ((fresh, ["submitted", "stage_started"]),
                       (other, ["submitted", "stage_started", "stage_completed"])):
        assert h.kinds(job.job_id) == kinds
    record = h.store.get_job(fresh.job_id)
    assert record is not None and record.status is JobStatus.PROCESSING


def test_zero_task_stages_advance_then_finalize(h: Harness) -> None:
    job = h.new_job(stages=2)
    assert h.store.start_stage(plan(job, 1, 0))
    assert h.ids()[-1] == f"j:{job.job_id}:s2"
    assert h.store.start_stage(plan(job, 2, 0))
    assert h.ids()[-1] == f"j:{job.job_id}:final"
    record = h.store.get_job(job.job_id)
    assert record is not None
    assert (record.status, record.outcome, record.current_stage) == (JobStatus.FINALIZING, JobStatus.COMPLETED, 2)
    assert h.kinds(job.job_id) == ["submitted", "stage_started", "stage_completed", "stage_started",
                                   "stage_completed", "finalizing"]


def test_claim_rules(h: Harness) -> None:
    job, (a, b, c) = h.started()
    assert h.store.claim_tasks([a.task_id], "other") == []
    assert a.attempt == 1 and a.failure_policy is FailurePolicy.FAIL_FAST and a.parameters == {"i": 0}
    h.store.record_outcomes([failed(b, OutcomeKind.RETRY, delay=5.0)])
    assert h.store.claim_tasks([b.task_id], "w") == []
    h.advance(5.5)
    (b2,) = h.store.claim_tasks([b.task_id, b.task_id], "w")
    assert b2.attempt == 2
    h.advance(4)
    assert h.store.claim_tasks([a.task_id], "w") == []
    h.advance(1)
    (a2,) = h.store.claim_tasks([a.task_id, "no-such-task"], "w2")
    assert a2.attempt == 2
    h.store.cancel_job(job.job_id, "stop")
    h.advance(60)
    assert h.store.claim_tasks([c.task_id], "w") == []


def test_taking_back_an_expired_lease_by_claim_keeps_the_lost_attempt(h: Harness) -> None:
    job, (a, *_) = h.started()
    h.advance(LEASE + 1)
    (again,) = h.store.claim_tasks([a.task_id], "w2")
    assert again.attempt == 2
    snapshot = h.store.snapshot(job.job_id)
    assert snapshot is not None
    (task,) = [t for t in snapshot.recent_errors if t.task_id == a.task_id]
    (error,) = task.errors
    assert (error["type"], error["class"], error["attempt"], error["where"]) == ("LeaseExpired", "transient", 1, "w")


def test_outcomes_are_guarded_on_status_and_attempt_and_late_ones_are_recorded(h: Harness) -> None:
    job, (a, b, _) = h.started()
    h.advance(LEASE + 1)
    (a2,) = h.store.claim_tasks([a.task_id], "w2")
    h.store.record_outcomes([done(a, v=1)])
    assert h.counts(job.job_id) == {"running": 3}
    assert h.kinds(job.job_id)[-1] == "late_outcome"
    h.store.record_outcomes([done(a2, v=2), done(a2, v=3), done(b, v=4)])
    h.store.record_outcomes([done(b, v=5)])
    assert [r.result for r in h.store.stage_results(job.job_id, 1)] == [{"v": 2}, {"v": 4}]
    snapshot = h.store.snapshot(job.job_id, events=1000)
    assert snapshot is not None and snapshot.stages[0].remaining == 1
    late = [e for e in snapshot.events if e.kind == "late_outcome"]
    assert [(e.task_id, e.detail["attempt"], e.detail["task_attempt"]) for e in late] == [
        (a.task_id, 1, 2), (b.task_id, 1, 1)]


def test_last_completion_advances_once(h: Harness) -> None:
    job, claimed = h.started()
    h.store.record_outcomes([done(t, v=t.index) for t in claimed[:2]])
    assert h.ids()[-1].endswith(":a1")
    h.store.record_outcomes([done(claimed[2], v=2)])
    h.store.record_outcomes([done(t, v=9) for t in claimed])
    assert h.ids()[-1] == f"j:{job.job_id}:s2"
    assert h.kinds(job.job_id).count("stage_completed") == 1
    record = h.store.get_job(job.job_id)
    assert record is not None and (record.current_stage, record.status) == (2, JobStatus.PROCESSING)


def test_retry_sends_the_next_attempt_later(h: Harness) -> None:
    job, (a, *_) = h.started()
    h.store.record_outcomes([failed(a, OutcomeKind.RETRY, delay=2.5)])
    message = h.sent()[-1]
    assert (message.message_id, message.delay_seconds, message.body["attempt"]) == (f"t:{a.task_id}:a2", 2.5, 2)
    snapshot = h.store.snapshot(job.job_id)
    assert snapshot is not None and snapshot.next_retry is not None
    assert snapshot.next_retry.task_id == a.task_id and len(snapshot.next_retry.errors) == 1
    assert snapshot.events[-1].detail["retry_in_s"] == 2.5


def test_fail_fast_finalizes_and_cancels_unstarted(h: Harness) -> None:
    job, (a, b, _) = h.started()
    h.store.record_outcomes([failed(b, OutcomeKind.RETRY, delay=9)])
    h.store.record_outcomes([failed(a)])
    record = h.store.get_job(job.job_id)
    assert record is not None and (record.status, record.outcome) == (JobStatus.FINALIZING, JobStatus.FAILED)
    assert record.error is not None and record.error["task_id"] == a.task_id
    assert h.counts(job.job_id) == {"failed": 1, "cancelled": 1, "running": 1}
    assert h.ids()[-1] == f"j:{job.job_id}:final"
    snapshot = h.store.snapshot(job.job_id)
    assert snapshot is not None
    assert snapshot.events[-1].kind == "job_failed" and snapshot.events[-1].detail["cancelled_tasks"] == 1
    assert not h.store.fail_job(job.job_id, ErrorInfo("X", ErrorClass.UNKNOWN, "again"))


def test_continue_policy_counts_failures(h: Harness) -> None:
    job, (a, b, c) = h.started(stages=1, policy=FailurePolicy.CONTINUE)
    h.store.record_outcomes([failed(a), done(b), done(c)])
    record = h.store.get_job(job.job_id)
    assert record is not None
    assert (record.status, record.outcome) == (JobStatus.FINALIZING, JobStatus.COMPLETED_WITH_ERRORS)
    snapshot = h.store.snapshot(job.job_id)
    assert snapshot is not None and (snapshot.stages[0].failed, snapshot.stages[0].remaining) == (1, 0)


def test_requeue_expired_leases_keeps_the_error_and_the_round(h: Harness) -> None:
    job, (a, b, c) = h.started()
    h.store.record_outcomes([done(c)])
    h.advance(LEASE + 4)
    assert h.store.requeue_expired_leases(grace_seconds=5) == 0
    h.advance(2)
    assert h.store.requeue_expired_leases(grace_seconds=5, limit=1) == 1
    assert h.store.requeue_expired_leases(grace_seconds=5) == 1
    assert h.counts(job.job_id) == {"queued": 2, "completed": 1}
    assert sorted(h.ids()[-2:]) == [f"t:{a.task_id}:a2", f"t:{b.task_id}:a2"]
    snapshot = h.store.snapshot(job.job_id)
    assert snapshot is not None
    for task in snapshot.recent_errors:
        (error,) = task.errors
        assert (error["type"], error["class"], error["attempt"], error["where"]) == (
            "LeaseExpired", "transient", 1, "w")
    assert [e.kind for e in snapshot.events[-2:]] == ["task_lease_expired"] * 2
    (again,) = h.store.claim_tasks([a.task_id], "w2")
    assert again.attempt == 2


def test_no_requeue_once_the_job_is_over(h: Harness) -> None:
    job, _ = h.started()
    h.store.cancel_job(job.job_id, "stop")
    h.advance(100)
    assert h.store.requeue_expired_leases(grace_seconds=0) == 0


def test_renewed_leases_outlive_their_first_expiry(h: Harness) -> None:
    job, (a, b, _) = h.started()
    h.advance(LEASE - 2)
    stale = replace(b, attempt=7)
    assert h.store.renew_task_leases([a, stale]) == {a.task_id: JobStatus.PROCESSING}
    h.advance(4)
    assert h.store.claim_tasks([a.task_id], "w2") == []
    (b2,) = h.store.claim_tasks([b.task_id], "w2")
    assert b2.attempt == 2
    assert h.counts(job.job_id) == {"running": 3}
    snapshot = h.store.snapshot(job.job_id)
    assert snapshot is not None
    assert {t.task_id for t in snapshot.recent_errors} == {b.task_id}


def test_released_claims_give_their_attempt_back(h: Harness) -> None:
    job, (a, b, _) = h.started()
    assert h.store.release_claims([a, replace(b, attempt=2)]) == [a.task_id]
    assert h.counts(job.job_id) == {"queued": 1, "running": 2}
    (again,) = h.store.claim_tasks([a.task_id], "w2")
    assert again.attempt == 1
    assert h.store.live_jobs([job.job_id, "f" * 64]) == {job.job_id}


def test_early_and_overdue_retry_messages_are_sent_again_without_a_new_attempt(h: Harness) -> None:
    job, (a, b, _) = h.started()
    h.store.record_outcomes([failed(a, OutcomeKind.RETRY, delay=8), failed(b, OutcomeKind.RETRY, delay=2)])
    h.advance(1)
    assert sorted(h.store.defer_early_tasks([(a.task_id, 2), (b.task_id, 2), (a.task_id, 3)])) == sorted(
        [a.task_id, b.task_id])
    early = {m.message_id: m for m in h.sent()[-2:]}
    assert round(early[f"t:{a.task_id}:a2:s1"].delay_seconds) == 7  # due when the task is
    assert round(early[f"t:{b.task_id}:a2:s1"].delay_seconds) == 1
    h.prune_events()
    h.advance(2 + 30)
    assert h.store.resend_overdue_retries(overdue_seconds=30) == 1
    assert h.ids()[-1] == f"t:{b.task_id}:a2:s2"
    assert h.store.resend_overdue_retries(overdue_seconds=30) == 0
    (b2,) = h.store.claim_tasks([b.task_id], "w")
    assert b2.attempt == 2 and h.counts(job.job_id)["running"] == 2


def test_stuck_jobs(h: Harness) -> None:
    job, (a, *_) = h.started()
    idle = h.new_job(tag="idle")
    h.advance(50)
    h.store.record_outcomes([done(a)])
    h.advance(20)
    assert [j.job_id for j in h.store.stuck_jobs(60)] == [idle.job_id]
    h.advance(50)
    assert {j.job_id for j in h.store.stuck_jobs(60)} == {job.job_id, idle.job_id}
    assert len(h.store.stuck_jobs(60, limit=1)) == 1


def test_snapshot_views(h: Harness) -> None:
    job, (a, b, c) = h.started()
    h.advance(1)
    assert h.store.claim_tasks([], "w") == []
    h.store.record_outcomes([failed(b, OutcomeKind.RETRY, delay=3)])
    snapshot = h.store.snapshot(job.job_id, events=2)
    assert snapshot is not None
    assert [e.kind for e in snapshot.events] == ["stage_started", "task_retry_scheduled"]
    assert snapshot.oldest_running is not None and snapshot.oldest_running.task_id in (a.task_id, c.task_id)
    assert snapshot.stages[0].counts == {"running": 2, "retry_scheduled": 1}
    assert h.store.snapshot("f" * 64) is None
    assert h.store.stage_results(job.job_id, 7) == []


def test_add_event_for_a_missing_job_does_nothing(h: Harness) -> None:
    job = h.new_job()
    h.store.add_event(job.job_id, "dead_lettered", {"reason": "X"}, stage=1, task_id="t")
    assert h.kinds(job.job_id)[-1] == "dead_lettered"
    h.store.add_event("e" * 64, "dead_lettered", {})
    assert h.store.get_job("e" * 64) is None and h.store.snapshot("e" * 64) is None


def test_concurrent_completions_advance_exactly_once(h: Harness) -> None:
    job, claimed = h.started(n=120)
    barrier = threading.Barrier(6)

    def finish(part: list[ClaimedTask]) -> None:
        barrier.wait()
        for i in range(0, len(part), 4):
            batch = part[i:i + 4]
            h.store.record_outcomes([done(t, v=t.index) for t in batch] + [done(t, v=-1) for t in batch])

    at_once(*(partial(finish, claimed[i::6]) for i in range(6)))
    assert h.ids().count(f"j:{job.job_id}:s2") == 1
    assert h.kinds(job.job_id).count("stage_completed") == 1
    assert [r.result for r in h.store.stage_results(job.job_id, 1)] == [{"v": i} for i in range(120)]
    assert task_id_for(job.job_id, 1, 0) == claimed[0].task_id


def test_jobs_and_stage_results_are_read_for_many_at_once(h: Harness) -> None:
    first, first_tasks = h.started(n=3, tag="first")
    second, second_tasks = h.started(n=3, tag="second")
    for tasks in (first_tasks, second_tasks):
        h.store.record_outcomes([done(t, i=t.index) for t in tasks[:2]])
    jobs = h.store.get_jobs([first.job_id, "0" * 64, second.job_id])
    assert sorted(jobs) == sorted([first.job_id, second.job_id])
    assert jobs[first.job_id] == h.store.get_job(first.job_id)
    keys = [(first.job_id, 1), (second.job_id, 1), (second.job_id, 2)]
    results = h.store.stages_results(keys)
    assert results is not None and results[second.job_id, 2] == []
    assert h.store.stages_results(keys, max_rows=4) == results  # four results in all
    assert h.store.stages_results(keys, max_rows=3) is None
    assert h.store.stages_results([(first.job_id, 1)], max_rows=1) is None
    for job in (first, second):
        assert results[job.job_id, 1] == h.store.stage_results(job.job_id, 1)
        assert [(r.index, r.result) for r in results[job.job_id, 1]] == [(0, {"i": 0}), (1, {"i": 1})]
