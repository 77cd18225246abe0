"""The task-row statements of the unit of work (`core.uow.UnitOfWork` adds the jobs, stages, timeline and outbox
ones), and what they report: claims, completions, failures, retries, resends, leases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from core.models import JSON, ClaimedTask, JobStatus, ReceivedMessage, StagePlan, TaskStatus


@dataclass(frozen=True, slots=True)
class TaskChange:
    """A task row a guarded statement changed."""

    task_id: str
    job_id: str
    stage: int
    task_type: str
    attempt: int


@dataclass(frozen=True, slots=True)
class TakenBack:
    """A running task whose expired lease the janitor took back, with what its next message needs."""

    task: TaskChange
    job_type: str
    round: int


@dataclass(frozen=True, slots=True)
class Resend:
    """A task whose current attempt's message is sent again (no new attempt), numbered by its resend counter."""

    task: TaskChange
    job_type: str
    round: int
    resend: int
    delay_seconds: float


@dataclass(frozen=True, slots=True)
class TaskState:
    task_id: str
    status: TaskStatus
    attempt: int


@dataclass(frozen=True, slots=True)
class CountedCompletions:
    """What `complete_tasks_counted` changed: the tasks it completed, and each touched stage's fan-in counter after
    the decrement (a stage whose counter is now 0 has every task done and is still open: see `close_stage`)."""

    changes: list[TaskChange]
    remaining: dict[tuple[str, int], int]


class TaskStatements(Protocol):
    """Task rows only, each statement guarded on the task's status (and attempt) it may change."""

    def insert_tasks(self, plans: Sequence[StagePlan]) -> None:
        """The plans' tasks, queued (ids from `core.ids.task_id_for`): small stages' together in one round trip."""
        ...

    def claim_tasks(
        self, task_ids: Sequence[str], worker_id: str, sources: frozenset[TaskStatus],
        job_sources: frozenset[JobStatus], taken_back: JSON, lease_seconds: float | None,
    ) -> list[ClaimedTask]:
        """Lease each due task in `sources`, or running with an expired lease (then `taken_back`, completed with
        the lost attempt and its holder, is added to its errors), whose job is in `job_sources`. The lease lasts
        `lease_seconds` (None: the task's time limit)."""
        ...

    def release_claims(
        self, task_ids: Sequence[str], attempts: Sequence[int], sources: frozenset[TaskStatus]
    ) -> list[str]:
        """Claims never started: task in `sources` at this attempt → queued, the attempt given back."""
        ...

    def count_early_resends(
        self, task_ids: Sequence[str], attempts: Sequence[int], sources: frozenset[TaskStatus],
        job_sources: frozenset[JobStatus],
    ) -> list[Resend]:
        """Tasks in `sources` (waiting for their retry, not yet due) whose next attempt is the one given, of jobs
        in `job_sources`: one more resend counted; each with the seconds until it is due."""
        ...

    def count_overdue_resends(
        self, overdue_seconds: float, limit: int, sources: frozenset[TaskStatus], job_sources: frozenset[JobStatus]
    ) -> list[Resend]:
        """Tasks in `sources` due for longer than `overdue_seconds`, of jobs in `job_sources`: one more resend
        counted, due again from now."""
        ...

    def complete_tasks(
        self, task_ids: Sequence[str], attempts: Sequence[int], results: Sequence[JSON], sources: frozenset[TaskStatus]
    ) -> list[TaskChange]:
        """Task in `sources` at this attempt → completed with its result."""
        ...

    def complete_tasks_counted(
        self, task_ids: Sequence[str], attempts: Sequence[int], results: Sequence[JSON], sources: frozenset[TaskStatus],
        acknowledge: Sequence[ReceivedMessage] = (),
    ) -> CountedCompletions:
        """`complete_tasks`, then each touched stage's counter decremented by its completions, as ONE statement (a
        unit of work run by `StoreBackend.statement`): the tasks locked first, then the stage rows in (job, stage)
        order, then the `acknowledge` messages (see `acknowledge`)."""
        ...

    def end_tasks(
        self, status: TaskStatus, task_ids: Sequence[str], attempts: Sequence[int], errors: Sequence[JSON],
        sources: frozenset[TaskStatus],
    ) -> list[TaskChange]:
        """Task in `sources` at this attempt → `status` (failed or cancelled), its error appended."""
        ...

    def schedule_retries(
        self, task_ids: Sequence[str], attempts: Sequence[int], errors: Sequence[JSON], delays: Sequence[float],
        sources: frozenset[TaskStatus],
    ) -> list[TaskChange]:
        """Task in `sources` at this attempt → retry_scheduled, due after its delay, its error appended."""
        ...

    def task_states(self, task_ids: Sequence[str]) -> list[TaskState]: ...

    def cancel_tasks(self, job_id: str, sources: frozenset[TaskStatus]) -> int:
        """Every task of the job in `sources` → cancelled; how many."""
        ...

    def requeue_tasks(
        self, job_id: str, stage: int, sources: frozenset[TaskStatus], more_attempts: int
    ) -> list[TaskChange]:
        """Operator retry: tasks of the stage in `sources` → queued with `more_attempts` more attempts."""
        ...

    def take_back_expired(
        self, grace_seconds: float, limit: int, job_sources: frozenset[JobStatus], taken_back: JSON
    ) -> list[TakenBack]:
        """Running tasks whose lease ended `grace_seconds` ago, of jobs in `job_sources` → queued, with
        `taken_back` (completed with the lost attempt and its holder) added to their errors."""
        ...

    def live_lease_seconds(self, job_id: str) -> float | None:
        """Seconds until the last live lease of the job's running tasks ends; None if none is live."""
        ...

    def renew_task_leases(
        self, task_ids: Sequence[str], attempts: Sequence[int], lease_seconds: float | None
    ) -> dict[str, JobStatus]:
        """Running tasks still at this attempt get a fresh lease (`lease_seconds`, None: their time limit); the
        ids renewed, each with its job's status."""
        ...
