"""The unit-of-work port: one transaction made of small, named, guarded statements over jobs, stages and tasks.

Core decides; a unit of work only executes. Each statement is one guarded write ("complete these tasks if
still running with this attempt", "decrement this stage's counter", "advance the job if still on stage N")
that reports what it changed, so "nothing changed" is always visible to the caller. Status guards arrive as
parameters from `core/states.py`. The PostgreSQL adapter runs each statement as one named query; the in-memory
adapter implements the same statements over dicts.

Lock order, everywhere: task rows (in task id order), then stage rows (in (job, stage) order), then job rows (in
job id order), then the queue rows of received messages settled by `acknowledge`, last.
A unit of work decides on an unlocked read of the job (`read_jobs`), writes the children, and ends with the job
row's guarded update; if that finds nothing to change where the decision needed it, the unit of work raises
`GuardFailed` and rolls back. Units that touch only job rows lock them first (`lock_jobs`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeVar

from core.models import (
    JSON,
    FailurePolicy,
    JobRecord,
    JobSnapshot,
    JobStatus,
    NewJob,
    OutgoingMessage,
    ReceivedMessage,
    StagePlan,
    StageStatus,
    TaskResultRow,
    TaskStatus,
)
from core.task_statements import TaskStatements

R = TypeVar("R")


class GuardFailed(Exception):
    """The job row's closing guarded update changed nothing: the unit of work rolls back (the job moved on)."""


@dataclass(frozen=True, slots=True)
class LockedJob:
    """A job row as read under its lock, with the control counters decisions need."""

    job_id: str
    job_type: str
    status: JobStatus
    current_stage: int
    total_stages: int
    failure_policy: FailurePolicy
    round: int
    outcome: JobStatus | None
    error: JSON | None
    result: JSON | None
    plan_attempts: int
    finalize_deferrals: int
    finalize_owner: str | None
    finalize_claim_seconds: float | None
    """Seconds the finalize claim still runs (negative once expired); None when never claimed."""


@dataclass(frozen=True, slots=True)
class StageTally:
    task_count: int
    failed: int


@dataclass(frozen=True, slots=True)
class StageCount:
    """What a batch of outcomes counts toward one stage: tasks done (completed or failed), and of them failed."""

    job_id: str
    stage: int
    done: int
    failed: int


@dataclass(frozen=True, slots=True)
class StageTotals:
    """A stage row's counters: its tasks, how many are not yet done (the fan-in counter) and how many failed."""

    stage: int
    task_count: int
    remaining: int
    failed: int


class JobMove(StrEnum):
    """How a batch of outcomes moves a job on (`UnitOfWork.move_jobs`): after one of its stages completed, or
    because a task of a fail-fast job failed."""

    ADVANCE = "advance"
    """To the next stage; its planner attempts start again."""
    FINALIZE = "finalize"
    """To finalizing, with the outcome its finalize will give it."""
    FINISH = "finish"
    """To finalizing and on to completed with its result: the inline finish of a round that ended completed."""
    FAIL = "fail"
    """To finalizing with the outcome failed and the error (kept if the job has one already)."""


@dataclass(frozen=True, slots=True)
class MoveJob:
    """A job to move on from stage `stage`; `outcome` for a finalize, finish or fail, `result` for a finish,
    `error` for a fail."""

    job_id: str
    stage: int
    move: JobMove
    outcome: JobStatus | None = None
    result: JSON | None = None
    error: JSON | None = None


class UnitOfWork(TaskStatements, Protocol):
    """One transaction. Every write is guarded and returns what it changed."""

    # -- jobs (locked first) ------------------------------------------------------------------------------------
    def insert_job(self, job: NewJob) -> JobRecord | None:
        """The new job (queued at stage 1), or None if the id exists."""
        ...

    def insert_jobs(self, jobs: Sequence[NewJob]) -> dict[str, JobRecord]:
        """`insert_job` for many jobs in one statement: the new ones by id (an id that exists, or came earlier in
        `jobs`, is not inserted)."""
        ...

    def job(self, job_id: str) -> JobRecord | None: ...

    def lock_jobs(self, job_ids: Sequence[str]) -> dict[str, LockedJob]:
        """Lock the existing jobs among `job_ids`, in id order, and read them (units that touch only job rows)."""
        ...

    def read_jobs(self, job_ids: Sequence[str]) -> dict[str, LockedJob]:
        """Read the existing jobs among `job_ids` without locking them: the decision is made on this read, the
        child rows are written, and the job row's own guarded update comes last and confirms it."""
        ...

    def start_job_stages(self, keys: Sequence[tuple[str, int, int]], sources: frozenset[JobStatus]) -> set[str]:
        """Each job (job id, stage, round) → processing if it is on that stage of that round in one of `sources`;
        the jobs moved."""
        ...

    def move_jobs(
        self, moves: Sequence[MoveJob], advance_sources: frozenset[JobStatus],
        finalize_sources: frozenset[JobStatus], fail_sources: frozenset[JobStatus],
    ) -> set[str]:
        """Every job of `moves` moved on in ONE statement, the rows locked in job id order; the ids moved. An
        advance needs the job in `advance_sources` on that stage, with a stage after it; a finalize or finish needs
        it in `finalize_sources`, a fail in `fail_sources`. A finish takes two edges of the state machine at once
        (processing → finalizing → completed), guarded by the first: the second cannot fail on a row this
        statement holds."""
        ...

    def job_to_finalizing(
        self, job_id: str, outcome: JobStatus, error: JSON | None, sources: frozenset[JobStatus]
    ) -> bool:
        """Job in `sources` → finalizing with the outcome finalize will give it; `error` kept if none is."""
        ...

    def count_plan_attempt(self, job_id: str, stage: int, sources: frozenset[JobStatus]) -> int | None:
        """One more failed planner attempt of `stage`; the new count, or None if the job moved on."""
        ...

    def claim_finalize(
        self, job_id: str, owner: str, claim_seconds: float, sources: frozenset[JobStatus]
    ) -> JobRecord | None:
        """Take the finalize claim if it is free, expired or already `owner`'s; the job as claimed, or None."""
        ...

    def renew_finalize_claim(
        self, job_id: str, owner: str, claim_seconds: float, sources: frozenset[JobStatus]
    ) -> bool:
        """Extend the claim if `owner` still holds it."""
        ...

    def count_finalize_deferral(self, job_id: str, sources: frozenset[JobStatus]) -> int | None:
        """One more deferred finalize message; the new count, which names that message."""
        ...

    def finish_job(
        self, job_id: str, owner: str, status: JobStatus, result: JSON | None, error: JSON | None,
        sources: frozenset[JobStatus],
    ) -> bool:
        """Job in `sources` whose finalize claim `owner` holds → `status`, with its result and error."""
        ...

    def reopen_job(self, job_id: str, sources: frozenset[JobStatus]) -> int | None:
        """Operator retry: job in `sources` → processing in a new round; the round, or None."""
        ...

    def restart_job(self, job_id: str, sources: frozenset[JobStatus]) -> int | None:
        """Operator rerun: job in `sources` → queued at stage 1 in a new round; the round, or None."""
        ...

    # -- stages -------------------------------------------------------------------------------------------------
    def lock_stages(self, keys: Sequence[tuple[str, int]]) -> set[tuple[str, int]]:
        """Lock the existing stage rows among `keys`, in key order; the keys that exist."""
        ...

    def insert_stages(self, plans: Sequence[StagePlan]) -> set[tuple[str, int]]:
        """A new stage row per plan (processing, counter = its task count); the (job id, stage) of those inserted
        (a stage that exists is not)."""
        ...

    def decrement_stages(self, counts: Sequence[StageCount]) -> dict[tuple[str, int], int]:
        """The fan-in counters, in (job, stage) order: per stage `done` fewer remaining, `failed` more failed. The
        remaining count of each existing stage. One count per stage (the keys are unique)."""
        ...

    def complete_stages(
        self, keys: Sequence[tuple[str, int]], sources: frozenset[StageStatus]
    ) -> dict[tuple[str, int], StageTally]:
        """Each stage in `sources` with its counter at zero → completed, in key order; the counts of those that
        changed."""
        ...

    def counted_stages(
        self, job_sources: frozenset[JobStatus], sources: frozenset[StageStatus], limit: int
    ) -> list[tuple[str, int]]:
        """Stages in `sources` whose counter is zero, of jobs in `job_sources`: (job id, stage), oldest job first."""
        ...

    def stage_totals(self, job_ids: Sequence[str]) -> dict[str, list[StageTotals]]:
        """The counters of each job's stage rows, in stage order (one read; every job id is in the answer)."""
        ...

    def cancel_stages(self, job_id: str, sources: frozenset[StageStatus]) -> int: ...

    def reopen_stage(
        self, job_id: str, stage: int, sources: frozenset[StageStatus], pending: frozenset[TaskStatus]
    ) -> bool:
        """Stage in `sources` → processing, its counter recounted as its tasks in `pending` statuses."""
        ...

    def archive_round(self, job_id: str, round_number: int) -> None:
        """Keep the job's ended round (result, error, stage summaries, tasks) as history, then delete its stages
        and tasks so a new round can start under the same ids."""
        ...

    # -- timeline and outbox ------------------------------------------------------------------------------------
    def event(
        self, job_id: str, kind: str, detail: JSON, stage: int | None = None, task_id: str | None = None
    ) -> None:
        """Append to the job's timeline (audit only: nothing ever reads it to decide)."""
        ...

    def event_if_job_exists(
        self, job_id: str, kind: str, detail: JSON, stage: int | None = None, task_id: str | None = None
    ) -> None: ...

    def send(self, messages: Sequence[OutgoingMessage], *, fresh: bool = False) -> None:
        """The outbox write, committed with the state change. `fresh`: ids never sent before and none delayed (a
        new stage's task messages), written in bulk without duplicate detection, read once."""
        ...

    def acknowledge(self, messages: Sequence[ReceivedMessage]) -> None:
        """Complete received messages in this unit's commit, each only if still locked by its delivery (same lock
        token), as `Transport.complete`; only where the backend `holds_queue`. Written after every other row."""
        ...


def guarded(backend: StoreBackend, work: Callable[[UnitOfWork], R], otherwise: R) -> R:
    """Run `work` as one unit of work; `otherwise` if its closing guarded update found the job moved on."""
    try:
        return backend.transaction(work)
    except GuardFailed:
        return otherwise


class StoreBackend(Protocol):
    """What an adapter provides: units of work, and the read side (plain reads that decide nothing)."""

    holds_queue: bool
    """Whether its units of work can settle received messages (`UnitOfWork.acknowledge`): the queue is in the
    store's own database."""

    def transaction(self, work: Callable[[UnitOfWork], R]) -> R:
        """Run `work` in one transaction and commit; run it again from the start if the database asks
        (deadlock, serialization failure), so `work` must only talk to the unit of work."""
        ...

    def statement(self, work: Callable[[UnitOfWork], R]) -> R:
        """Run `work`, which makes exactly ONE call of the unit of work (one statement, atomic on its own), with
        no transaction around it: no BEGIN and COMMIT round trips, and the rows it locks are held only while it
        commits. Retried like `transaction`."""
        ...

    def get_jobs(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        """The existing jobs among `job_ids`, by id (one read)."""
        ...

    def stage_results(
        self, stages: Sequence[tuple[str, int]], max_rows: int | None = None
    ) -> dict[tuple[str, int], list[TaskResultRow]] | None:
        """The completed tasks of each (job id, stage), in index order; every key is in the answer (one read).
        None if they are more than `max_rows` in all."""
        ...

    def stage_counts(self, job_id: str) -> dict[int, dict[str, int]]: ...

    def snapshot(self, job_id: str, events: int = 50) -> JobSnapshot | None: ...

    def stuck_jobs(self, older_than_seconds: float, limit: int, open_statuses: frozenset[JobStatus]) -> list[JobRecord]:
        ...

    def job_statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """The status of each existing job among `job_ids` (a plain read)."""
        ...
