"""Status counts come from the stage counters and the in-flight indexes; they must equal counting the tasks."""

from __future__ import annotations

from core.models import ErrorClass, ErrorInfo, JobStatus, OutcomeKind, TaskOutcome
from tests.integration.engine_helpers import rows, run_to_end
from triggers.runtime import Runtime


def counted(runtime: Runtime, job_id: str) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {}
    for stage, status, n in rows(
        runtime, "SELECT stage, status::text, count(*) FROM tasks WHERE job_id = %s GROUP BY 1, 2", job_id
    ):
        out.setdefault(stage, {})[status] = n
    return out


def assert_counts_exact(runtime: Runtime, job_id: str) -> dict[int, dict[str, int]]:
    exact = counted(runtime, job_id)
    assert runtime.store.stage_counts(job_id) == exact
    snapshot = runtime.engine.status(job_id)
    assert snapshot is not None
    assert {s.stage: s.counts for s in snapshot.stages if s.counts} == exact
    return exact


def test_counts_of_finished_jobs_equal_counting_their_tasks(runtime: Runtime) -> None:
    done = runtime.engine.submit("hello_world", {"n": 5}).job.job_id
    fail_fast = runtime.engine.submit("drill_fail_fast", {"n": 20, "fail_index": 3}).job.job_id
    with_errors = runtime.engine.submit("drill_continue", {"n": 6, "fail_index": 2}).job.job_id
    assert run_to_end(runtime, done).status is JobStatus.COMPLETED
    assert run_to_end(runtime, fail_fast, concurrency=1).status is JobStatus.FAILED
    assert run_to_end(runtime, with_errors).status is JobStatus.COMPLETED_WITH_ERRORS
    assert assert_counts_exact(runtime, done) == {1: {"completed": 5}, 2: {"completed": 5}}
    assert assert_counts_exact(runtime, fail_fast)[1]["failed"] == 1
    assert assert_counts_exact(runtime, with_errors)[1] == {"completed": 5, "failed": 1}


def test_counts_in_flight_through_cancel(runtime: Runtime) -> None:
    job_id = runtime.engine.submit("drill_continue", {"n": 10}).job.job_id
    for message in runtime.transport.receive("jobs", 1, 1.0):
        runtime.transport.complete([s.message for s in runtime.engine.handle_job_messages([message])])
    ids = [r[0] for r in rows(runtime, "SELECT task_id FROM tasks WHERE job_id = %s ORDER BY idx LIMIT 4", job_id)]
    claimed = runtime.store.claim_tasks(ids, "test-worker")
    assert len(claimed) == 4
    error = ErrorInfo("Flaky", ErrorClass.TRANSIENT, "try again")
    runtime.store.record_outcomes([
        TaskOutcome(claimed[0], OutcomeKind.RETRY, error=error, retry_delay_seconds=60.0),
        TaskOutcome(claimed[1], OutcomeKind.COMPLETED, result={}),
    ])
    assert assert_counts_exact(runtime, job_id) == {1: {"queued": 6, "running": 2, "retry_scheduled": 1,
                                                        "completed": 1}}
    assert runtime.engine.cancel(job_id).accepted
    assert assert_counts_exact(runtime, job_id) == {1: {"cancelled": 7, "running": 2, "completed": 1}}
    runtime.store.record_outcomes([TaskOutcome(claimed[2], OutcomeKind.COMPLETED, result={})])
    assert assert_counts_exact(runtime, job_id) == {1: {"cancelled": 7, "running": 1, "completed": 2}}
