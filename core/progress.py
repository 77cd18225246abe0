"""Task counts by status per stage, derived from the stage counters: status never counts a job's tasks.

A stage row carries `task_count`, `remaining` (decremented by every completion and failure, the fan-in
counter) and `failed`. The tasks in flight (`running`, `retry_scheduled`) are counted through partial indexes
whose size is bounded by the workers' concurrency and the failing tasks, not by the stage's width. The rest
follows from one invariant of the state machine: the transaction that takes a job out of `processing` early
(fail fast, cancel) cancels its queued and retry-scheduled tasks, and the one that finishes it cancels whatever
still runs, so once a job has left `queued`/`processing` every unfinished task that is not running is cancelled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.models import JSON, JobStatus, TaskStatus

_LIVE = frozenset({JobStatus.QUEUED, JobStatus.PROCESSING})


@dataclass(frozen=True, slots=True)
class StageCounters:
    """What the store keeps per stage, plus the in-flight counts read through the partial indexes."""

    stage: int
    task_count: int
    remaining: int
    failed: int
    running: int
    retry_scheduled: int


def stage_task_counts(job_status: JobStatus, counters: StageCounters) -> dict[str, int]:
    """Tasks of one stage by status (statuses with no task left out), from the counters alone."""
    done = counters.task_count - counters.remaining
    unfinished = counters.remaining - counters.running - counters.retry_scheduled
    counts = {
        TaskStatus.COMPLETED: done - counters.failed,
        TaskStatus.FAILED: counters.failed,
        TaskStatus.RUNNING: counters.running,
        TaskStatus.RETRY_SCHEDULED: counters.retry_scheduled,
        TaskStatus.QUEUED: unfinished if job_status in _LIVE else 0,
        TaskStatus.CANCELLED: 0 if job_status in _LIVE else unfinished,
    }
    return {status.value: n for status, n in counts.items() if n > 0}


def task_counts(job_status: JobStatus, stages: list[StageCounters]) -> dict[int, dict[str, int]]:
    """`stage_task_counts` for every stage that has tasks."""
    counts = {c.stage: stage_task_counts(job_status, c) for c in stages}
    return {stage: by_status for stage, by_status in counts.items() if by_status}


def default_result(outcome: JobStatus, counts: Mapping[int, Mapping[str, int]]) -> JSON:
    """What a job's default `finalize` returns: its outcome and its tasks by status per stage."""
    return {"outcome": outcome.value, "stages": {str(stage): dict(by_status) for stage, by_status in counts.items()}}
