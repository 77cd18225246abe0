"""PostgreSQL side of the admin API: paged job and task listings and the operator's retry of a failed job."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import psycopg

from core.admin import JobPageCursor, NothingToRetry, RetryOutcome, RetryPlan, TaskPageCursor
from core.errors import StoreUnavailable
from core.ids import round_message_id
from core.messages import stage_message, task_message
from core.models import JobRecord, JobStatus, OutgoingMessage, TaskView
from infrastructure.postgres.rows import job_from_row, task_view_from_row
from infrastructure.postgres.sql_queries import query
from infrastructure.postgres.store import PostgresStore


class PostgresAdmin:
    """The `AdminStore` port on PostgreSQL, beside the state store whose connections and outbox write it shares:
    messages go into `queue_messages` in the same transaction, with the same duplicate detection."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._connection = store._connection

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[Any]]:
        try:
            with self._connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"state store unavailable: {exc}") from exc

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

    def retry_failed_job(self, plan: RetryPlan) -> RetryOutcome | None:
        with self._tx() as cur:
            cur.execute(query("admin_retry_job"), {
                "job_id": plan.job_id, "stage": plan.stage, "sources": [s.value for s in plan.sources],
            })
            row = cur.fetchone()
            if row is None:
                return None
            job_type, round_number, previous_error = row
            cur.execute(query("admin_lock_stage"), {"job_id": plan.job_id, "stage": plan.stage})
            if cur.fetchone() is None:
                self._send(cur, [stage_message(plan.job_id, job_type, plan.stage, round_number)])
                outcome = RetryOutcome(plan.job_id, plan.stage, 0, True, round_number)
            else:
                outcome = self._requeue(cur, plan, job_type, round_number)
            self._store._event(cur, plan.job_id, "job_retried", {
                "round": round_number, "tasks_requeued": outcome.tasks_requeued,
                "stage_resent": outcome.stage_resent, "previous_error": previous_error,
            }, stage=plan.stage)
            return outcome

    def _requeue(self, cur: psycopg.Cursor[Any], plan: RetryPlan, job_type: str, round_number: int) -> RetryOutcome:
        cur.execute(query("admin_requeue_stage_tasks"), {
            "job_id": plan.job_id, "stage": plan.stage, "stage_max": plan.stage_max_attempts,
        })
        rows = cur.fetchall()
        if not rows:
            raise NothingToRetry(f"stage {plan.stage} of job {plan.job_id} has no failed or cancelled task to retry")
        cur.execute(query("admin_reopen_stage"), {"job_id": plan.job_id, "stage": plan.stage})
        messages = [
            _fresh(task_message(task_id, plan.job_id, job_type, plan.stage, task_type, attempt + 1), round_number)
            for task_id, task_type, attempt, _was in sorted(rows)
        ]
        self._send(cur, messages)
        return RetryOutcome(plan.job_id, plan.stage, len(rows), False, round_number)

    def _send(self, cur: psycopg.Cursor[Any], messages: list[OutgoingMessage]) -> None:
        self._store._send(cur, messages)


def _fresh(message: OutgoingMessage, round_number: int) -> OutgoingMessage:
    return replace(message, message_id=round_message_id(message.message_id, round_number))
