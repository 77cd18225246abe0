"""Fences on the real PostgreSQL: failing planners end visibly, finalize runs once however long it takes, and the
event log is never read to decide."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from core.models import DeadLetterSelector, JobStatus
from tests.integration.engine_helpers import event_counts, rows, run_to_end
from triggers.runtime import Runtime


def test_a_planner_that_keeps_failing_transiently_fails_and_finalizes_the_job(runtime: Runtime) -> None:
    job_id = runtime.engine.submit("drill_planner_down", {"n": 2}).job.job_id
    job = run_to_end(runtime, job_id, timeout=60)
    assert job.status is JobStatus.FAILED and job.finished_at is not None
    assert job.error is not None and (job.error["type"], job.error["attempt"]) == ("ConnectionError", 3)
    assert job.result is not None and job.result["outcome"] == "failed"
    assert event_counts(runtime, job_id)[("stage_planning_retry", 1)] == 2
    assert rows(runtime, "SELECT plan_attempts FROM jobs WHERE job_id = %s", job_id) == [(2,)]
    assert runtime.transport.list_dead_letters(DeadLetterSelector(job_id=job_id)) == []


def test_a_finalize_longer_than_the_queue_lock_runs_exactly_once(runtime: Runtime, tmp_path: Path) -> None:
    assert runtime.settings.lock_seconds == 2.0
    runs = tmp_path / "runs.txt"
    job_id = runtime.engine.submit(
        "drill_slow_finalize", {"n": 2, "finalize_seconds": 5.0, "runs_file": str(runs)}
    ).job.job_id
    # A worker whose heartbeat renews locks far too late (as if it stalled): the finalize message's lock lapses
    # mid-finalize and it is delivered again, so only the claim on the job row keeps finalize to one run.
    # (A live heartbeat renews the lock and there is no second delivery: test_worker_limits.py.)
    stalled = runtime.worker(concurrency=2, wait_seconds=0.2, lock_seconds=600.0)

    def finished() -> bool:
        current = runtime.store.get_job(job_id)
        return current is not None and current.status.terminal

    assert stalled.run_until(finished, timeout=60)
    job = runtime.store.get_job(job_id)
    assert job is not None and job.status is JobStatus.COMPLETED and job.result == {"tasks": 2}
    time.sleep(2.5)  # let a redelivered finalize message come and go
    worker = runtime.worker(concurrency=1, wait_seconds=0.2)
    worker.start()
    time.sleep(2.5)
    worker.stop()
    assert runs.read_text().split() == ["start", "end"]
    assert event_counts(runtime, job_id).get(("finalize_deferred", None), 0) >= 1, "the second delivery waited"


def test_deleting_the_event_log_mid_run_changes_nothing(runtime: Runtime) -> None:
    job_id = runtime.engine.submit("drill_continue", {"n": 40, "fail_index": 3, "sleep_ms": 20}).job.job_id
    stop = threading.Event()

    def prune() -> None:
        while not stop.wait(0.05):
            rows(runtime, "DELETE FROM job_events RETURNING id")

    pruner = threading.Thread(target=prune, daemon=True)
    pruner.start()
    try:
        job = run_to_end(runtime, job_id, timeout=120)
    finally:
        stop.set()
        pruner.join()
    assert job.status is JobStatus.COMPLETED_WITH_ERRORS
    assert rows(runtime, "SELECT stage, status::text, count(*) FROM tasks WHERE job_id = %s GROUP BY 1, 2 "
                         "ORDER BY 1, 2", job_id) == [(1, "completed", 39), (1, "failed", 1), (2, "completed", 39)]
    assert rows(runtime, "SELECT stage, remaining, failed, status::text FROM stages WHERE job_id = %s ORDER BY 1",
                job_id) == [(1, 0, 1, "completed"), (2, 0, 0, "completed")]
