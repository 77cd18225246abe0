"""The PostgreSQL unit of work's base: how each named statement runs on the transaction's cursor (`NamedStatements`),
and the task-row statements (`PostgresTaskStatements`); `store.PostgresUnitOfWork` adds the job, stage, timeline
and outbox ones. Each method runs one named, guarded query of `sql/queries/store.sql` and reports what it changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from core.models import JSON, ClaimedTask, JobStatus, ReceivedMessage, StagePlan, TaskStatus
from core.states import LEASED_TASK, values
from core.task_statements import CountedCompletions, Resend, TakenBack, TaskChange, TaskState
from core.uow import UnitOfWork
from infrastructure.postgres.outbox import COPY_THRESHOLD, PendingWrites, copy_tasks, insert_small_stages_tasks
from infrastructure.postgres.queue import acknowledge_params, lost_locks
from infrastructure.postgres.rows import claimed_from_row, jsonb, resend_from_row, task_change_from_row
from infrastructure.postgres.sql_queries import query

_LEASED = values(LEASED_TASK)


class NamedStatements:
    """One transaction's cursor; every statement is one named query (the round trip is the unit of cost), except
    events and messages, which wait for `flush` (called right before the commit) and go out one statement per kind.
    """

    def __init__(self, cur: psycopg.Cursor[Any], window_seconds: float, statements: int | None = None) -> None:
        self._cur = cur
        self._pending = PendingWrites(window_seconds)
        self._left = statements

    def flush(self) -> None:
        """Write the pending events, messages and settlements (`acknowledge`): nothing in a unit of work reads
        them back before its commit."""
        self._pending.flush(self._cur)

    def _statement(self, name: str) -> psycopg.Cursor[Any]:
        """The cursor for the next statement. A single-statement unit runs in autocommit, where a second statement
        would not be atomic with the first: it is refused."""
        if self._left is not None:
            if self._left == 0:
                raise RuntimeError(f"{name}: a single-statement unit of work ran a second statement")
            self._left -= 1
        return self._cur

    def _buffered(self, name: str) -> psycopg.Cursor[Any]:
        """Events and messages are written by statements of their own: not in a single-statement unit."""
        if self._left is not None:
            raise RuntimeError(f"{name}: a single-statement unit of work cannot write events or messages")
        return self._cur

    def _execute(self, name: str, params: dict[str, Any]) -> psycopg.Cursor[Any]:
        return self._statement(name).execute(query(name), params)

    def _one(self, name: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        return self._execute(name, params).fetchone()

    def _all(self, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self._execute(name, params).fetchall()

    def _changes(self, name: str, params: dict[str, Any]) -> list[TaskChange]:
        return [task_change_from_row(r) for r in self._all(name, params)]


class PostgresTaskStatements(NamedStatements, UnitOfWork):
    """Task rows only."""

    def insert_tasks(self, plans: Sequence[StagePlan]) -> None:
        small = [p for p in plans if len(p.tasks) < COPY_THRESHOLD]
        if any(p.tasks for p in small):
            insert_small_stages_tasks(self._statement("insert_tasks"), small)
        for plan in plans:
            if len(plan.tasks) >= COPY_THRESHOLD:
                copy_tasks(self._statement("copy_tasks"), plan)

    def claim_tasks(
        self, task_ids: Sequence[str], worker_id: str, sources: frozenset[TaskStatus],
        job_sources: frozenset[JobStatus], taken_back: JSON, lease_seconds: float | None,
    ) -> list[ClaimedTask]:
        rows = self._all("claim_tasks", {
            "task_ids": list(task_ids), "worker_id": worker_id, "sources": values(sources),
            "job_sources": values(job_sources), "leased": _LEASED, "taken_back": jsonb(taken_back),
            "lease_seconds": lease_seconds,
        })
        return [claimed_from_row(r) for r in rows]

    def release_claims(
        self, task_ids: Sequence[str], attempts: Sequence[int], sources: frozenset[TaskStatus]
    ) -> list[str]:
        rows = self._all("release_claims", {
            "task_ids": list(task_ids), "attempts": list(attempts), "sources": values(sources),
        })
        return [task_id for (task_id,) in rows]

    def count_early_resends(
        self, task_ids: Sequence[str], attempts: Sequence[int], sources: frozenset[TaskStatus],
        job_sources: frozenset[JobStatus],
    ) -> list[Resend]:
        rows = self._all("count_early_resends", {
            "task_ids": list(task_ids), "attempts": list(attempts), "sources": values(sources),
            "job_sources": values(job_sources),
        })
        return [resend_from_row(r) for r in rows]

    def count_overdue_resends(
        self, overdue_seconds: float, limit: int, sources: frozenset[TaskStatus], job_sources: frozenset[JobStatus]
    ) -> list[Resend]:
        rows = self._all("count_overdue_resends", {
            "overdue": overdue_seconds, "limit": limit, "sources": values(sources),
            "job_sources": values(job_sources),
        })
        return [resend_from_row(r) for r in rows]

    def complete_tasks(
        self, task_ids: Sequence[str], attempts: Sequence[int], results: Sequence[JSON], sources: frozenset[TaskStatus]
    ) -> list[TaskChange]:
        return self._changes("complete_tasks", {
            "task_ids": list(task_ids), "attempts": list(attempts), "results": [jsonb(r) for r in results],
            "sources": values(sources),
        })

    def complete_tasks_counted(
        self, task_ids: Sequence[str], attempts: Sequence[int], results: Sequence[JSON], sources: frozenset[TaskStatus],
        acknowledge: Sequence[ReceivedMessage] = (),
    ) -> CountedCompletions:
        acks = acknowledge_params(acknowledge)
        answer = self._all("complete_tasks_counted", {
            "task_ids": list(task_ids), "attempts": list(attempts), "results": [jsonb(r) for r in results],
            "sources": values(sources), "ack_ids": acks["ids"], "ack_tokens": acks["lock_tokens"],
        })
        rows = [r for r in answer if r[0] is not None]
        lost_locks(len(acknowledge), sum(int(r[5]) for r in answer if r[0] is None))
        return CountedCompletions([task_change_from_row(r[:5]) for r in rows], {(r[1], r[2]): int(r[5]) for r in rows})

    def end_tasks(
        self, status: TaskStatus, task_ids: Sequence[str], attempts: Sequence[int], errors: Sequence[JSON],
        sources: frozenset[TaskStatus],
    ) -> list[TaskChange]:
        return self._changes("end_tasks", {
            "status": status.value, "task_ids": list(task_ids), "attempts": list(attempts),
            "errors": [jsonb(e) for e in errors], "sources": values(sources),
        })

    def schedule_retries(
        self, task_ids: Sequence[str], attempts: Sequence[int], errors: Sequence[JSON], delays: Sequence[float],
        sources: frozenset[TaskStatus],
    ) -> list[TaskChange]:
        return self._changes("schedule_retries", {
            "task_ids": list(task_ids), "attempts": list(attempts), "errors": [jsonb(e) for e in errors],
            "delays": list(delays), "sources": values(sources),
        })

    def task_states(self, task_ids: Sequence[str]) -> list[TaskState]:
        rows = self._all("task_states", {"task_ids": list(task_ids)})
        return [TaskState(task_id, TaskStatus(status), attempt) for task_id, status, attempt in rows]

    def cancel_tasks(self, job_id: str, sources: frozenset[TaskStatus]) -> int:
        return self._execute("cancel_tasks", {"job_id": job_id, "sources": values(sources)}).rowcount

    def requeue_tasks(
        self, job_id: str, stage: int, sources: frozenset[TaskStatus], more_attempts: int
    ) -> list[TaskChange]:
        changes = self._changes("requeue_tasks", {
            "job_id": job_id, "stage": stage, "sources": values(sources), "more_attempts": more_attempts,
        })
        return sorted(changes, key=lambda c: c.task_id)

    def take_back_expired(
        self, grace_seconds: float, limit: int, job_sources: frozenset[JobStatus], taken_back: JSON
    ) -> list[TakenBack]:
        rows = self._all("take_back_expired", {
            "grace": grace_seconds, "limit": limit, "job_sources": values(job_sources), "leased": _LEASED,
            "taken_back": jsonb(taken_back),
        })
        return [TakenBack(task_change_from_row(r[:5]), r[5], r[6]) for r in rows]

    def live_lease_seconds(self, job_id: str) -> float | None:
        row = self._one("live_lease_seconds", {"job_id": job_id, "leased": _LEASED})
        return None if row is None or row[0] is None else float(row[0])

    def renew_task_leases(
        self, task_ids: Sequence[str], attempts: Sequence[int], lease_seconds: float | None
    ) -> dict[str, JobStatus]:
        rows = self._all("renew_task_leases", {
            "task_ids": list(task_ids), "attempts": list(attempts), "leased": _LEASED, "lease_seconds": lease_seconds,
        })
        return {task_id: JobStatus(status) for task_id, status in rows if status is not None}  # None: no job
