"""The unit-of-work port in memory: the same guarded statements as `sql/queries/store.sql`, over dicts.

Nothing here decides; each method is the dict version of one named query, with the guard states core passed.
A unit of work is one transaction under one lock: its writes are staged (see `memory.tables`), the messages
they cause are sent to the transport while the lock is held, and only then are the writes committed — so a
transport that refuses the messages leaves the state untouched, as a rolled-back PostgreSQL transaction would.
For the in-memory pair the outbox is the queue, hence `NullRelay`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, TypeVar, cast

from core.ids import is_job_id, task_id_for
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
from core.ports import Transport
from core.store import Store
from core.task_statements import CountedCompletions
from core.uow import JobMove, LockedJob, MoveJob, StageCount, StageTally, StageTotals, UnitOfWork
from infrastructure.memory.tables import JobControl, StageRow, Transaction, fresh, stored
from infrastructure.memory.task_statements import MemoryTaskStatements
from infrastructure.memory.views import Clock, MemoryViews, public_job

R = TypeVar("R")


class MemoryUnitOfWork(MemoryTaskStatements):
    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    def _job_in(self, job_id: str, sources: frozenset[JobStatus]) -> JobRecord | None:
        job = self._tx.job(job_id)
        return job if job is not None and job.status in sources else None

    def _touch(self, job: JobRecord, **changes: object) -> None:
        self._tx.put_job(replace(job, updated_at=self._tx.now, **changes))  # type: ignore[arg-type]

    # -- jobs ---------------------------------------------------------------------------------------------------
    def insert_job(self, job: NewJob) -> JobRecord | None:
        if not is_job_id(job.job_id) or job.total_stages < 1:
            raise ValueError(f"invalid job row: id {job.job_id!r}, {job.total_stages} stages")
        tx = self._tx
        if tx.job(job.job_id) is not None:
            return None
        record = JobRecord(
            job.job_id, job.job_type, JobStatus.QUEUED, stored(job.parameters), 1, job.total_stages,
            job.failure_policy, None, None, tx.now, tx.now,
        )
        tx.put_job(record)
        tx.put_control(job.job_id, JobControl(round_started_at=tx.now))
        return public_job(record)

    def insert_jobs(self, jobs: Sequence[NewJob]) -> dict[str, JobRecord]:
        inserted: dict[str, JobRecord] = {}
        for job in jobs:
            record = self.insert_job(job)
            if record is not None:
                inserted[job.job_id] = record
        return inserted

    def job(self, job_id: str) -> JobRecord | None:
        job = self._tx.job(job_id)
        return public_job(job) if job else None

    def lock_jobs(self, job_ids: Sequence[str]) -> dict[str, LockedJob]:
        locked: dict[str, LockedJob] = {}
        for job_id in sorted(set(job_ids)):
            job = self._tx.job(job_id)
            if job is None:
                continue
            control = self._tx.control(job_id)
            claim = control.finalize_claim_until
            locked[job_id] = LockedJob(
                job.job_id, job.job_type, job.status, job.current_stage, job.total_stages, job.failure_policy,
                job.round, job.outcome, fresh(job.error), fresh(job.result), job.plan_attempts,
                control.finalize_deferrals, control.finalize_owner,
                None if claim is None else (claim - self._tx.now).total_seconds(),
            )
        return locked

    def read_jobs(self, job_ids: Sequence[str]) -> dict[str, LockedJob]:
        return self.lock_jobs(job_ids)

    def start_job_stages(self, keys: Sequence[tuple[str, int, int]], sources: frozenset[JobStatus]) -> set[str]:
        started = set()
        for job_id, stage, round_number in keys:
            job = self._job_in(job_id, sources)
            if job is not None and job.current_stage == stage and job.round == round_number:
                self._touch(job, status=JobStatus.PROCESSING)
                started.add(job_id)
        return started

    def move_jobs(
        self, moves: Sequence[MoveJob], advance_sources: frozenset[JobStatus],
        finalize_sources: frozenset[JobStatus], fail_sources: frozenset[JobStatus],
    ) -> set[str]:
        moved = set()
        for move in sorted(moves, key=lambda m: m.job_id):
            if move.move is JobMove.ADVANCE:
                job = self._job_in(move.job_id, advance_sources)
                if job is None or job.current_stage != move.stage or job.current_stage >= job.total_stages:
                    continue
                self._touch(job, current_stage=move.stage + 1, plan_attempts=0)
            else:
                assert move.outcome is not None
                sources = fail_sources if move.move is JobMove.FAIL else finalize_sources
                if not self.job_to_finalizing(move.job_id, move.outcome, move.error, sources):
                    continue
                if move.move is JobMove.FINISH:  # the second edge, on the row just moved
                    finalizing = self._tx.job(move.job_id)
                    assert finalizing is not None
                    self._touch(finalizing, status=JobStatus.COMPLETED, result=stored(move.result),
                                finished_at=self._tx.now)
            moved.add(move.job_id)
        return moved

    def job_to_finalizing(
        self, job_id: str, outcome: JobStatus, error: JSON | None, sources: frozenset[JobStatus]
    ) -> bool:
        job = self._job_in(job_id, sources)
        if job is None:
            return False
        self._touch(job, status=JobStatus.FINALIZING, outcome=outcome,
                    error=job.error if job.error is not None else stored(error))
        return True

    def count_plan_attempt(self, job_id: str, stage: int, sources: frozenset[JobStatus]) -> int | None:
        job = self._job_in(job_id, sources)
        if job is None or job.current_stage != stage:
            return None
        self._touch(job, plan_attempts=job.plan_attempts + 1)
        return job.plan_attempts + 1

    def claim_finalize(
        self, job_id: str, owner: str, claim_seconds: float, sources: frozenset[JobStatus]
    ) -> JobRecord | None:
        job = self._job_in(job_id, sources)
        if job is None:
            return None
        control = self._tx.control(job_id)
        free = control.finalize_owner in (None, owner) or (
            control.finalize_claim_until is not None and control.finalize_claim_until < self._tx.now)
        if not free:
            return None
        self._tx.put_control(job_id, replace(
            control, finalize_owner=owner, finalize_claim_until=self._tx.now + timedelta(seconds=claim_seconds)))
        self._touch(job)
        return self.job(job_id)

    def renew_finalize_claim(
        self, job_id: str, owner: str, claim_seconds: float, sources: frozenset[JobStatus]
    ) -> bool:
        job = self._job_in(job_id, sources)
        if job is None or self._tx.control(job_id).finalize_owner != owner:
            return False
        self._tx.put_control(job_id, replace(
            self._tx.control(job_id), finalize_claim_until=self._tx.now + timedelta(seconds=claim_seconds)))
        self._touch(job)
        return True

    def count_finalize_deferral(self, job_id: str, sources: frozenset[JobStatus]) -> int | None:
        if self._job_in(job_id, sources) is None:
            return None
        control = self._tx.control(job_id)
        self._tx.put_control(job_id, replace(control, finalize_deferrals=control.finalize_deferrals + 1))
        return control.finalize_deferrals + 1

    def finish_job(
        self, job_id: str, owner: str, status: JobStatus, result: JSON | None, error: JSON | None,
        sources: frozenset[JobStatus],
    ) -> bool:
        job = self._job_in(job_id, sources)
        control = self._tx.control(job_id) if job else None
        if job is None or control is None or control.finalize_owner != owner:
            return False
        self._touch(job, status=status, result=stored(result), error=stored(error), finished_at=self._tx.now)
        self._tx.put_control(job_id, replace(control, finalize_claim_until=None))
        return True

    def _new_round(self, job_id: str, sources: frozenset[JobStatus], **changes: object) -> int | None:
        job = self._job_in(job_id, sources)
        if job is None:
            return None
        self._touch(job, outcome=None, error=None, result=None, finished_at=None, round=job.round + 1,
                    plan_attempts=0, **changes)
        self._tx.put_control(job_id, replace(
            self._tx.control(job_id), finalize_owner=None, finalize_claim_until=None, round_started_at=self._tx.now))
        return job.round + 1

    def reopen_job(self, job_id: str, sources: frozenset[JobStatus]) -> int | None:
        return self._new_round(job_id, sources, status=JobStatus.PROCESSING)

    def restart_job(self, job_id: str, sources: frozenset[JobStatus]) -> int | None:
        return self._new_round(job_id, sources, status=JobStatus.QUEUED, current_stage=1)

    # -- stages -------------------------------------------------------------------------------------------------
    def lock_stages(self, keys: Sequence[tuple[str, int]]) -> set[tuple[str, int]]:
        return {key for key in keys if self._tx.stage(*key) is not None}

    def insert_stages(self, plans: Sequence[StagePlan]) -> set[tuple[str, int]]:
        tx = self._tx
        inserted = set()
        for plan in plans:
            job_id, stage, count = plan.job_id, plan.stage, len(plan.tasks)
            if tx.stage(job_id, stage) is None:
                ids = tuple(task_id_for(job_id, stage, i) for i in range(count))
                tx.put_stage(StageRow(job_id, stage, plan.stage_name, StageStatus.PROCESSING, count, count, 0, tx.now,
                                      None, ids))
                inserted.add((job_id, stage))
        return inserted

    def decrement_stages(self, counts: Sequence[StageCount]) -> dict[tuple[str, int], int]:
        remaining = {}
        for count in sorted(counts, key=lambda c: (c.job_id, c.stage)):
            left = self._decrement(count.job_id, count.stage, count.done, count.failed)
            if left is not None:
                remaining[count.job_id, count.stage] = left
        return remaining

    def _decrement(self, job_id: str, stage: int, done: int, failed: int) -> int | None:
        row = self._tx.stage(job_id, stage)
        if row is None:
            return None
        row = replace(row, remaining=row.remaining - done, failed=row.failed + failed)
        if row.remaining < 0:  # the CHECK (remaining >= 0) of the stages table
            raise ValueError(f"stage {stage} of job {job_id}: fan-in counter below zero (a task counted twice)")
        self._tx.put_stage(row)
        return row.remaining

    def complete_tasks_counted(
        self, task_ids: Sequence[str], attempts: Sequence[int], results: Sequence[JSON], sources: frozenset[TaskStatus],
        acknowledge: Sequence[ReceivedMessage] = (),
    ) -> CountedCompletions:
        self.acknowledge(acknowledge)
        changes = self.complete_tasks(task_ids, attempts, results, sources)
        done = Counter((c.job_id, c.stage) for c in changes)
        remaining = {key: self._decrement(key[0], key[1], n, 0) for key, n in sorted(done.items())}
        return CountedCompletions(changes, {key: left for key, left in remaining.items() if left is not None})

    def complete_stages(
        self, keys: Sequence[tuple[str, int]], sources: frozenset[StageStatus]
    ) -> dict[tuple[str, int], StageTally]:
        completed = {}
        for job_id, stage in sorted(keys):
            row = self._tx.stage(job_id, stage)
            if row is None or row.status not in sources or row.remaining != 0:
                continue
            self._tx.put_stage(replace(row, status=StageStatus.COMPLETED, completed_at=self._tx.now))
            completed[job_id, stage] = StageTally(row.task_count, row.failed)
        return completed

    def counted_stages(
        self, job_sources: frozenset[JobStatus], sources: frozenset[StageStatus], limit: int
    ) -> list[tuple[str, int]]:
        jobs = sorted((job for job in self._tx.jobs() if job.status in job_sources),
                      key=lambda job: (job.updated_at, job.job_id))
        keys = [(job.job_id, row.stage) for job in jobs for row in sorted(self._tx.stages_of(job),
                key=lambda row: row.stage) if row.status in sources and row.remaining == 0]
        return keys[:limit]

    def stage_totals(self, job_ids: Sequence[str]) -> dict[str, list[StageTotals]]:
        totals = {}
        for job_id in job_ids:
            job = self._tx.job(job_id)
            rows = sorted(self._tx.stages_of(job), key=lambda row: row.stage) if job else []
            totals[job_id] = [StageTotals(row.stage, row.task_count, row.remaining, row.failed) for row in rows]
        return totals

    def cancel_stages(self, job_id: str, sources: frozenset[StageStatus]) -> int:
        job = self._tx.job(job_id)
        rows = [row for row in self._tx.stages_of(job) if row.status in sources] if job else []
        for row in rows:
            self._tx.put_stage(replace(row, status=StageStatus.CANCELLED, completed_at=self._tx.now))
        return len(rows)

    def reopen_stage(
        self, job_id: str, stage: int, sources: frozenset[StageStatus], pending: frozenset[TaskStatus]
    ) -> bool:
        row = self._tx.stage(job_id, stage)
        if row is None or row.status not in sources:
            return False
        tasks = self._tx.tasks_of_stage(row)
        self._tx.put_stage(replace(
            row, status=StageStatus.PROCESSING, completed_at=None,
            remaining=sum(1 for t in tasks if t.status in pending),
            failed=sum(1 for t in tasks if t.status is TaskStatus.FAILED),
        ))
        return True

    def archive_round(self, job_id: str, round_number: int) -> None:
        tx = self._tx
        job = tx.job(job_id)
        if job is None:
            return
        rows = tx.stages_of(job)
        tx.put_round(job_id, round_number, {
            "status": job.status.value, "result": fresh(job.result), "error": fresh(job.error),
            "stages": [{"stage": r.stage, "name": r.name, "status": r.status.value, "tasks": r.task_count,
                        "failed": r.failed} for r in rows],
            "tasks": [t.view() for r in rows for t in tx.tasks_of_stage(r)],
            "started_at": tx.control(job_id).round_started_at, "finished_at": job.finished_at,
        })
        for row in rows:
            tx.delete_stage(row)

    # -- timeline and outbox ------------------------------------------------------------------------------------
    def event(
        self, job_id: str, kind: str, detail: JSON, stage: int | None = None, task_id: str | None = None
    ) -> None:
        self._tx.event(job_id, kind, detail, stage=stage, task_id=task_id)

    def event_if_job_exists(
        self, job_id: str, kind: str, detail: JSON, stage: int | None = None, task_id: str | None = None
    ) -> None:
        if self._tx.job(job_id) is not None:
            self._tx.event(job_id, kind, detail, stage=stage, task_id=task_id)

    def send(self, messages: Sequence[OutgoingMessage], *, fresh: bool = False) -> None:
        self._tx.send(list(messages))

    def acknowledge(self, messages: Sequence[ReceivedMessage]) -> None:
        """Completed through the transport at commit, under the lock, after the messages are sent."""
        self._tx.acknowledged.extend(messages)


class MemoryBackend(MemoryViews):
    """Units of work under one lock, and the read side (`MemoryViews`); thread-safe."""

    holds_queue = True

    def transaction(self, work: Callable[[UnitOfWork], R]) -> R:
        with self._tx() as tx:
            return work(MemoryUnitOfWork(tx))

    def statement(self, work: Callable[[UnitOfWork], R]) -> R:
        """Under the one lock a statement is a transaction like any other, held to what the PostgreSQL adapter
        allows of one: a single call, no events, no messages."""
        return self.transaction(lambda uow: work(cast(UnitOfWork, _OneStatement(uow))))


class _OneStatement:
    """A unit of work that allows one call (see `MemoryBackend.statement`)."""

    _BUFFERED = frozenset({"event", "event_if_job_exists", "send", "acknowledge"})

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow
        self._used = False

    def __getattr__(self, name: str) -> Any:
        if name in self._BUFFERED:
            raise RuntimeError(f"{name}: a single-statement unit of work cannot write events or messages")
        statement = getattr(self._uow, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._used:
                raise RuntimeError(f"{name}: a single-statement unit of work ran a second statement")
            self._used = True
            return statement(*args, **kwargs)

        return call


class InMemoryStore(Store):
    """The engine's store in memory: core's decisions over `MemoryBackend` (unit tests, the in-memory runtime)."""

    def __init__(
        self, transport: Transport, clock: Clock | None = None, *, holds_queue: bool = True, tasks_per_message: int = 1
    ) -> None:
        """`holds_queue`: its commits complete received messages through `transport` (the in-memory pair); False
        leaves settling to the consumer, as with Service Bus."""
        self.memory = MemoryBackend(transport, clock)
        self.memory.holds_queue = holds_queue
        super().__init__(self.memory, tasks_per_message=tasks_per_message)
