"""Counts by status derived from the stage counters (core/progress.py)."""

from __future__ import annotations

from core.models import JobStatus
from core.progress import StageCounters, stage_task_counts, task_counts


def counters(**kw: int) -> StageCounters:
    values = {"stage": 1, "task_count": 10, "remaining": 10, "failed": 0, "running": 0, "retry_scheduled": 0}
    values.update(kw)
    return StageCounters(**values)


def test_a_live_job_has_queued_tasks_not_cancelled_ones() -> None:
    c = counters(remaining=7, failed=1, running=2, retry_scheduled=1)
    assert stage_task_counts(JobStatus.PROCESSING, c) == {
        "completed": 2, "failed": 1, "running": 2, "retry_scheduled": 1, "queued": 4}


def test_after_fail_fast_or_cancel_the_unfinished_tasks_that_do_not_run_are_cancelled() -> None:
    c = counters(remaining=7, failed=1, running=2)
    for status in (JobStatus.FINALIZING, JobStatus.CANCELLED, JobStatus.FAILED):
        assert stage_task_counts(status, c) == {"completed": 2, "failed": 1, "running": 2, "cancelled": 5}


def test_statuses_without_tasks_are_left_out_and_so_are_empty_stages() -> None:
    assert stage_task_counts(JobStatus.COMPLETED, counters(remaining=0)) == {"completed": 10}
    empty = counters(stage=2, task_count=0, remaining=0)
    assert task_counts(JobStatus.COMPLETED, [counters(remaining=0), empty]) == {1: {"completed": 10}}
