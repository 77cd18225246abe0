"""What the dashboard shows of a job's progress: per-stage counts, percent done, throughput and ETA."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from core.models import JobRecord, JobStatus, StageView

FINISHED = ("completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class StageProgress:
    stage: int
    name: str
    status: str
    task_count: int
    done: int
    counts: dict[str, int]
    percent: float
    per_second: float | None
    eta_seconds: float | None
    elapsed_seconds: float | None


@dataclass(frozen=True, slots=True)
class JobProgress:
    percent: float
    stages: list[StageProgress]
    per_second: float | None
    eta_seconds: float | None


def stage_progress(stage: StageView, now: datetime) -> StageProgress:
    """Done = finished tasks (completed, failed or cancelled); throughput over the time the stage has run."""
    done = sum(n for status, n in stage.counts.items() if status in FINISHED)
    finished = stage.status.value != "processing"
    percent = 100.0 * done / stage.task_count if stage.task_count else (100.0 if finished else 0.0)
    elapsed = None
    if stage.started_at is not None:
        elapsed = max(0.0, ((stage.completed_at or now) - stage.started_at).total_seconds())
    per_second = done / elapsed if elapsed and done else None
    eta = None
    if not finished and per_second:
        eta = (stage.task_count - done) / per_second
    return StageProgress(stage.stage, stage.name, stage.status.value, stage.task_count, done, dict(stage.counts),
                         round(percent, 1), per_second, eta, elapsed)


def job_progress(job: JobRecord, stages: Sequence[StageView], now: datetime) -> JobProgress:
    """Each of the job's stages counts for an equal share; a completed job is 100%."""
    views = [stage_progress(s, now) for s in sorted(stages, key=lambda s: s.stage)]
    if job.status in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS):
        percent = 100.0
    elif job.total_stages:
        share = sum(v.percent for v in views) / 100.0
        percent = min(100.0, 100.0 * share / job.total_stages)
        if not job.status.terminal:
            percent = min(percent, 99.9)  # finalize still to run
    else:
        percent = 0.0
    current = next((v for v in views if v.stage == job.current_stage), None)
    per_second = current.per_second if current else None
    eta = None
    if current is not None and current.eta_seconds is not None and job.current_stage == job.total_stages:
        eta = current.eta_seconds  # only the last stage's remaining work is known in advance
    return JobProgress(round(percent, 1), views, per_second, eta)


def duration(seconds: float | None) -> str:
    """`1h 02m`, `3m 05s`, `4.2s`; an em dash for unknown."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def rate(per_second: float | None) -> str:
    if per_second is None:
        return "—"
    return f"{per_second:,.1f} tasks/s" if per_second >= 1 else f"{per_second * 60:,.1f} tasks/min"
