"""`run` (and `ingest`): submit, work the queue in-process under a live bar for the job, report the job's own time.

While the bar is live, log records go to a file under `data_dir/logs/` instead of stderr (JSON lines in the
middle of a progress bar are unreadable); the summary says how many warnings and errors it holds, and where.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from core.models import JobSnapshot, JobStatus
from infrastructure.logging import configure_logging
from infrastructure.postgres.admin import PostgresAdmin
from infrastructure.settings import Settings
from triggers.cli_display import job_seconds, job_wording, stage_table, watch
from triggers.cli_output import EXIT_FAILED, EXIT_OK, CliError

if TYPE_CHECKING:
    from triggers.runtime import Runtime


class _LevelCounter(logging.Handler):
    """Counts records of WARNING and above by level name."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.levelname] = self.counts.get(record.levelname, 0) + 1


@contextmanager
def logs_to_file(settings: Settings, path: Path) -> Iterator[_LevelCounter]:
    """Send log records to `path` (JSON lines, appended) for the block's duration, counting warnings and errors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    counter = _LevelCounter()
    root = logging.getLogger()
    with path.open("a", encoding="utf-8") as stream:
        configure_logging(settings, stream=stream, fmt="json")
        root.addHandler(counter)
        logging.captureWarnings(True)  # a Python warning mid-bar is as unreadable as a log line
        try:
            yield counter
        finally:
            logging.captureWarnings(False)
            root.removeHandler(counter)
            configure_logging(settings)


def run_log_path(settings: Settings, job_type: str, job_id: str) -> Path:
    return settings.data_dir / "logs" / f"{job_type}-{job_id[:12]}.log"


def run_job(
    runtime: Runtime, console: Console, job_type: str, params: dict[str, Any], concurrency: int, timeout: float
) -> JobSnapshot:
    """Submit and follow THIS job to its end under a live bar per stage; print its summary; return its snapshot.

    A job that already exists and has finished is reported as it is, with no worker started. The in-process
    workers serve the shared queues, so they may also work on other jobs' messages; the time reported is the
    job's own (submission to finish, from the store), and the summary is printed before the workers stop.
    """
    submitted = runtime.engine.submit(job_type, params)
    job = submitted.job
    if not submitted.created and job.status.terminal:
        snapshot = runtime.engine.status(job.job_id)
        if snapshot is None:
            raise CliError(f"job {job.job_id} disappeared while being read")
        console.print(f"Job {job.job_id} already exists and is {job_wording(snapshot.job)}; not run again.",
                      soft_wrap=True)
        _summary(console, snapshot, timeout)
        return snapshot
    console.print(f"Job {job.job_id} ({'submitted' if submitted.created else 'already running'})", soft_wrap=True)
    others = _other_unfinished(runtime, job.job_id)
    if others:
        console.print(f"Note: {others} other unfinished job(s) share the queues; the workers started here help with "
                      "them too, but this command follows and times only its own job.", style="dim")
    log_path = run_log_path(runtime.settings, job_type, job.job_id)
    worker = runtime.worker(concurrency=concurrency)
    with logs_to_file(runtime.settings, log_path) as counter:
        worker.start()
        try:
            snapshot = watch(console, lambda: runtime.engine.status(job.job_id), timeout)
            if snapshot is None:
                raise CliError(f"job {job.job_id} disappeared while being watched")
            _summary(console, snapshot, timeout)
        finally:
            worker.stop(timeout=30)
    if counter.counts:
        logged = " and ".join(f"{n} {level.lower()}{'' if n == 1 else 's'}"
                              for level, n in sorted(counter.counts.items()))
        console.print(f"The run logged {logged}: see {log_path}", style="dim", soft_wrap=True)
    return snapshot


def _other_unfinished(runtime: Runtime, job_id: str, limit: int = 100) -> str:
    """How many other jobs are unfinished ("100+" past `limit`), "" when none."""
    unfinished = (JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.FINALIZING)
    jobs = PostgresAdmin(runtime.store).list_jobs(unfinished, None, limit + 1, None)
    count = sum(1 for j in jobs if j.job_id != job_id)
    return "" if count == 0 else f"{limit}+" if count > limit else str(count)


def _summary(console: Console, snapshot: JobSnapshot, timeout: float) -> None:
    job = snapshot.job
    console.print(stage_table(snapshot, title=None))
    seconds = job_seconds(job)
    if not job.status.terminal:
        console.print(f"[yellow]Not finished after {timeout:g}s.[/] See `coremachine status {job.job_id}`.",
                      soft_wrap=True)
        return
    took = f" in {seconds:.2f}s" if seconds is not None else ""
    line = f"Job {job_wording(job)}{took}."
    if job.error:
        line += f" {job.error.get('type', 'error')}: {job.error.get('message', '')}"
    style = "green" if job.status is JobStatus.COMPLETED else "red"
    console.print(line, style=style, soft_wrap=True)


def run_summary_code(snapshot: JobSnapshot) -> int:
    """Exit 0 only when the job completed."""
    return EXIT_OK if snapshot.job.status is JobStatus.COMPLETED else EXIT_FAILED
