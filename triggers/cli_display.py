"""Rich rendering for the CLI: job status tables, the live per-stage progress bar, status wording."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.diagnosis import explain
from core.models import DeadLetter, JobRecord, JobSnapshot, JobStatus, StageStatus, StageView

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


def job_wording(job: JobRecord) -> str:
    """The status in plain words: "completed", "completed with errors", "failed", ..."""
    return job.status.value.replace("_", " ")


def stage_wording(stage: StageView, job: JobRecord) -> str:
    """A stage's status as people read it. The store marks a stage `cancelled` when its job ends early, and
    `completed` once every task is finished, failed ones included; unless someone cancelled the job, a stage
    with failed tasks failed, and one the failure cut short was stopped."""
    failed = stage.failed or stage.counts.get("failed", 0)
    if stage.status is StageStatus.CANCELLED and job.status is not JobStatus.CANCELLED:
        return "failed" if failed else "stopped"
    if stage.status is StageStatus.COMPLETED and failed:
        return "failed" if job.status is JobStatus.FAILED else "completed with errors"
    return stage.status.value


def job_seconds(job: JobRecord) -> float | None:
    """The job's own run time, from the store: submission to finish."""
    return (job.finished_at - job.created_at).total_seconds() if job.finished_at else None


def stage_table(snapshot: JobSnapshot, title: str | None = "Stages") -> Table:
    """One row per stage, within 80 columns: no vertical rules, numbers never wrap, an "other" column only when
    some task is neither completed nor failed, and a stage name folds only if it is longer than ~25 characters."""
    rows = []
    for s in snapshot.stages:
        other = sum(n for k, n in s.counts.items() if k not in ("completed", "failed"))
        seconds = (s.completed_at - s.started_at).total_seconds() if s.completed_at and s.started_at else None
        rows.append([str(s.stage), s.name, stage_wording(s, snapshot.job), str(s.task_count),
                     str(s.counts.get("completed", 0)), str(s.counts.get("failed", 0)), str(other),
                     f"{seconds:.2f}s" if seconds is not None else "-"])
    columns = ["#", "stage", "status", "tasks", "done", "failed", "other", "time"]
    if not any(row[6] != "0" for row in rows):
        columns.remove("other")
        rows = [row[:6] + row[7:] for row in rows]
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for column in columns:
        if column in ("stage", "status"):
            table.add_column(column, overflow="fold")
        else:
            table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def fitted_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> RenderableType:
    """`rows` as one table if it fits `width` columns without breaking a value; else as several tables, each
    repeating the first column (the row's name) with as many of the others as fit, as wide data frames print."""
    # Each column takes its widest value, a space of padding either side and a one-character rule.
    sizes = [max([len(c), *(len(r[i]) for r in rows)]) + 3 for i, c in enumerate(columns)]
    groups: list[list[int]] = [[]]
    used = sizes[0] + 1
    for i in range(1, len(columns)):
        if groups[-1] and used + sizes[i] > width:
            groups.append([])
            used = sizes[0] + 1
        groups[-1].append(i)
        used += sizes[i]
    tables: list[RenderableType] = []
    for n, group in enumerate(groups):
        table = Table(title=title if n == 0 else None, box=box.SIMPLE_HEAD, title_justify="left")
        for i in (0, *group):
            numeric = all(r[i].replace(".", "", 1).isdigit() or r[i] == "-" for r in rows)
            table.add_column(columns[i], justify="right" if numeric else "left", overflow="fold", no_wrap=i != 0)
        for row in rows:
            table.add_row(*(row[i] for i in (0, *group)))
        tables.append(table)
    return Group(*tables)


def print_status(console: Console, snapshot: JobSnapshot, dead_letters: Sequence[DeadLetter]) -> None:
    job = snapshot.job
    console.print(f"Job {job.job_id}")
    console.print(f"Type: [bold]{job.job_type}[/]. Status: [bold]{job_wording(job)}[/], "
                  f"stage {job.current_stage} of {job.total_stages}.")
    console.print(stage_table(snapshot))
    for line in explain(snapshot, dead_letters):
        console.print(f"• {line}")
    if job.result is not None:
        console.print("Result:", json.dumps(job.result, indent=2, default=str)[:4000], soft_wrap=True)
    if job.error:
        console.print(f"[red]Error:[/] {json.dumps(job.error, default=str)}")
    for task in snapshot.recent_errors:
        last = task.errors[-1] if task.errors else {}
        console.print(f"[yellow]{task.task_id}[/] {task.status.value} attempt {task.attempt}: "
                      f"{last.get('class')} {last.get('type')}: {last.get('message')}")
    if snapshot.events:
        console.print(_timeline(snapshot))


def _timeline(snapshot: JobSnapshot) -> Table:
    events = Table(title="Timeline (latest)", box=box.SIMPLE_HEAD, title_justify="left")
    events.add_column("at", no_wrap=True)
    events.add_column("event", no_wrap=True)
    events.add_column("stage", justify="right", no_wrap=True)
    events.add_column("task", no_wrap=True)
    events.add_column("detail", overflow="fold", ratio=1)
    for e in snapshot.events[-20:]:
        events.add_row(e.at.strftime("%H:%M:%S.%f")[:-3], e.kind, str(e.stage or ""), (e.task_id or "")[-8:],
                       json.dumps(e.detail, default=str)[:120])
    return events


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
    if not console.is_terminal:
        console.line()  # off a terminal the bar's last frame ends without a newline
    return snapshot
