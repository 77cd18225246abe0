"""PostgreSQL state store: the unit-of-work port as a thin executor of named queries (`sql/queries/store.sql`).

Nothing here decides: each method runs one named, guarded statement with the guard states core passed, and
reports what it changed. Messages go into `queue_messages` in the same transaction (the outbox is the queue);
events and messages are written together right before the commit (`outbox.PendingWrites`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import psycopg

from core.models import (
    JSON,
    JobRecord,
    JobStatus,
    NewJob,
    OutgoingMessage,
    ReceivedMessage,
    StagePlan,
    StageStatus,
    TaskStatus,
)
from core.states import values
from core.store import Store
from core.uow import LockedJob, MoveJob, StageCount, StageTally, StageTotals, UnitOfWork
from infrastructure.postgres.rows import job_from_row, jsonb, locked_job_from_row
from infrastructure.postgres.task_statements import PostgresTaskStatements
from infrastructure.postgres.transactions import RETRYABLE, ConnectionFactory, retried, statement, transaction
from infrastructure.postgres.views import StoreViews

R = TypeVar("R")


class PostgresUnitOfWork(PostgresTaskStatements):
    """The whole unit of work: the task statements (`task_statements`), and the job, stage, timeline and outbox
    ones here."""

    # -- jobs ---------------------------------------------------------------------------------------------------
    def insert_job(self, job: NewJob) -> JobRecord | None:
        return self.insert_jobs([job]).get(job.job_id)

    def insert_jobs(self, jobs: Sequence[NewJob]) -> dict[str, JobRecord]:
        rows = self._all("insert_jobs", {
            "job_ids": [j.job_id for j in jobs], "job_types": [j.job_type for j in jobs],
            "parameters": [jsonb(j.parameters) for j in jobs], "total_stages": [j.total_stages for j in jobs],
            "failure_policies": [j.failure_policy.value for j in jobs],
        })
        return {job.job_id: job for job in map(job_from_row, rows)}

    def job(self, job_id: str) -> JobRecord | None:
        row = self._one("select_job", {"job_id": job_id})
        return job_from_row(row) if row else None

    def lock_jobs(self, job_ids: Sequence[str]) -> dict[str, LockedJob]:
        rows = self._all("lock_jobs", {"job_ids": list(job_ids)})
        return {job.job_id: job for job in map(locked_job_from_row, rows)}

    def read_jobs(self, job_ids: Sequence[str]) -> dict[str, LockedJob]:
        rows = self._all("read_jobs", {"job_ids": list(job_ids)})
        return {job.job_id: job for job in map(locked_job_from_row, rows)}

    def start_job_stages(self, keys: Sequence[tuple[str, int, int]], sources: frozenset[JobStatus]) -> set[str]:
        rows = self._all("start_job_stages", {
            "job_ids": [k[0] for k in keys], "stages": [k[1] for k in keys], "rounds": [k[2] for k in keys],
            "sources": values(sources),
        })
        return {job_id for (job_id,) in rows}

    def move_jobs(
        self, moves: Sequence[MoveJob], advance_sources: frozenset[JobStatus],
        finalize_sources: frozenset[JobStatus], fail_sources: frozenset[JobStatus],
    ) -> set[str]:
        rows = self._all("move_jobs", {
            "job_ids": [m.job_id for m in moves], "stages": [m.stage for m in moves],
            "moves": [m.move.value for m in moves],
            "outcomes": [None if m.outcome is None else m.outcome.value for m in moves],
            "results": [jsonb(m.result) for m in moves], "errors": [jsonb(m.error) for m in moves],
            "advance_sources": values(advance_sources), "finalize_sources": values(finalize_sources),
            "fail_sources": values(fail_sources),
        })
        return {job_id for (job_id,) in rows}

    def job_to_finalizing(
        self, job_id: str, outcome: JobStatus, error: JSON | None, sources: frozenset[JobStatus]
    ) -> bool:
        return self._one("job_to_finalizing", {
            "job_id": job_id, "outcome": outcome.value, "error": jsonb(error), "sources": values(sources),
        }) is not None

    def count_plan_attempt(self, job_id: str, stage: int, sources: frozenset[JobStatus]) -> int | None:
        row = self._one("count_plan_attempt", {"job_id": job_id, "stage": stage, "sources": values(sources)})
        return None if row is None else int(row[0])

    def claim_finalize(
        self, job_id: str, owner: str, claim_seconds: float, sources: frozenset[JobStatus]
    ) -> JobRecord | None:
        row = self._one("claim_finalize", {
            "job_id": job_id, "owner": owner, "claim_seconds": claim_seconds, "sources": values(sources),
        })
        return job_from_row(row) if row else None

    def renew_finalize_claim(
        self, job_id: str, owner: str, claim_seconds: float, sources: frozenset[JobStatus]
    ) -> bool:
        return self._one("renew_finalize_claim", {
            "job_id": job_id, "owner": owner, "claim_seconds": claim_seconds, "sources": values(sources),
        }) is not None

    def count_finalize_deferral(self, job_id: str, sources: frozenset[JobStatus]) -> int | None:
        row = self._one("count_finalize_deferral", {"job_id": job_id, "sources": values(sources)})
        return None if row is None else int(row[0])

    def finish_job(
        self, job_id: str, owner: str, status: JobStatus, result: JSON | None, error: JSON | None,
        sources: frozenset[JobStatus],
    ) -> bool:
        return self._one("finish_job", {
            "job_id": job_id, "owner": owner, "status": status.value, "result": jsonb(result), "error": jsonb(error),
            "sources": values(sources),
        }) is not None

    def reopen_job(self, job_id: str, sources: frozenset[JobStatus]) -> int | None:
        row = self._one("reopen_job", {"job_id": job_id, "sources": values(sources)})
        return None if row is None else int(row[0])

    def restart_job(self, job_id: str, sources: frozenset[JobStatus]) -> int | None:
        row = self._one("restart_job", {"job_id": job_id, "sources": values(sources)})
        return None if row is None else int(row[0])

    # -- stages -------------------------------------------------------------------------------------------------
    def lock_stages(self, keys: Sequence[tuple[str, int]]) -> set[tuple[str, int]]:
        if not keys:
            return set()
        rows = self._all("lock_stages", {"job_ids": [k[0] for k in keys], "stages": [k[1] for k in keys]})
        return {(job_id, stage) for job_id, stage in rows}

    def insert_stages(self, plans: Sequence[StagePlan]) -> set[tuple[str, int]]:
        rows = self._all("insert_stages", {
            "job_ids": [p.job_id for p in plans], "stages": [p.stage for p in plans],
            "names": [p.stage_name for p in plans], "task_counts": [len(p.tasks) for p in plans],
        })
        return {(job_id, stage) for job_id, stage in rows}

    def decrement_stages(self, counts: Sequence[StageCount]) -> dict[tuple[str, int], int]:
        rows = self._all("decrement_stages", {
            "job_ids": [c.job_id for c in counts], "stages": [c.stage for c in counts],
            "done": [c.done for c in counts], "failed": [c.failed for c in counts],
        })
        return {(job_id, stage): int(remaining) for job_id, stage, remaining in rows}

    def complete_stages(
        self, keys: Sequence[tuple[str, int]], sources: frozenset[StageStatus]
    ) -> dict[tuple[str, int], StageTally]:
        rows = self._all("complete_stages", {
            "job_ids": [k[0] for k in keys], "stages": [k[1] for k in keys], "sources": values(sources),
        })
        return {(job_id, stage): StageTally(count, failed) for job_id, stage, count, failed in rows}

    def counted_stages(
        self, job_sources: frozenset[JobStatus], sources: frozenset[StageStatus], limit: int
    ) -> list[tuple[str, int]]:
        rows = self._all("counted_stages", {
            "job_sources": values(job_sources), "stage_sources": values(sources), "limit": limit,
        })
        return [(job_id, stage) for job_id, stage in rows]

    def stage_totals(self, job_ids: Sequence[str]) -> dict[str, list[StageTotals]]:
        totals: dict[str, list[StageTotals]] = {job_id: [] for job_id in job_ids}
        for job_id, *row in self._all("stage_totals", {"job_ids": list(job_ids)}):
            totals[job_id].append(StageTotals(*row))
        return totals

    def cancel_stages(self, job_id: str, sources: frozenset[StageStatus]) -> int:
        return self._execute("cancel_stages", {"job_id": job_id, "sources": values(sources)}).rowcount

    def reopen_stage(
        self, job_id: str, stage: int, sources: frozenset[StageStatus], pending: frozenset[TaskStatus]
    ) -> bool:
        return self._one("reopen_stage", {
            "job_id": job_id, "stage": stage, "sources": values(sources), "pending": values(pending),
        }) is not None

    def archive_round(self, job_id: str, round_number: int) -> None:
        params = {"job_id": job_id, "round": round_number}
        for name in ("archive_round_job", "archive_round_tasks", "delete_round_tasks", "delete_round_stages"):
            self._execute(name, params)

    # -- timeline and outbox ------------------------------------------------------------------------------------
    def event(
        self, job_id: str, kind: str, detail: JSON, stage: int | None = None, task_id: str | None = None
    ) -> None:
        self._buffered("event")
        self._pending.event(job_id, kind, detail, stage, task_id, if_job_exists=False)

    def event_if_job_exists(
        self, job_id: str, kind: str, detail: JSON, stage: int | None = None, task_id: str | None = None
    ) -> None:
        self._buffered("event")
        self._pending.event(job_id, kind, detail, stage, task_id, if_job_exists=True)

    def send(self, messages: Sequence[OutgoingMessage], *, fresh: bool = False) -> None:
        """The queue's own send at `flush` (duplicate detection as for any sender); a large new stage's messages
        are copied at once."""
        if messages:
            self._pending.send(self._buffered("send"), messages, fresh=fresh)

    def acknowledge(self, messages: Sequence[ReceivedMessage]) -> None:
        """`queue_acknowledge` at `flush`, after the events and messages."""
        if messages:
            self._buffered("acknowledge")
            self._pending.acknowledge(messages)


class PostgresBackend(StoreViews):
    """Units of work on a connection pool (one transaction each, retried on deadlock or serialization failure),
    and the read side (`StoreViews`)."""

    def __init__(
        self, connection: ConnectionFactory, duplicate_window_seconds: float = 600.0, *, holds_queue: bool = False
    ) -> None:
        """`holds_queue`: the transport is the PostgreSQL queue in this database (`UnitOfWork.acknowledge`)."""
        super().__init__(connection)
        self._window = duplicate_window_seconds
        self.holds_queue = holds_queue

    def _tx(self) -> AbstractContextManager[psycopg.Cursor[Any]]:
        return transaction(self._connection, passthrough=RETRYABLE)

    def transaction(self, work: Callable[[UnitOfWork], R]) -> R:
        return retried(lambda: self._run(self._tx(), work, statements=None))

    def statement(self, work: Callable[[UnitOfWork], R]) -> R:
        return retried(lambda: self._run(statement(self._connection, RETRYABLE), work, statements=1))

    def _run(
        self, cursor: AbstractContextManager[psycopg.Cursor[Any]], work: Callable[[UnitOfWork], R],
        statements: int | None,
    ) -> R:
        with cursor as cur:
            uow = PostgresUnitOfWork(cur, self._window, statements)
            result = work(uow)
            uow.flush()
            return result


class PostgresStore(Store):
    """The engine's store on PostgreSQL: core's decisions over `PostgresBackend`."""

    def __init__(
        self, connection: ConnectionFactory, duplicate_window_seconds: float = 600.0, *, holds_queue: bool = False,
        tasks_per_message: int = 1,
    ) -> None:
        super().__init__(PostgresBackend(connection, duplicate_window_seconds, holds_queue=holds_queue),
                         tasks_per_message=tasks_per_message)
        self.connection = connection
