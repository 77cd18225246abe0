"""Rich rendering for the CLI: job status tables, the live per-stage progress bar and the run summary."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.diagnosis import explain
from core.models import DeadLetter, JobSnapshot, StageView

if TYPE_CHECKING:
    from triggers.runtime import Runtime

FINISHED = ("completed", "failed", "cancelled")


def snapshot_json(snapshot: JobSnapshot, dead_letters: Sequence[DeadLetter] = ()) -> dict[str, Any]:
    job = snapshot.job
    return {
        "job_id": job.job_id,
        "job_type": job.job_type,
        "status": job.status.value,
        "stage": job.current_stage,
        "total_stages": job.total_stages,
        "parameters": job.parameters,
        "result": job.result,
        "error": job.error,
        "created_at": job.created_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "stages": [
            {
                "stage": s.stage, "name": s.name, "status": s.status.value, "task_count": s.task_count,
                "remaining": s.remaining, "failed": s.failed, "tasks": s.counts,
                "started_at": s.started_at.isoformat() if s.started_at else None,
                "completed_at": s.completed_at.isoformat() if s.completed_at else None,
            }
            for s in snapshot.stages
        ],
        "errors": [
            {"task_id": t.task_id, "stage": t.stage, "status": t.status.value, "errors": t.errors}
            for t in snapshot.recent_errors
        ],
        "events": [
            {"at": e.at.isoformat(), "kind": e.kind, "stage": e.stage, "task_id": e.task_id, "detail": e.detail}
            for e in snapshot.events
        ],
        "diagnosis": explain(snapshot, dead_letters),
        "dead_letters": [{"id": d.id, "queue": d.queue, "reason": d.reason, "description": d.description}
                         for d in dead_letters],
    }


def stage_table(stages: Sequence[StageView], title: str = "Stages") -> Table:
    table = Table(title=title)
    for column in ("stage", "name", "status", "tasks", "completed", "failed", "other", "seconds"):
        table.add_column(column, justify="right" if column not in ("name", "status") else "left")
    for s in stages:
        other = sum(n for k, n in s.counts.items() if k not in ("completed", "failed"))
        seconds = (s.completed_at - s.started_at).total_seconds() if s.completed_at and s.started_at else None
        table.add_row(
            str(s.stage), s.name, s.status.value, str(s.task_count), str(s.counts.get("completed", 0)),
            str(s.counts.get("failed", 0)), str(other), f"{seconds:.2f}" if seconds is not None else "-",
        )
    return table


def print_status(console: Console, snapshot: JobSnapshot, dead_letters: Sequence[DeadLetter]) -> None:
    job = snapshot.job
    console.print(f"[bold]{job.job_type}[/] {job.job_id}")
    console.print(f"status [bold]{job.status.value}[/], stage {job.current_stage}/{job.total_stages}")
    console.print(stage_table(snapshot.stages))
    for line in explain(snapshot, dead_letters):
        console.print(f"• {line}")
    if job.result is not None:
        console.print("result:", json.dumps(job.result, indent=2, default=str)[:4000])
    if job.error:
        console.print(f"[red]error:[/] {json.dumps(job.error, default=str)}")
    for task in snapshot.recent_errors:
        last = task.errors[-1] if task.errors else {}
        console.print(f"[yellow]{task.task_id}[/] {task.status.value} attempt {task.attempt}: "
                      f"{last.get('class')} {last.get('type')}: {last.get('message')}")
    if snapshot.events:
        events = Table(title="Timeline (latest)")
        for column in ("at", "event", "stage", "task", "detail"):
            events.add_column(column)
        for e in snapshot.events[-20:]:
            events.add_row(e.at.strftime("%H:%M:%S.%f")[:-3], e.kind, str(e.stage or ""), (e.task_id or "")[-12:],
                           json.dumps(e.detail, default=str)[:80])
        console.print(events)


def watch(
    console: Console, load: Callable[[], JobSnapshot | None], timeout: float, poll_seconds: float = 0.25
) -> JobSnapshot | None:
    """A live bar per stage until the job is terminal or the timeout passes; returns the last snapshot."""
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
    )
    bars: dict[int, TaskID] = {}
    header = Progress(TextColumn("{task.description}"), console=console)
    status_line = header.add_task("submitted")
    deadline = time.monotonic() + timeout
    snapshot = load()
    with Live(Group(header, progress), console=console, refresh_per_second=8, transient=False):
        while snapshot is not None:
            job = snapshot.job
            header.update(status_line, description=f"{job.job_type} {job.job_id[:12]}… {job.status.value}")
            for s in snapshot.stages:
                done = sum(n for k, n in s.counts.items() if k in FINISHED)
                if s.stage not in bars:
                    bars[s.stage] = progress.add_task(f"stage {s.stage} {s.name}", total=max(s.task_count, 1))
                progress.update(bars[s.stage], completed=done if s.task_count else 1)
            if job.status.terminal or time.monotonic() > deadline:
                break
            time.sleep(poll_seconds)
            snapshot = load()
    return snapshot


def run_job(
    runtime: Runtime, console: Console, job_type: str, params: dict[str, Any], concurrency: int, timeout: float
) -> JobSnapshot | None:
    """Submit, run in-process workers with a live bar per stage until the job ends, print the stage summary."""
    submitted = runtime.engine.submit(job_type, params)
    job_id = submitted.job.job_id
    console.print(f"job {job_id} ({'created' if submitted.created else 'already exists'})", highlight=False)
    worker = runtime.worker(concurrency=concurrency)
    worker.start()
    started = time.monotonic()
    try:
        snapshot = watch(console, lambda: runtime.engine.status(job_id), timeout)
    finally:
        worker.stop(timeout=30)
    if snapshot is None:
        return None
    job = snapshot.job
    console.print(stage_table(snapshot.stages, title=f"{job.job_type}: {job.status.value} "
                                                     f"in {time.monotonic() - started:.2f}s"))
    if not job.status.terminal:
        console.print(f"[yellow]not finished after {timeout:.0f}s[/]; see `coremachine status {job_id}`")
    elif job.error:
        console.print(f"[red]error:[/] {json.dumps(job.error, default=str)}")
    return snapshot
