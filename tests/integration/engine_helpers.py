"""Helpers for engine tests: run workers until a job ends, read rows the assertions need."""

from __future__ import annotations

from typing import Any

from core.models import JobRecord
from triggers.runtime import Runtime


def run_to_end(runtime: Runtime, job_id: str, timeout: float = 60.0, concurrency: int = 2) -> JobRecord:
    worker = runtime.worker(concurrency=concurrency, wait_seconds=0.2, janitor_interval_seconds=0.5)

    def finished() -> bool:
        job = runtime.store.get_job(job_id)
        return job is not None and job.status.terminal

    assert worker.run_until(finished, timeout=timeout), f"job {job_id} did not finish in {timeout}s"
    job = runtime.store.get_job(job_id)
    assert job is not None
    return job


def rows(runtime: Runtime, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with runtime.database.connection() as conn:
        return conn.execute(sql, params).fetchall()


def event_counts(runtime: Runtime, job_id: str) -> dict[tuple[str, int | None], int]:
    out: dict[tuple[str, int | None], int] = {}
    for kind, stage, count in rows(
        runtime, "SELECT kind, stage, count(*) FROM job_events WHERE job_id = %s GROUP BY kind, stage", job_id
    ):
        out[(kind, stage)] = count
    return out


def task_rows(runtime: Runtime, job_id: str, stage: int | None = None) -> list[tuple[Any, ...]]:
    """(idx, status, attempt, errors, result) per task, in order."""
    if stage is None:
        return rows(runtime, "SELECT stage, idx, status, attempt, errors, result FROM tasks WHERE job_id = %s "
                             "ORDER BY stage, idx", job_id)
    return rows(runtime, "SELECT idx, status, attempt, errors, result FROM tasks WHERE job_id = %s AND stage = %s "
                         "ORDER BY idx", job_id, stage)
