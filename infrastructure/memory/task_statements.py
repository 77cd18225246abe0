"""The task statements of the in-memory unit of work: the dict versions of the task queries of `store.sql`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from core.ids import task_id_for
from core.models import JSON, ClaimedTask, JobRecord, JobStatus, StagePlan, TaskStatus
from core.states import LEASED_TASK
from core.task_statements import Resend, TakenBack, TaskChange, TaskState
from core.uow import UnitOfWork
from infrastructure.memory.tables import TaskRow, Transaction, fresh, stored


def _lease(lease_seconds: float | None, time_limit: float) -> float:
    """A claim lasts `lease_seconds`, never longer than the task's time limit (the running worker renews it)."""
    return time_limit if lease_seconds is None else min(lease_seconds, time_limit)


def _change(task: TaskRow) -> TaskChange:
    return TaskChange(task.task_id, task.job_id, task.stage, task.task_type, task.attempt)


class MemoryTaskStatements(UnitOfWork):
    """Task rows only; `MemoryUnitOfWork` adds the job, stage, timeline and outbox statements."""

    _tx: Transaction

    def insert_tasks(self, plans: Sequence[StagePlan]) -> None:
        tx = self._tx
        for plan in plans:
            if plan.tasks and (plan.max_attempts < 1 or not plan.timeout_seconds > 0):  # the tasks table's CHECKs
                raise ValueError(f"invalid task limits: {plan.max_attempts} attempts, {plan.timeout_seconds}s")
            for index, spec in enumerate(plan.tasks):
                tx.put_task(TaskRow(
                    task_id_for(plan.job_id, plan.stage, index), plan.job_id, plan.stage, index, spec.task_type,
                    TaskStatus.QUEUED, stored(spec.parameters), plan.max_attempts, plan.timeout_seconds, tx.now,
                    tx.now,
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
                job.round, stage.task_count if (stage := tx.stage(task.job_id, task.stage)) else 0,
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
