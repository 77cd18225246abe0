"""The `PruneStore` of core/retention.py on PostgreSQL: guarded deletes in short transactions."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import psycopg

from core.models import JobStatus
from infrastructure.postgres.sql_queries import query
from infrastructure.postgres.transactions import ConnectionFactory, transaction


class PostgresPruner:
    """Deletes finished jobs and everything that belongs to them, a bounded chunk per transaction."""

    def __init__(self, connection: ConnectionFactory) -> None:
        self._connection = connection

    def _tx(self) -> AbstractContextManager[psycopg.Cursor[Any]]:
        return transaction(self._connection)

    def count_prunable(self, status: JobStatus, before: datetime) -> int:
        with self._tx() as cur:
            row = cur.execute(query("prune_count"), {"status": status.value, "before": before}).fetchone()
        return int(row[0]) if row else 0

    def prunable_jobs(self, status: JobStatus, before: datetime, limit: int) -> list[str]:
        with self._tx() as cur:
            cur.execute(query("prune_candidates"), {"status": status.value, "before": before, "limit": limit})
            return [r[0] for r in cur.fetchall()]

    def prune_rows(self, job_ids: Sequence[str], status: JobStatus, before: datetime, limit: int) -> int:
        with self._tx() as cur:
            eligible = self._guard(cur, job_ids, status, before)
            if not eligible:
                return 0
            deleted = 0
            for name in ("prune_tasks", "prune_task_history", "prune_events"):
                if deleted < limit:
                    cur.execute(query(name), {"job_ids": eligible, "limit": limit - deleted})
                    deleted += cur.rowcount
            return deleted

    def prune_jobs(self, job_ids: Sequence[str], status: JobStatus, before: datetime) -> list[str]:
        with self._tx() as cur:
            eligible = self._guard(cur, job_ids, status, before)
            if not eligible:
                return []
            cur.execute(query("prune_settled_messages"), {"job_ids": eligible, "before": before})
            cur.execute(query("prune_dead_letters"), {"job_ids": eligible})
            cur.execute(query("prune_left_tasks"), {"job_ids": eligible})
            cur.execute(query("prune_jobs"), {"job_ids": eligible, "status": status.value, "before": before})
            return [r[0] for r in cur.fetchall()]

    @staticmethod
    def _guard(cur: psycopg.Cursor[Any], job_ids: Sequence[str], status: JobStatus, before: datetime) -> list[str]:
        cur.execute(query("prune_guard"), {"job_ids": list(job_ids), "status": status.value, "before": before})
        return [r[0] for r in cur.fetchall()]
