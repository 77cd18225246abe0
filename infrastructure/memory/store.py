"""The unit-of-work port in memory: the same guarded statements as `sql/queries/store.sql`, over dicts.

Nothing here decides; each method is the dict version of one named query, with the guard states core passed.
A unit of work is one transaction under one lock: its writes are staged (see `memory.tables`), the messages
they cause are sent to the transport while the lock is held, and only then are the writes committed — so a
transport that refuses the messages leaves the state untouched, as a rolled-back PostgreSQL transaction would.
For the in-memory pair the outbox is the queue, hence `NullRelay`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import TypeVar

from core.ids import is_job_id, task_id_for
from core.models import (
    JSON,
    ClaimedTask,
    JobRecord,
    JobStatus,
    NewJob,
    OutgoingMessage,
    StageStatus,
    TaskSpec,
    TaskStatus,
)
from core.ports import Transport
from core.states import LEASED_TASK
from core.store import Store
from core.uow import LockedJob, Resend, StageTally, TakenBack, TaskChange, TaskState, UnitOfWork
from infrastructure.memory.tables import JobControl, StageRow, TaskRow, Transaction, fresh, stored
from infrastructure.memory.views import Clock, MemoryViews, public_job

R = TypeVar("R")


def _change(task: TaskRow) -> TaskChange:
    return TaskChange(task.task_id, task.job_id, task.stage, task.task_type, task.attempt)


class MemoryUnitOfWork(UnitOfWork):
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

    def start_job_stage(self, job_id: str, stage: int, sources: frozenset[JobStatus]) -> bool:
        job = self._job_in(job_id, sources)
        if job is None or job.current_stage != stage:
            return False
        self._touch(job, status=JobStatus.PROCESSING)
        return True

    def advance_job(self, job_id: str, stage: int, sources: frozenset[JobStatus]) -> bool:
        job = self._job_in(job_id, sources)
        if job is None or job.current_stage != stage or job.current_stage >= job.total_stages:
            return False
        self._touch(job, current_stage=stage + 1, plan_attempts=0)
        return True

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

    def claim_finalize(self, job_id: str, owner: str, claim_seconds: float, sources: frozenset[JobStatus]) -> bool:
        job = self._job_in(job_id, sources)
        if job is None:
            return False
        control = self._tx.control(job_id)
        free = control.finalize_owner in (None, owner) or (
            control.finalize_claim_until is not None and control.finalize_claim_until < self._tx.now)
        if not free:
            return False
        self._tx.put_control(job_id, replace(
            control, finalize_owner=owner, finalize_claim_until=self._tx.now + timedelta(seconds=claim_seconds)))
        self._touch(job)
        return True

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

    def insert_stage(self, job_id: str, stage: int, name: str, task_count: int) -> bool:
        tx = self._tx
        if tx.stage(job_id, stage) is not None:
            return False
        ids = tuple(task_id_for(job_id, stage, i) for i in range(task_count))
        tx.put_stage(StageRow(job_id, stage, name, StageStatus.PROCESSING, task_count, task_count, 0, tx.now, None,
                              ids))
        return True

    def decrement_stage(self, job_id: str, stage: int, done: int, failed: int) -> int | None:
        row = self._tx.stage(job_id, stage)
        if row is None:
            return None
        row = replace(row, remaining=row.remaining - done, failed=row.failed + failed)
        if row.remaining < 0:  # the CHECK (remaining >= 0) of the stages table
            raise ValueError(f"stage {stage} of job {job_id}: fan-in counter below zero (a task counted twice)")
        self._tx.put_stage(row)
        return row.remaining

    def complete_stage(self, job_id: str, stage: int, sources: frozenset[StageStatus]) -> StageTally | None:
        row = self._tx.stage(job_id, stage)
        if row is None or row.status not in sources:
            return None
        self._tx.put_stage(replace(row, status=StageStatus.COMPLETED, completed_at=self._tx.now))
        return StageTally(row.task_count, row.failed)

    def failed_tasks(self, job_id: str) -> int:
        job = self._tx.job(job_id)
        return sum(row.failed for row in self._tx.stages_of(job)) if job else 0

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

    # -- tasks --------------------------------------------------------------------------------------------------
    def insert_tasks(
        self, job_id: str, stage: int, tasks: Sequence[TaskSpec], max_attempts: int, timeout_seconds: float
    ) -> None:
        if max_attempts < 1 or not timeout_seconds > 0:  # the CHECK constraints of the tasks table
            raise ValueError(f"invalid task limits: {max_attempts} attempts, {timeout_seconds}s")
        tx = self._tx
        for index, spec in enumerate(tasks):
            tx.put_task(TaskRow(
                task_id_for(job_id, stage, index), job_id, stage, index, spec.task_type, TaskStatus.QUEUED,
                stored(spec.parameters), max_attempts, timeout_seconds, tx.now, tx.now,
            ))

    def claim_tasks(
        self, task_ids: Sequence[str], worker_id: str, sources: frozenset[TaskStatus],
        job_sources: frozenset[JobStatus], taken_back: JSON, lease_seconds: float | None,
    ) -> list[ClaimedTask]:
        tx = self._tx
        claimed: list[ClaimedTask] = []
        for task_id in sorted(set(task_ids)):
            task = tx.task(task_id)
            job = tx.job(task.job_id) if task else None
            if task is None or job is None or job.status not in job_sources:
                continue
            due = task.status in sources and (task.not_before is None or task.not_before <= tx.now)
            expired = task.status in LEASED_TASK and task.lease_until is not None and task.lease_until < tx.now
            if not (due or expired):
                continue
            errors = (*task.errors, self._taken_back(task, taken_back)) if expired else task.errors
            task = replace(
                task, status=TaskStatus.RUNNING, attempt=task.attempt + 1, claimed_by=worker_id, errors=errors,
                updated_at=tx.now, lease_until=tx.now + timedelta(seconds=_lease(lease_seconds, task.timeout_seconds)),
            )
            tx.put_task(task)
            claimed.append(ClaimedTask(
                task.task_id, task.job_id, job.job_type, task.stage, task.index, task.task_type,
                fresh(task.parameters), task.attempt, task.max_attempts, task.timeout_seconds, job.failure_policy,
                job.round,
            ))
        return claimed

    def release_claims(
        self, task_ids: Sequence[str], attempts: Sequence[int], sources: frozenset[TaskStatus]
    ) -> list[str]:
        released = []
        for task_id, attempt in zip(task_ids, attempts, strict=True):
            task = self._at_attempt(task_id, attempt, sources)
            if task is not None:
                self._tx.put_task(replace(task, status=TaskStatus.QUEUED, attempt=task.attempt - 1, lease_until=None,
                                          claimed_by=None, updated_at=self._tx.now))
                released.append(task_id)
        return released

    def count_early_resends(
        self, task_ids: Sequence[str], attempts: Sequence[int], sources: frozenset[TaskStatus],
        job_sources: frozenset[JobStatus],
    ) -> list[Resend]:
        tx = self._tx
        resends = []
        for task_id, attempt in zip(task_ids, attempts, strict=True):
            task = tx.task(task_id)
            job = tx.job(task.job_id) if task else None
            if task is None or job is None or job.status not in job_sources or task.status not in sources:
                continue
            if task.attempt + 1 != attempt or task.not_before is None or task.not_before <= tx.now:
                continue
            resends.append(self._resend(task, job, (task.not_before - tx.now).total_seconds()))
        return resends

    def count_overdue_resends(
        self, overdue_seconds: float, limit: int, sources: frozenset[TaskStatus], job_sources: frozenset[JobStatus]
    ) -> list[Resend]:
        tx = self._tx
        cutoff = tx.now - timedelta(seconds=overdue_seconds)
        overdue = sorted(
            (t for t in tx.all_tasks() if t.status in sources and t.not_before is not None and t.not_before < cutoff),
            key=lambda t: (t.not_before, t.task_id),
        )
        resends: list[Resend] = []
        for task in overdue:
            job = tx.job(task.job_id)
            if job is None or job.status not in job_sources or len(resends) >= limit:
                continue
            resends.append(self._resend(replace(task, not_before=tx.now, updated_at=tx.now), job, 0.0))
        return resends

    def _resend(self, task: TaskRow, job: JobRecord, delay: float) -> Resend:
        task = replace(task, resend_count=task.resend_count + 1)
        self._tx.put_task(task)
        return Resend(_change(task), job.job_type, job.round, task.resend_count, delay)

    def _taken_back(self, task: TaskRow, taken_back: JSON) -> JSON:
        error: JSON = stored({**taken_back, "attempt": task.attempt, "where": task.claimed_by,
                              "at": self._tx.now.isoformat()})
        return error

    def _at_attempt(self, task_id: str, attempt: int, sources: frozenset[TaskStatus]) -> TaskRow | None:
        task = self._tx.task(task_id)
        return task if task is not None and task.status in sources and task.attempt == attempt else None

    def complete_tasks(
        self, task_ids: Sequence[str], attempts: Sequence[int], results: Sequence[JSON], sources: frozenset[TaskStatus]
    ) -> list[TaskChange]:
        changes = []
        for task_id, attempt, result in zip(task_ids, attempts, results, strict=True):
            task = self._at_attempt(task_id, attempt, sources)
            if task is not None:
                self._tx.put_task(replace(task, status=TaskStatus.COMPLETED, result=stored(result), lease_until=None,
                                          finished_at=self._tx.now, updated_at=self._tx.now))
                changes.append(_change(task))
        return changes

    def end_tasks(
        self, status: TaskStatus, task_ids: Sequence[str], attempts: Sequence[int], errors: Sequence[JSON],
        sources: frozenset[TaskStatus],
    ) -> list[TaskChange]:
        changes = []
        for task_id, attempt, error in zip(task_ids, attempts, errors, strict=True):
            task = self._at_attempt(task_id, attempt, sources)
            if task is not None:
                self._tx.put_task(replace(task, status=status, errors=(*task.errors, stored(error)), lease_until=None,
                                          finished_at=self._tx.now, updated_at=self._tx.now))
                changes.append(_change(task))
        return changes

    def schedule_retries(
        self, task_ids: Sequence[str], attempts: Sequence[int], errors: Sequence[JSON], delays: Sequence[float],
        sources: frozenset[TaskStatus],
    ) -> list[TaskChange]:
        changes = []
        for task_id, attempt, error, delay in zip(task_ids, attempts, errors, delays, strict=True):
            task = self._at_attempt(task_id, attempt, sources)
            if task is not None:
                self._tx.put_task(replace(
                    task, status=TaskStatus.RETRY_SCHEDULED, errors=(*task.errors, stored(error)), lease_until=None,
                    not_before=self._tx.now + timedelta(seconds=delay), updated_at=self._tx.now,
                ))
                changes.append(_change(task))
        return changes

    def task_states(self, task_ids: Sequence[str]) -> list[TaskState]:
        tasks = (self._tx.task(task_id) for task_id in task_ids)
        return [TaskState(t.task_id, t.status, t.attempt) for t in tasks if t is not None]

    def cancel_tasks(self, job_id: str, sources: frozenset[TaskStatus]) -> int:
        job = self._tx.job(job_id)
        tasks = [t for t in self._tx.tasks_of(job) if t.status in sources] if job else []
        for task in tasks:
            self._tx.put_task(replace(task, status=TaskStatus.CANCELLED, lease_until=None, finished_at=self._tx.now,
                                      updated_at=self._tx.now))
        return len(tasks)

    def requeue_tasks(
        self, job_id: str, stage: int, sources: frozenset[TaskStatus], more_attempts: int
    ) -> list[TaskChange]:
        row = self._tx.stage(job_id, stage)
        tasks = [t for t in self._tx.tasks_of_stage(row) if t.status in sources] if row else []
        for task in tasks:
            self._tx.put_task(replace(
                task, status=TaskStatus.QUEUED, max_attempts=task.attempt + more_attempts, lease_until=None,
                not_before=None, claimed_by=None, result=None, finished_at=None, updated_at=self._tx.now,
            ))
        return sorted((_change(t) for t in tasks), key=lambda c: c.task_id)

    def take_back_expired(
        self, grace_seconds: float, limit: int, job_sources: frozenset[JobStatus], taken_back: JSON
    ) -> list[TakenBack]:
        tx = self._tx
        cutoff = tx.now - timedelta(seconds=grace_seconds)
        expired = sorted(
            (t for t in tx.running_tasks() if t.lease_until is not None and t.lease_until < cutoff),
            key=lambda t: (t.lease_until, t.task_id),
        )
        taken: list[TakenBack] = []
        for task in expired:
            job = tx.job(task.job_id)
            if job is None or job.status not in job_sources or len(taken) >= limit:
                continue
            tx.put_task(replace(task, status=TaskStatus.QUEUED, lease_until=None, claimed_by=None, updated_at=tx.now,
                                errors=(*task.errors, self._taken_back(task, taken_back))))
            taken.append(TakenBack(_change(task), job.job_type, job.round))
        return taken

    def live_lease_seconds(self, job_id: str) -> float | None:
        tx = self._tx
        job = tx.job(job_id)
        leases = [t.lease_until for t in tx.tasks_of(job) if t.status in LEASED_TASK
                  and t.lease_until is not None and t.lease_until > tx.now] if job else []
        return (max(leases) - tx.now).total_seconds() if leases else None

    def renew_task_leases(
        self, task_ids: Sequence[str], attempts: Sequence[int], lease_seconds: float | None
    ) -> dict[str, JobStatus]:
        renewed: dict[str, JobStatus] = {}
        for task_id, attempt in zip(task_ids, attempts, strict=True):
            task = self._at_attempt(task_id, attempt, LEASED_TASK)
            job = self._tx.job(task.job_id) if task else None
            if task is not None and job is not None:
                seconds = _lease(lease_seconds, task.timeout_seconds)
                self._tx.put_task(replace(task, lease_until=self._tx.now + timedelta(seconds=seconds)))
                renewed[task_id] = job.status
        return renewed

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


class MemoryBackend(MemoryViews):
    """Units of work under one lock, and the read side (`MemoryViews`); thread-safe."""

    def transaction(self, work: Callable[[UnitOfWork], R]) -> R:
        with self._tx() as tx:
            return work(MemoryUnitOfWork(tx))


class InMemoryStore(Store):
    """The engine's store in memory: core's decisions over `MemoryBackend` (unit tests, the in-memory runtime)."""

    def __init__(self, transport: Transport, clock: Clock | None = None) -> None:
        self.memory = MemoryBackend(transport, clock)
        super().__init__(self.memory)


def _lease(lease_seconds: float | None, time_limit: float) -> float:
    """A claim lasts `lease_seconds`, never longer than the task's time limit (the running worker renews it)."""
    return time_limit if lease_seconds is None else min(lease_seconds, time_limit)
