"""InMemoryStore: the `StateStore` port in memory, with exactly the guarded transitions of `PostgresStore`.

Each method is one transaction under one lock: its writes are staged (see `memory.tables`), the messages
they cause are sent to the transport while the lock is held, and only then are the writes committed — so
a transport that refuses the messages leaves the state untouched, as a rolled-back PostgreSQL transaction
would. For the in-memory pair the outbox is the queue, hence `NullRelay`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from core.ids import is_job_id, task_id_for
from core.messages import (
    deferred_finalize_message,
    finalize_message,
    resent_task_message,
    stage_message,
    task_message,
)
from core.models import (
    JSON,
    ClaimedTask,
    ErrorInfo,
    FailurePolicy,
    JobRecord,
    JobStatus,
    NewJob,
    OutcomeKind,
    OutgoingMessage,
    StagePlan,
    StageStatus,
    TaskOutcome,
    TaskStatus,
)
from core.states import job_sources, task_sources
from infrastructure.memory.tables import StageRow, TaskRow, Transaction, fresh, stored
from infrastructure.memory.views import MemoryViews
from infrastructure.memory.views import public_job as _public

Clock = Callable[[], datetime]

_UNSTARTED = frozenset({TaskStatus.QUEUED, TaskStatus.RETRY_SCHEDULED})
_LEFTOVER = frozenset({TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.RETRY_SCHEDULED})
_OPEN_JOB = frozenset({JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.FINALIZING})
_LEASE_EXPIRED_MESSAGE = "the worker holding this task stopped before finishing; taken back"


class InMemoryStore(MemoryViews):
    """The state store for unit tests and the in-memory runtime; thread-safe."""

    def create_job(self, job: NewJob) -> tuple[JobRecord, bool]:
        if not is_job_id(job.job_id) or job.total_stages < 1:
            raise ValueError(f"invalid job row: id {job.job_id!r}, {job.total_stages} stages")
        with self._tx() as tx:
            existing = tx.job(job.job_id)
            if existing is not None:
                return _public(existing), False
            record = JobRecord(
                job.job_id, job.job_type, JobStatus.QUEUED, stored(job.parameters), 1, job.total_stages,
                job.failure_policy, None, None, tx.now, tx.now,
            )
            tx.put_job(record)
            tx.event(job.job_id, "submitted", {"parameters": job.parameters})
            tx.send([stage_message(job.job_id, job.job_type, 1)])
            return _public(record), True

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._tx() as tx:
            job = tx.job(job_id)
            return _public(job) if job else None

    def start_stage(self, plan: StagePlan) -> bool:
        if plan.max_attempts < 1 or not plan.timeout_seconds > 0:
            raise ValueError(f"invalid task limits: {plan.max_attempts} attempts, {plan.timeout_seconds}s")
        with self._tx() as tx:
            job = tx.job(plan.job_id)
            if (
                job is None
                or job.status not in job_sources(JobStatus.PROCESSING)
                or job.current_stage != plan.stage
            ):
                return False
            tx.put_job(replace(job, status=JobStatus.PROCESSING, updated_at=tx.now))
            if tx.stage(plan.job_id, plan.stage) is not None:
                return False
            ids = tuple(task_id_for(plan.job_id, plan.stage, i) for i in range(len(plan.tasks)))
            tx.put_stage(StageRow(
                plan.job_id, plan.stage, plan.stage_name, StageStatus.PROCESSING, len(ids), len(ids), 0, tx.now,
                None, ids,
            ))
            messages: list[OutgoingMessage] = []
            for index, (task_id, spec) in enumerate(zip(ids, plan.tasks, strict=True)):
                tx.put_task(TaskRow(
                    task_id, plan.job_id, plan.stage, index, spec.task_type, TaskStatus.QUEUED,
                    stored(spec.parameters), plan.max_attempts, plan.timeout_seconds, tx.now, tx.now,
                ))
                messages.append(task_message(task_id, plan.job_id, job.job_type, plan.stage, spec.task_type, 1))
            tx.send(messages)
            tx.event(plan.job_id, "stage_started", {"name": plan.stage_name, "tasks": len(ids)}, stage=plan.stage)
            if not ids:
                self._stage_done(tx, plan.job_id, plan.stage)
            return True

    def claim_tasks(
        self, task_ids: Sequence[str], worker_id: str, lease_seconds: float | None = None
    ) -> list[ClaimedTask]:
        if not task_ids:
            return []
        sources = task_sources(TaskStatus.RUNNING) - {TaskStatus.RUNNING}
        with self._tx() as tx:
            claimed: list[ClaimedTask] = []
            for task_id in dict.fromkeys(task_ids):
                task = tx.task(task_id)
                job = tx.job(task.job_id) if task else None
                if task is None or job is None or job.status is not JobStatus.PROCESSING:
                    continue
                due = task.status in sources and (task.not_before is None or task.not_before <= tx.now)
                expired = (
                    task.status is TaskStatus.RUNNING and task.lease_until is not None and task.lease_until < tx.now
                )
                if not (due or expired):
                    continue
                task = replace(
                    task, status=TaskStatus.RUNNING, attempt=task.attempt + 1, claimed_by=worker_id,
                    updated_at=tx.now, lease_until=tx.now + timedelta(seconds=lease_seconds or task.timeout_seconds),
                )
                tx.put_task(task)
                claimed.append(ClaimedTask(
                    task.task_id, task.job_id, job.job_type, task.stage, task.index, task.task_type,
                    fresh(task.parameters), task.attempt, task.max_attempts, task.timeout_seconds,
                    job.failure_policy,
                ))
            return claimed

    def renew_task_leases(
        self, claims: Sequence[ClaimedTask], lease_seconds: float | None = None
    ) -> dict[str, JobStatus]:
        with self._tx() as tx:
            renewed: dict[str, JobStatus] = {}
            for claim in claims:
                task = tx.task(claim.task_id)
                job = tx.job(claim.job_id)
                held = task is not None and task.status is TaskStatus.RUNNING and task.attempt == claim.attempt
                if task is None or job is None or not held:
                    continue
                seconds = lease_seconds or task.timeout_seconds
                tx.put_task(replace(task, lease_until=tx.now + timedelta(seconds=seconds)))
                renewed[task.task_id] = job.status
            return renewed

    def release_claims(self, claims: Sequence[ClaimedTask]) -> list[str]:
        sources = task_sources(TaskStatus.QUEUED)
        with self._tx() as tx:
            released: list[str] = []
            for claim in claims:
                task = tx.task(claim.task_id)
                if task is None or task.status not in sources or task.attempt != claim.attempt:
                    continue
                tx.put_task(replace(
                    task, status=TaskStatus.QUEUED, attempt=task.attempt - 1, lease_until=None, claimed_by=None,
                    updated_at=tx.now,
                ))
                released.append(task.task_id)
            return released

    def live_jobs(self, job_ids: Sequence[str]) -> set[str]:
        with self._tx() as tx:
            return {
                job_id for job_id in job_ids
                if (job := tx.job(job_id)) is not None and job.status is JobStatus.PROCESSING
            }

    def defer_early_tasks(self, deliveries: Sequence[tuple[str, int]]) -> list[str]:
        with self._tx() as tx:
            messages: list[OutgoingMessage] = []
            deferred: list[str] = []
            for task_id, attempt in deliveries:
                task = tx.task(task_id)
                job = tx.job(task.job_id) if task else None
                if (
                    task is None or job is None or job.status is not JobStatus.PROCESSING
                    or task.status is not TaskStatus.RETRY_SCHEDULED or task.attempt + 1 != attempt
                    or task.not_before is None or task.not_before <= tx.now
                ):
                    continue
                task = replace(task, resend_count=task.resend_count + 1)
                tx.put_task(task)
                delay = (task.not_before - tx.now).total_seconds() if task.not_before else 0.0
                messages.append(resent_task_message(
                    task.task_id, task.job_id, job.job_type, task.stage, task.task_type, attempt, task.resend_count,
                    delay,
                ))
                deferred.append(task.task_id)
            tx.send(messages)
            return deferred

    def resend_overdue_retries(self, overdue_seconds: float, limit: int = 1000) -> int:
        with self._tx() as tx:
            cutoff = tx.now - timedelta(seconds=overdue_seconds)
            overdue = sorted(
                (t for t in self._tables.tasks.values()
                 if t.status is TaskStatus.RETRY_SCHEDULED and t.not_before is not None and t.not_before < cutoff),
                key=lambda t: (t.not_before, t.task_id),
            )
            messages: list[OutgoingMessage] = []
            for task in overdue:
                job = tx.job(task.job_id)
                if job is None or job.status is not JobStatus.PROCESSING or len(messages) >= limit:
                    continue
                task = replace(task, resend_count=task.resend_count + 1, not_before=tx.now, updated_at=tx.now)
                tx.put_task(task)
                messages.append(resent_task_message(
                    task.task_id, task.job_id, job.job_type, task.stage, task.task_type, task.attempt + 1,
                    task.resend_count,
                ))
                tx.event(task.job_id, "task_retry_resent", {"attempt": task.attempt + 1, "resend": task.resend_count},
                         stage=task.stage, task_id=task.task_id)
            tx.send(messages)
            return len(messages)

    def record_outcomes(self, outcomes: Sequence[TaskOutcome]) -> None:
        if outcomes:
            with self._tx() as tx:
                self._apply_outcomes(tx, outcomes)

    def _apply_outcomes(self, tx: Transaction, outcomes: Sequence[TaskOutcome]) -> None:
        by_kind: dict[OutcomeKind, list[TaskOutcome]] = defaultdict(list)
        for outcome in sorted(outcomes, key=lambda o: o.task.task_id):
            by_kind[outcome.kind].append(outcome)
        done: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
        policies = {o.task.job_id: (o.task.failure_policy, o.task.job_type) for o in outcomes}

        for o in by_kind[OutcomeKind.COMPLETED]:
            task = self._running(tx, o, TaskStatus.COMPLETED)
            if task is not None:
                tx.put_task(replace(
                    task, status=TaskStatus.COMPLETED, result=stored(o.result or {}), lease_until=None,
                    finished_at=tx.now, updated_at=tx.now,
                ))
                done[(task.job_id, task.stage)][0] += 1

        messages: list[OutgoingMessage] = []
        for o in by_kind[OutcomeKind.RETRY]:
            task = self._running(tx, o, TaskStatus.RETRY_SCHEDULED)
            if task is None:
                continue
            error, delay = _error_json(o.error), o.retry_delay_seconds
            tx.put_task(replace(
                task, status=TaskStatus.RETRY_SCHEDULED, errors=(*task.errors, error), lease_until=None,
                not_before=tx.now + timedelta(seconds=delay), updated_at=tx.now,
            ))
            messages.append(task_message(
                task.task_id, task.job_id, policies[task.job_id][1], task.stage, task.task_type, task.attempt + 1,
                delay,
            ))
            tx.event(task.job_id, "task_retry_scheduled",
                     {"attempt": task.attempt, "retry_in_s": round(delay, 3), "error": error},
                     stage=task.stage, task_id=task.task_id)
        tx.send(messages)

        for o in by_kind[OutcomeKind.FAILED]:
            task = self._running(tx, o, TaskStatus.FAILED)
            if task is None:
                continue
            error = _error_json(o.error)
            tx.put_task(replace(
                task, status=TaskStatus.FAILED, errors=(*task.errors, error), lease_until=None,
                finished_at=tx.now, updated_at=tx.now,
            ))
            tx.event(task.job_id, "task_failed", {"error": error}, stage=task.stage, task_id=task.task_id)
            if policies[task.job_id][0] is FailurePolicy.FAIL_FAST:
                self._to_finalizing(tx, task.job_id, JobStatus.FAILED, {**error, "task_id": task.task_id})
            done[(task.job_id, task.stage)][0] += 1
            done[(task.job_id, task.stage)][1] += 1

        for (job_id, stage), (count, failures) in sorted(done.items()):
            row = tx.stage(job_id, stage)
            if row is None:
                continue
            row = replace(row, remaining=row.remaining - count, failed=row.failed + failures)
            if row.remaining < 0:
                raise ValueError(f"stage {stage} of job {job_id}: fan-in counter below zero (a task counted twice)")
            tx.put_stage(row)
            if row.remaining == 0:
                self._stage_done(tx, job_id, stage)

    @staticmethod
    def _running(tx: Transaction, outcome: TaskOutcome, target: TaskStatus) -> TaskRow | None:
        """The task if it may move to `target` and is still at the outcome's attempt (the guard)."""
        task = tx.task(outcome.task.task_id)
        if task is None or task.status not in task_sources(target) or task.attempt != outcome.task.attempt:
            return None
        return task

    def _stage_done(self, tx: Transaction, job_id: str, stage: int) -> None:
        """The fan-in decision: called by exactly one transaction, the one that took the counter to zero."""
        row = tx.stage(job_id, stage)
        if row is not None and row.status is StageStatus.PROCESSING:
            tx.put_stage(replace(row, status=StageStatus.COMPLETED, completed_at=tx.now))
            tx.event(job_id, "stage_completed", {"tasks": row.task_count, "failed": row.failed}, stage=stage)
        job = tx.job(job_id)
        if job is None or job.status is not JobStatus.PROCESSING or job.current_stage != stage:
            return
        if job.current_stage < job.total_stages:
            tx.put_job(replace(job, current_stage=stage + 1, updated_at=tx.now))
            tx.send([stage_message(job_id, job.job_type, stage + 1)])
        elif job.current_stage == job.total_stages:
            failed = any(s.failed > 0 for s in tx.stages_of(job))
            outcome = JobStatus.COMPLETED_WITH_ERRORS if failed else JobStatus.COMPLETED
            tx.put_job(replace(job, status=JobStatus.FINALIZING, outcome=outcome, updated_at=tx.now))
            tx.event(job_id, "finalizing", {"outcome": outcome.value})
            tx.send([finalize_message(job_id, job.job_type)])

    def _to_finalizing(self, tx: Transaction, job_id: str, outcome: JobStatus, error: JSON | None) -> bool:
        job = tx.job(job_id)
        if job is None or job.status not in job_sources(JobStatus.FINALIZING):
            return False
        tx.put_job(replace(
            job, status=JobStatus.FINALIZING, outcome=outcome, updated_at=tx.now,
            error=job.error if job.error is not None else stored(error),
        ))
        cancelled = self._cancel_tasks(tx, job, _UNSTARTED)
        tx.event(job_id, "job_failed" if outcome is JobStatus.FAILED else "job_cancelled",
                 {"outcome": outcome.value, "error": error, "cancelled_tasks": cancelled})
        tx.send([finalize_message(job_id, job.job_type)])
        return True

    @staticmethod
    def _cancel_tasks(tx: Transaction, job: JobRecord, statuses: frozenset[TaskStatus]) -> int:
        cancelled = 0
        for task in tx.tasks_of(job):
            if task.status in statuses:
                tx.put_task(replace(
                    task, status=TaskStatus.CANCELLED, lease_until=None, finished_at=tx.now, updated_at=tx.now,
                ))
                cancelled += 1
        return cancelled

    def fail_job(self, job_id: str, error: ErrorInfo) -> bool:
        with self._tx() as tx:
            return self._to_finalizing(tx, job_id, JobStatus.FAILED, error.to_json())

    def cancel_job(self, job_id: str, reason: str) -> bool:
        detail = {"type": "Cancelled", "class": "permanent", "message": reason}
        with self._tx() as tx:
            return self._to_finalizing(tx, job_id, JobStatus.CANCELLED, detail)

    def defer_finalize(self, job_id: str, delay_seconds: float) -> bool:
        with self._tx() as tx:
            job = tx.job(job_id)
            if job is None or job.status is not JobStatus.FINALIZING:
                return False
            deferrals = sum(1 for e in self._tables.events.get(job_id, []) if e.kind == "finalize_deferred")
            tx.event(job_id, "finalize_deferred", {"delay_s": round(delay_seconds, 3)})
            tx.send([deferred_finalize_message(job_id, job.job_type, 0, deferrals + 1, delay_seconds)])
            return True

    def finish_job(self, job_id: str, status: JobStatus, result: JSON | None, error: ErrorInfo | None) -> bool:
        with self._tx() as tx:
            job = tx.job(job_id)
            if job is None or job.status not in job_sources(status):
                return False
            new_error = error.to_json() if error is not None else None
            merged = job.error
            if new_error is not None:
                merged = stored(new_error) if job.error is None else {**job.error, "finalize_error": stored(new_error)}
            tx.put_job(replace(
                job, status=status, result=stored(result), finished_at=tx.now, updated_at=tx.now, error=merged,
            ))
            self._cancel_tasks(tx, job, _LEFTOVER)
            for row in tx.stages_of(job):
                if row.status is StageStatus.PROCESSING:
                    tx.put_stage(replace(row, status=StageStatus.CANCELLED, completed_at=tx.now))
            detail: JSON = {"status": status.value}
            if new_error is not None:
                detail["error"] = new_error
            tx.event(job_id, "job_finished", detail)
            return True

    def add_event(
        self, job_id: str, kind: str, detail: JSON, stage: int | None = None, task_id: str | None = None
    ) -> None:
        with self._tx() as tx:
            if tx.job(job_id) is not None:
                tx.event(job_id, kind, detail, stage=stage, task_id=task_id)

    def requeue_expired_leases(self, grace_seconds: float, limit: int = 1000) -> int:
        with self._tx() as tx:
            cutoff = tx.now - timedelta(seconds=grace_seconds)
            expired = sorted(
                (t for t in tx.running_tasks() if t.lease_until is not None and t.lease_until < cutoff),
                key=lambda t: (t.lease_until, t.task_id),
            )
            messages: list[OutgoingMessage] = []
            for task in expired:
                job = tx.job(task.job_id)
                if job is None or job.status is not JobStatus.PROCESSING or len(messages) >= limit:
                    continue
                error = {
                    "type": "LeaseExpired", "class": "transient", "attempt": task.attempt, "where": task.claimed_by,
                    "at": tx.now.isoformat(), "message": _LEASE_EXPIRED_MESSAGE,
                }
                tx.put_task(replace(
                    task, status=TaskStatus.QUEUED, lease_until=None, claimed_by=None, updated_at=tx.now,
                    errors=(*task.errors, error),
                ))
                messages.append(task_message(
                    task.task_id, task.job_id, job.job_type, task.stage, task.task_type, task.attempt + 1,
                ))
                tx.event(task.job_id, "task_lease_expired", {"attempt": task.attempt}, stage=task.stage,
                         task_id=task.task_id)
            tx.send(messages)
            return len(messages)


def _error_json(error: ErrorInfo | None) -> JSON:
    assert error is not None, "retry and failure outcomes carry an error"
    return error.to_json()
