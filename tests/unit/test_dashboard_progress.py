"""The dashboard's progress figures: percent per stage and job, throughput and ETA, readable durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.models import FailurePolicy, JobRecord, JobStatus, StageStatus, StageView
from triggers.dashboard.progress import duration, job_progress, rate, stage_progress

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _stage(number: int, status: StageStatus, tasks: int, counts: dict[str, int], ran: float | None,
           done_at: datetime | None = None) -> StageView:
    started = NOW - timedelta(seconds=ran) if ran is not None else None
    remaining = tasks - sum(n for k, n in counts.items() if k in ("completed", "failed", "cancelled"))
    return StageView(number, f"s{number}", status, tasks, remaining, counts.get("failed", 0), counts, started, done_at)


def _job(status: JobStatus, stage: int, total: int = 2) -> JobRecord:
    return JobRecord("a" * 64, "t", status, {}, stage, total, FailurePolicy.FAIL_FAST, None, None, NOW, NOW)


def test_a_running_stage_has_a_rate_and_an_eta() -> None:
    view = stage_progress(_stage(1, StageStatus.PROCESSING, 100, {"completed": 30, "failed": 10, "running": 4},
                                 ran=20.0), NOW)
    assert view.done == 40 and view.percent == 40.0
    assert view.per_second == 2.0 and view.eta_seconds == 30.0


def test_a_finished_stage_has_no_eta_and_an_empty_one_counts_as_done() -> None:
    done = stage_progress(_stage(1, StageStatus.COMPLETED, 10, {"completed": 10}, ran=5.0, done_at=NOW), NOW)
    assert done.percent == 100.0 and done.eta_seconds is None and done.elapsed_seconds == 5.0
    empty = stage_progress(_stage(2, StageStatus.COMPLETED, 0, {}, ran=0.0, done_at=NOW), NOW)
    assert empty.percent == 100.0 and empty.per_second is None


def test_job_percent_shares_stages_and_reaches_100_only_when_complete() -> None:
    first = _stage(1, StageStatus.COMPLETED, 10, {"completed": 10}, ran=5.0, done_at=NOW)
    second = _stage(2, StageStatus.PROCESSING, 10, {"completed": 5, "queued": 5}, ran=5.0)
    running = job_progress(_job(JobStatus.PROCESSING, 2), [second, first], NOW)
    assert running.percent == 75.0 and [s.stage for s in running.stages] == [1, 2]
    assert running.eta_seconds == 5.0  # the last stage: its remaining work is known
    all_done = _stage(2, StageStatus.COMPLETED, 10, {"completed": 10}, ran=5.0, done_at=NOW)
    assert job_progress(_job(JobStatus.FINALIZING, 2), [first, all_done], NOW).percent == 99.9
    assert job_progress(_job(JobStatus.COMPLETED, 2), [first, all_done], NOW).percent == 100.0
    early = job_progress(_job(JobStatus.PROCESSING, 1), [_stage(1, StageStatus.PROCESSING, 10, {"completed": 5},
                                                                 ran=1.0)], NOW)
    assert early.percent == 25.0 and early.eta_seconds is None  # stage 2's size is not known yet


def test_readable_figures() -> None:
    assert duration(None) == "—" and duration(4.24) == "4.2s" and duration(185) == "3m 05s"
    assert duration(3720) == "1h 02m"
    assert rate(None) == "—" and rate(12.345) == "12.3 tasks/s" and rate(0.5) == "30.0 tasks/min"
