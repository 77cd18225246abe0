"""On the real PostgreSQL and queue: a default-finalize job ends without a finalize message; a job with its own
finalize still gets one, and it runs once."""

from __future__ import annotations

from core.models import JobStatus
from tests.integration.engine_helpers import event_counts, rows, run_to_end
from triggers.runtime import Runtime


def finalize_messages(runtime: Runtime, job_id: str) -> int:
    found = rows(runtime, "SELECT count(*) FROM queue_messages WHERE message_id LIKE %s", f"j:{job_id}:final%")
    return int(found[0][0])


def test_a_default_finalize_job_ends_in_the_transaction_of_its_last_stage(runtime: Runtime) -> None:
    job_id = runtime.engine.submit("bench_noop_2stage", {"tasks": 4, "label": "inline"}).job.job_id
    job = run_to_end(runtime, job_id)
    assert (job.status, job.outcome) == (JobStatus.COMPLETED, JobStatus.COMPLETED)
    assert job.result == {"outcome": "completed", "stages": {"1": {"completed": 4}, "2": {"completed": 4}}}
    assert finalize_messages(runtime, job_id) == 0
    counts = event_counts(runtime, job_id)
    assert counts[("finalizing", None)] == 1 and counts[("job_finished", None)] == 1


def test_a_custom_finalize_job_still_runs_its_finalize_once(runtime: Runtime) -> None:
    job_id = runtime.engine.submit("drill_continue", {"n": 3}).job.job_id
    job = run_to_end(runtime, job_id)
    assert job.status is JobStatus.COMPLETED
    assert job.result == {"outcome": "completed", "counts": {"1": {"completed": 3}, "2": {"completed": 3}}}
    assert finalize_messages(runtime, job_id) == 1
    assert event_counts(runtime, job_id)[("job_finished", None)] == 1
