"""The ports CoreMachine talks through: a state store, a message transport and an outbox relay.

Every state-changing store method is one transaction that also writes the messages the change causes
(a transactional outbox). Each is a guarded update: it returns whether anything changed, and "nothing
changed" means a duplicate, late or out-of-order message that the caller must simply acknowledge. The store's
decisions are made once, in `core.store.Store`, over the unit-of-work port of `core/uow.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from core.models import (
    JSON,
    ClaimedTask,
    DeadLetter,
    DeadLetterSelector,
    ErrorInfo,
    JobRecord,
    JobSnapshot,
    JobStatus,
    NewJob,
    OutgoingMessage,
    ReceivedMessage,
    StagePlan,
    TaskOutcome,
    TaskResultRow,
)
from core.retry import RetryPolicy
from core.rounds import FinalizeStart, OperatorResult


class StateStore(Protocol):
    """The engine's state, as `core.store.Store` implements it over an adapter's units of work (`core/uow.py`).
    Every state-changing method is one transaction that also writes the messages the change causes."""

    def create_job(self, job: NewJob) -> tuple[JobRecord, bool]:
        """Insert the job (status queued, stage 1) and its stage-1 message; if the id exists, return the
        existing job and False."""
        ...

    def create_jobs(self, jobs: Sequence[NewJob]) -> list[tuple[JobRecord, bool]]:
        """`create_job` for many jobs in one transaction; a job id that exists (or repeats in `jobs`) gives the
        existing job and False."""
        ...

    def get_job(self, job_id: str) -> JobRecord | None: ...

    def get_jobs(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        """The existing jobs among `job_ids`, by id, in one read."""
        ...

    def start_stage(self, plan: StagePlan, inline_finish: frozenset[str] = frozenset()) -> bool:
        """Create the stage row, its tasks (one round trip) and their messages, and mark the job processing.
        Only if the job is queued/processing at exactly this stage and the stage does not exist yet.
        A stage with zero tasks completes in the same transaction (advance or finalize; a completed round of a
        job type in `inline_finish` ends there, see `record_outcomes`)."""
        ...

    def start_stages(
        self, plans: Sequence[StagePlan], inline_finish: frozenset[str] = frozenset(),
        acknowledge: Sequence[ReceivedMessage] = (),
    ) -> list[bool]:
        """`start_stage` for several jobs' stages in one transaction where they all can be (at most one plan per
        job); one job's race never changes the outcome of another's. Whether each stage was created.
        `acknowledge` (only where the store `holds_queue`): each plan's stage message, in order, completed by the
        commit that handles its plan (or, should that roll back, by one of its own): all settled on return."""
        ...

    def planning_failed(
        self, job_id: str, stage: int, plan_attempt: int, error: ErrorInfo, policy: RetryPolicy
    ) -> float | None:
        """`create_tasks` raised: re-send the stage message after the policy's delay (attempts counted on the job
        row), or fail the job. The delay, or None once the job failed or had moved on."""
        ...

    def stage_results(self, job_id: str, stage: int) -> list[TaskResultRow]:
        """Completed tasks of a stage in index order."""
        ...

    def stages_results(
        self, stages: Sequence[tuple[str, int]], max_rows: int | None = None
    ) -> dict[tuple[str, int], list[TaskResultRow]] | None:
        """`stage_results` of several (job id, stage) in one read; every key is in the answer. None if they are
        more than `max_rows` in all."""
        ...

    def stage_counts(self, job_id: str) -> dict[int, dict[str, int]]:
        """Task counts by status for each stage of a job."""
        ...

    def claim_tasks(
        self, task_ids: Sequence[str], worker_id: str, lease_seconds: float | None = None
    ) -> list[ClaimedTask]:
        """Take a lease on each task that is queued, due for retry, or running with an expired lease, while
        its job is processing. Increments the attempt. Tasks not returned must not be run. The lease lasts
        `lease_seconds` (None: the task's time limit); a running worker renews it (`renew_task_leases`)."""
        ...

    def renew_task_leases(
        self, claims: Sequence[ClaimedTask], lease_seconds: float | None = None
    ) -> dict[str, JobStatus]:
        """Extend the lease of each claimed task still running at the claim's attempt, to now + `lease_seconds`
        (None: the task's own time limit). Returns the renewed tasks with their job's status; a task missing from
        the answer is no longer held by this claim (finished, taken back, or cancelled)."""
        ...

    def replace_message(self, message: ReceivedMessage, messages: Sequence[OutgoingMessage]) -> None:
        """Send `messages` in place of `message` in one transaction, which settles `message` where the store
        `holds_queue`."""
        ...

    def release_claims(self, claims: Sequence[ClaimedTask]) -> list[str]:
        """Undo claims of tasks that were never started: running at the claim's attempt → queued, the attempt
        given back and the lease cleared. Returns the ids released."""
        ...

    def live_jobs(self, job_ids: Sequence[str]) -> set[str]:
        """Which of these jobs are still processing (their tasks may run); a cheap read for cancel checks."""
        ...

    def defer_early_tasks(self, deliveries: Sequence[tuple[str, int]]) -> list[str]:
        """Messages (task id, attempt) that arrived before their retry is due: for each task waiting
        (retry_scheduled, not due yet, job processing) for exactly that attempt, send a fresh message due at its
        `not_before`, with an id from the task's resend counter. Returns the ids deferred; the caller may then
        acknowledge those messages."""
        ...

    def resend_overdue_retries(self, overdue_seconds: float, limit: int = 1000) -> int:
        """Re-send tasks whose retry has been due for longer than `overdue_seconds` (their message was lost or
        never delivered), with ids from the task's resend counter; each is due again from now."""
        ...

    @property
    def holds_queue(self) -> bool:
        """Whether this store's commits can settle messages received from the transport (its database holds the
        queue: the PostgreSQL queue, the in-memory pair). Then `record_outcomes` completes the outcomes' messages
        in the commit that records them."""
        ...

    def record_outcomes(
        self, outcomes: Sequence[TaskOutcome], inline_finish: frozenset[str] = frozenset(),
        acknowledge: Sequence[ReceivedMessage] = (),
    ) -> None:
        """Apply task outcomes in one transaction, each guarded on (status running, same attempt); outcomes of
        attempts no longer current are recorded as `late_outcome` events and change nothing else. A round that
        ends `completed` for a job type in `inline_finish` (types that keep the default finalize) ends in this
        transaction, with the default finalize's result: no finalize message. `acknowledge` (only where the store
        `holds_queue`): received messages completed by the same commit, each guarded on its lock as
        `Transport.complete` is."""
        ...

    def fail_job(self, job_id: str, error: ErrorInfo) -> bool:
        """Queued/processing → finalizing with outcome failed, unfinished tasks cancelled, finalize message."""
        ...

    def cancel_job(self, job_id: str, reason: str) -> bool:
        """Queued/processing → finalizing with outcome cancelled, unstarted tasks cancelled."""
        ...

    def begin_finalize(
        self, job_id: str, owner: str, claim_seconds: float, min_recheck: float = 0.2, max_recheck: float = 5.0
    ) -> FinalizeStart:
        """Take the finalize claim (the fence) or defer the finalize message."""
        ...

    def renew_finalize_claim(self, job_id: str, owner: str, claim_seconds: float) -> bool:
        """Extend `owner`'s finalize claim; False once it is no longer theirs."""
        ...

    def finish_job(
        self, job_id: str, owner: str, status: JobStatus, result: JSON | None, error: JSON | None
    ) -> bool:
        """Finalizing → a terminal status, only while `owner` holds the finalize claim."""
        ...

    def cancel(self, job_id: str, error: JSON) -> OperatorResult: ...

    def retry(self, job_id: str, stage: int, more_attempts: int) -> OperatorResult: ...

    def rerun(self, job_id: str) -> OperatorResult: ...

    def add_event(
        self, job_id: str, kind: str, detail: JSON, stage: int | None = None, task_id: str | None = None
    ) -> None:
        """Append to the job's timeline; nothing happens for a job that does not exist."""
        ...

    def snapshot(self, job_id: str, events: int = 50) -> JobSnapshot | None: ...

    def requeue_expired_leases(self, grace_seconds: float, limit: int = 1000) -> int:
        """Running tasks whose lease ended more than `grace_seconds` ago go back to queued with a new message."""
        ...

    def close_counted_stages(self, limit: int = 100, inline_finish: frozenset[str] = frozenset()) -> int:
        """Close stages whose tasks are all done but which were left open (see `Store.record_outcomes`)."""
        ...

    def stuck_jobs(self, older_than_seconds: float, limit: int = 100) -> list[JobRecord]:
        """Non-terminal jobs not updated for longer than the deadline."""
        ...


class Transport(Protocol):
    """A queue with Service Bus semantics: peek-lock, delivery count, scheduled delivery, dead letters."""

    def send(self, messages: Sequence[OutgoingMessage]) -> None: ...

    def receive(self, queue: str, max_messages: int, wait_seconds: float) -> list[ReceivedMessage]:
        """Lock and return up to `max_messages` due messages, waiting up to `wait_seconds` for the first.
        A message past the max delivery count goes to the dead letters instead of being returned."""
        ...

    def complete(self, messages: Sequence[ReceivedMessage]) -> None:
        """Settle: the message is done. Completing a message whose lock was lost is a no-op."""
        ...

    def abandon(self, message: ReceivedMessage, delay_seconds: float = 0.0) -> None:
        """Give the message back now (or after a delay); its delivery count stays incremented."""
        ...

    @property
    def releases_uncounted(self) -> bool:
        """Whether `release` can hand a message back without counting the delivery. Where it cannot (Service
        Bus), a consumer must receive only what it will start, and `release` is refused."""
        ...

    def release(self, messages: Sequence[ReceivedMessage]) -> None:
        """Hand back messages received but not started: available again at once, and the delivery does not
        count toward the max. Raises `TransportError` where the broker has no such operation."""
        ...

    def renew_locks(self, messages: Sequence[ReceivedMessage]) -> None:
        """Extend the lock of each message still held (by this receiver, same lock token) by the lock duration
        from now; a message whose lock was lost, or that another party settles, is skipped."""
        ...

    def dead_letter(self, message: ReceivedMessage, reason: str, description: str) -> None: ...

    def list_dead_letters(
        self, selector: DeadLetterSelector, limit: int = 100, after: str | None = None
    ) -> list[DeadLetter]: ...

    def get_dead_letter(self, dead_letter_id: str) -> DeadLetter | None: ...

    def replay_dead_letters(self, selector: DeadLetterSelector, dry_run: bool = False) -> list[DeadLetter]:
        """Send each selected dead letter back to its queue under a new message id, then remove it."""
        ...

    def purge_dead_letters(self, selector: DeadLetterSelector) -> int: ...

    def close(self) -> None: ...


class Relay(Protocol):
    """Moves committed outbox rows to the transport. A no-op where the outbox is the queue."""

    def flush(self) -> int: ...

    def relay_stranded(self, older_than_seconds: float) -> int: ...


class NullRelay:
    """For transports whose queue is the outbox itself (the PostgreSQL queue, the in-memory pair)."""

    def flush(self) -> int:
        return 0

    def relay_stranded(self, older_than_seconds: float) -> int:
        return 0
