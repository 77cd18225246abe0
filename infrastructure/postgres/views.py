"""Read side of the PostgreSQL store: the job, stage results, task counts per stage, the snapshot behind `status`,
stuck jobs.

Counts and the snapshot read the stage counters (see `core.progress`), never a job's tasks: a status costs the
same for a 4-task job and a 1,000,000-task one."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from core.models import JobRecord, JobSnapshot, JobStatus, TaskResultRow
from core.progress import StageCounters, task_counts
from core.states import values
from infrastructure.postgres.rows import (
    event_from_row,
    job_from_row,
    result_from_row,
    stage_view_from_row,
    task_view_from_row,
)
from infrastructure.postgres.sql_queries import query
from infrastructure.postgres.transactions import ConnectionFactory, single_read, translated


class StoreViews:
    def __init__(self, connection: ConnectionFactory) -> None:
        self._connection = connection

    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection[Any]]:
        with translated(), self._connection() as conn:
            yield conn

    def get_jobs(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        if len(job_ids) == 1:  # the common read, on its own plan
            with single_read(self._connection) as conn:
                row = conn.execute(query("select_job"), {"job_id": job_ids[0]}).fetchone()
            return {} if row is None else {job_ids[0]: job_from_row(row)}
        with single_read(self._connection) as conn:
            rows = conn.execute(query("select_jobs"), {"job_ids": list(job_ids)}).fetchall()
        return {job.job_id: job for job in map(job_from_row, rows)}

    def job_statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        with single_read(self._connection) as conn:
            rows = conn.execute(query("job_statuses"), {"job_ids": list(job_ids)}).fetchall()
        return {job_id: JobStatus(status) for job_id, status in rows}

    def stage_results(
        self, stages: Sequence[tuple[str, int]], max_rows: int | None = None
    ) -> dict[tuple[str, int], list[TaskResultRow]] | None:
        results: dict[tuple[str, int], list[TaskResultRow]] = {key: [] for key in stages}
        limit = None if max_rows is None else max_rows + 1
        if len(results) == 1:
            [(job_id, stage)] = results
            with single_read(self._connection) as conn:
                rows = conn.execute(query("stage_results"), {"job_id": job_id, "stage": stage, "limit": limit})
                found = [(job_id, stage, *row) for row in rows.fetchall()]
        elif results:
            with single_read(self._connection) as conn:
                found = conn.execute(query("stages_results"), {
                    "job_ids": [job_id for job_id, _ in results], "stages": [stage for _, stage in results],
                    "limit": limit,
                }).fetchall()
        else:
            found = []
        if max_rows is not None and len(found) > max_rows:
            return None
        for job_id, stage, *result in found:
            results[job_id, stage].append(result_from_row(tuple(result)))
        return results

    def stuck_jobs(self, older_than_seconds: float, limit: int, open_statuses: frozenset[JobStatus]) -> list[JobRecord]:
        with single_read(self._connection) as conn:
            rows = conn.execute(query("stuck_jobs"), {
                "older": older_than_seconds, "limit": limit, "statuses": values(open_statuses),
            }).fetchall()
        return [job_from_row(r) for r in rows]

    def stage_counts(self, job_id: str) -> dict[int, dict[str, int]]:
        with single_read(self._connection) as conn:
            rows = conn.execute(query("stage_progress"), {"job_id": job_id}).fetchall()
        return _counts(rows)

    def snapshot(self, job_id: str, events: int = 50) -> JobSnapshot | None:
        params = {"job_id": job_id, "limit": events}
        with self._read() as conn:
            # One round trip: the six reads go out together (pipeline mode) in one transaction, one snapshot.
            with conn.pipeline():
                job_cur = conn.execute(query("select_job"), params)
                stage_cur = conn.execute(query("stage_progress"), params)
                event_cur = conn.execute(query("snapshot_events"), params)
                oldest_cur = conn.execute(query("oldest_running_task"), params)
                retry_cur = conn.execute(query("next_retry_task"), params)
                errors_cur = conn.execute(query("recent_error_tasks"), {"job_id": job_id, "limit": 5})
            job_row = job_cur.fetchone()
            if job_row is None:
                return None
            stage_rows, event_rows = stage_cur.fetchall(), event_cur.fetchall()
            oldest, next_retry, errors = oldest_cur.fetchone(), retry_cur.fetchone(), errors_cur.fetchall()
        counts = _counts(stage_rows)
        return JobSnapshot(
            job=job_from_row(job_row),
            stages=[stage_view_from_row(r[:8], counts.get(r[0], {})) for r in stage_rows],
            events=[event_from_row(r) for r in event_rows],
            oldest_running=task_view_from_row(oldest),
            next_retry=task_view_from_row(next_retry),
            recent_errors=[v for v in (task_view_from_row(r) for r in errors) if v is not None],
        )


def _counts(progress_rows: list[tuple[Any, ...]]) -> dict[int, dict[str, int]]:
    """Counts by status per stage from `stage_progress` rows (every row carries the job's status)."""
    if not progress_rows:
        return {}
    job_status = JobStatus(progress_rows[0][10])
    return task_counts(job_status, [
        StageCounters(stage=r[0], task_count=r[3], remaining=r[4], failed=r[5], running=r[8], retry_scheduled=r[9])
        for r in progress_rows
    ])
