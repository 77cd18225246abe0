"""PostgreSQL side of the admin API: paged job and task listings (operator actions are store units of work)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from core.admin import JobPageCursor, TaskPageCursor
from core.models import JobRecord, JobStatus, TaskView
from infrastructure.postgres.rows import job_from_row, task_view_from_row
from infrastructure.postgres.sql_queries import query
from infrastructure.postgres.store import PostgresStore
from infrastructure.postgres.transactions import transaction


class PostgresAdmin:
    """The `AdminStore` port on PostgreSQL, on the state store's connections."""

    def __init__(self, store: PostgresStore) -> None:
        self._connection = store.connection

    def _tx(self) -> AbstractContextManager[psycopg.Cursor[Any]]:
        return transaction(self._connection)

    def list_jobs(
        self, statuses: Sequence[JobStatus], job_type: str | None, limit: int, after: JobPageCursor | None
    ) -> list[JobRecord]:
        with self._tx() as cur:
            cur.execute(query("admin_list_jobs"), {
                "statuses": [s.value for s in statuses], "job_type": job_type, "limit": limit,
                "after_created": after.created_at if after else None, "after_id": after.job_id if after else None,
            })
            return [job_from_row(r) for r in cur.fetchall()]

    def list_tasks(
        self, job_id: str, stage: int | None, statuses: Sequence[str], limit: int, after: TaskPageCursor | None
    ) -> list[TaskView]:
        with self._tx() as cur:
            cur.execute(query("admin_list_tasks"), {
                "job_id": job_id, "stage": stage, "statuses": list(statuses), "limit": limit,
                "after_stage": after.stage if after else None, "after_idx": after.index if after else None,
            })
            views = [task_view_from_row(r) for r in cur.fetchall()]
        return [v for v in views if v is not None]
