"""Operator actions on one job (cancel, retry) and the read-side queries the admin API pages through."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from core.errors import CoreMachineError
from core.jobs import JobRegistry
from core.models import JobRecord, JobStatus, TaskView
from core.ports import Relay, StateStore
from core.states import check_operator_transition, operator_sources


class JobNotFound(CoreMachineError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job {job_id}")


class JobConflict(CoreMachineError):
    """The job is not in a state the requested action applies to."""

    def __init__(self, job: JobRecord, message: str) -> None:
        self.job = job
        super().__init__(message)


class NothingToRetry(CoreMachineError):
    """The failed job's current stage has no failed or cancelled task to run again."""


@dataclass(frozen=True, slots=True)
class JobPageCursor:
    """Position after the last job of a page (jobs are listed newest first)."""

    created_at: datetime
    job_id: str


@dataclass(frozen=True, slots=True)
class TaskPageCursor:
    """Position after the last task of a page (tasks are listed by stage, then index)."""

    stage: int
    index: int


@dataclass(frozen=True, slots=True)
class RetryPlan:
    """What the store needs to retry a failed job in one transaction."""

    job_id: str
    stage: int
    stage_max_attempts: int
    sources: tuple[JobStatus, ...]


@dataclass(frozen=True, slots=True)
class RetryOutcome:
    job_id: str
    stage: int
    tasks_requeued: int
    stage_resent: bool
    round: int


class AdminStore(Protocol):
    def list_jobs(
        self, statuses: Sequence[JobStatus], job_type: str | None, limit: int, after: JobPageCursor | None
    ) -> list[JobRecord]:
        """Jobs newest first, filtered; at most `limit`, strictly after the cursor."""
        ...

    def list_tasks(
        self, job_id: str, stage: int | None, statuses: Sequence[str], limit: int, after: TaskPageCursor | None
    ) -> list[TaskView]:
        """A job's tasks by stage and index, filtered; at most `limit`, strictly after the cursor."""
        ...

    def retry_failed_job(self, plan: RetryPlan) -> RetryOutcome | None:
        """One transaction: failed → processing, the current stage's failed and cancelled tasks back to queued
        with a fresh attempt budget, the stage reopened, their messages written; or the stage message sent
        again when the stage was never created. None if the job was not in `plan.sources` (it changed);
        raises NothingToRetry (and changes nothing) if the stage exists but has no task to run again."""
        ...


def cancel_job(store: StateStore, relay: Relay, job_id: str, reason: str = "cancelled by an operator") -> JobRecord:
    """Queued/processing → finalizing(cancelled): unstarted tasks are cancelled, running ones finish, and the
    finalize message ends the job `cancelled`. Raises JobNotFound, or JobConflict if it is past cancelling."""
    job = store.get_job(job_id)
    if job is None:
        raise JobNotFound(job_id)
    if job.status.terminal or job.status is JobStatus.FINALIZING:
        raise JobConflict(job, f"job {job_id} is {job.status.value}; only a queued or processing job can be cancelled")
    if not store.cancel_job(job_id, reason):
        current = store.get_job(job_id) or job
        raise JobConflict(current, f"job {job_id} is {current.status.value}; it changed while being cancelled")
    relay.flush()
    updated = store.get_job(job_id)
    assert updated is not None
    return updated


def retry_job(
    store: StateStore, admin: AdminStore, relay: Relay, jobs: JobRegistry, job_id: str
) -> RetryOutcome:
    """Re-run the failed tasks of a failed job's current stage and resume the job from there."""
    job = store.get_job(job_id)
    if job is None:
        raise JobNotFound(job_id)
    if JobStatus.PROCESSING not in _targets(job.status):
        raise JobConflict(job, f"job {job_id} is {job.status.value}; only a failed job can be retried")
    check_operator_transition(job.status, JobStatus.PROCESSING)
    stage = jobs.get(job.job_type).stage(job.current_stage)
    plan = RetryPlan(job_id, job.current_stage, stage.max_attempts, tuple(operator_sources(JobStatus.PROCESSING)))
    try:
        outcome = admin.retry_failed_job(plan)
    except NothingToRetry as exc:
        raise JobConflict(job, str(exc)) from exc
    if outcome is None:
        current = store.get_job(job_id) or job
        raise JobConflict(current, f"job {job_id} is {current.status.value}; it changed while being retried")
    relay.flush()
    return outcome


def _targets(status: JobStatus) -> frozenset[JobStatus]:
    return frozenset(target for target in JobStatus if status in operator_sources(target))
