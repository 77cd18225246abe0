"""Store: the `StateStore` port implemented once, in core, as units of work over an adapter's `StoreBackend`.

Each public method is one unit of work (one transaction) that decides with the rows it locked and writes
through the adapter's guarded statements, together with the messages the change causes (the outbox).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial

from core.messages import resent_task_message, stage_message, task_message
from core.models import (
    JSON,
    ClaimedTask,
    ErrorInfo,
    JobRecord,
    JobSnapshot,
    JobStatus,
    NewJob,
    OutgoingMessage,
    ReceivedMessage,
    StagePlan,
    StageStatus,
    TaskOutcome,
    TaskResultRow,
    TaskStatus,
)
from core.outcomes import (
    apply_outcomes,
    close_stage,
    complete_counted,
    counted_alone,
    record_late,
    to_finalizing,
)
from core.retry import RetryPolicy
from core.rounds import Rounds
from core.stage_start import start_one, start_stages
from core.states import (
    LIVE_JOB,
    OPEN_JOB,
    WAITING_TASK,
    WORKING_JOB,
    claim_sources,
    job_sources,
    stage_sources,
    task_sources,
)
from core.task_statements import Resend
from core.uow import GuardFailed, StoreBackend, UnitOfWork, guarded

LEASE_TAKEN_BACK: JSON = {
    "type": "LeaseExpired",
    "class": "transient",
    "message": "the worker holding this task stopped before finishing; taken back",
}
"""The error kept for an attempt whose lease expired; the adapter adds the attempt, its holder and the time."""

log = logging.getLogger("coremachine.store")


class Store(Rounds):
    """The engine's state store. Stateless: everything it knows is in the backend."""

    def __init__(self, backend: StoreBackend, *, tasks_per_message: int = 1) -> None:
        """`tasks_per_message`: how many tasks of a wide stage one task message may carry (`StageTaskMessages`);
        1 sends a message per task."""
        if tasks_per_message < 1:
            raise ValueError("tasks_per_message must be at least 1")
        self.backend = backend
        self.tasks_per_message = tasks_per_message

    @property
    def holds_queue(self) -> bool:
        return self.backend.holds_queue

    # -- jobs and stages ----------------------------------------------------------------------------------------
    def create_job(self, job: NewJob) -> tuple[JobRecord, bool]:
        return self.create_jobs([job])[0]

    def create_jobs(self, jobs: Sequence[NewJob]) -> list[tuple[JobRecord, bool]]:
        """Each job with its `submitted` event and its stage-1 message, all in one unit of work; a job id that
        exists (or came earlier in `jobs`) gives the existing job and False."""

        def work(uow: UnitOfWork) -> list[tuple[JobRecord, bool]]:
            inserted = uow.insert_jobs(jobs)
            results: list[tuple[JobRecord, bool]] = []
            messages: list[OutgoingMessage] = []
            for job in jobs:
                created = inserted.pop(job.job_id, None)  # a repeated id: the first occurrence created it
                if created is None:
                    existing = uow.job(job.job_id)
                    assert existing is not None
                    results.append((existing, False))
                    continue
                uow.event(job.job_id, "submitted", {"parameters": job.parameters})
                messages.append(stage_message(job.job_id, job.job_type, 1))
                results.append((created, True))
            uow.send(messages)
            return results

        return self.backend.transaction(work)

    def get_job(self, job_id: str) -> JobRecord | None:
        return self.backend.get_jobs([job_id]).get(job_id)

    def get_jobs(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        return self.backend.get_jobs(job_ids)

    def start_stage(self, plan: StagePlan, inline_finish: frozenset[str] = frozenset()) -> bool:
        """Create the stage row, its tasks and their messages, and mark the job processing — only if the job is
        queued/processing at exactly this stage and the stage does not exist yet. A stage with zero tasks
        completes in the same transaction (advance, finalize, or finish for a job type in `inline_finish`)."""
        return self.start_stages([plan], inline_finish)[0]

    def start_stages(
        self, plans: Sequence[StagePlan], inline_finish: frozenset[str] = frozenset(),
        acknowledge: Sequence[ReceivedMessage] = (),
    ) -> list[bool]:
        """`start_stage` for several jobs' stages in one unit of work (one commit, one read of the jobs, one write
        of all their messages); for each plan, whether its stage was created. Should any job's closing guarded
        update find that job moved on, the whole unit rolls back and each plan is tried in a unit of its own, so
        one job's race never changes what happens to another's stage. `acknowledge` (only where the store
        `holds_queue`): each plan's stage message, in the plans' order, completed by the commit that handles it."""
        for plan in plans:
            if plan.max_attempts < 1 or not plan.timeout_seconds > 0:
                raise ValueError(f"invalid task limits: {plan.max_attempts} attempts, {plan.timeout_seconds}s")
        if len({p.job_id for p in plans}) != len(plans):
            raise ValueError("start_stages takes at most one plan per job")
        if acknowledge and (len(acknowledge) != len(plans) or not self.holds_queue):
            raise ValueError("acknowledge takes one message per plan, and a store whose database holds the queue")
        if len(plans) > 1:
            try:
                return self.backend.transaction(
                    lambda uow: start_stages(uow, plans, inline_finish, acknowledge, self.tasks_per_message))
            except GuardFailed:
                pass
        acks = [[m] for m in acknowledge] if acknowledge else [[] for _ in plans]
        return [self._start_alone(plan, inline_finish, ack) for plan, ack in zip(plans, acks, strict=True)]

    def _start_alone(self, plan: StagePlan, inline_finish: frozenset[str], acknowledge: list[ReceivedMessage]) -> bool:
        created = guarded(self.backend, partial(start_one, plan=plan, inline_finish=inline_finish,
                                                acknowledge=acknowledge, per_message=self.tasks_per_message), None)
        if created is None:  # rolled back (the job moved on meanwhile): its message is settled all the same
            self._acknowledge_alone(acknowledge)
            return False
        return created

    def _acknowledge_alone(self, messages: Sequence[ReceivedMessage]) -> None:
        """Settle received messages in a unit of work of their own (nothing else of theirs commits)."""
        if messages:
            self.backend.transaction(lambda uow: uow.acknowledge(messages))

    def planning_failed(
        self, job_id: str, stage: int, plan_attempt: int, error: ErrorInfo, policy: RetryPolicy
    ) -> float | None:
        """`create_tasks` of `stage` raised on planner attempt `plan_attempt` + 1. The retry policy decides: a
        stage message is sent again after its delay (the attempt counted on the job row), or the job fails.
        Returns the delay, or None once the job failed (or had already moved on)."""

        def work(uow: UnitOfWork) -> float | None:
            job = uow.read_jobs([job_id]).get(job_id)
            if job is None or job.status not in LIVE_JOB or job.current_stage != stage:
                return None
            if job.plan_attempts != plan_attempt:
                return None
            delay = policy.next_delay(plan_attempt + 1, error.error_class)
            if delay is None:
                to_finalizing(uow, job, JobStatus.FAILED, error.to_json())
                return None
            attempts = uow.count_plan_attempt(job_id, stage, LIVE_JOB)
            if attempts is None:
                return None
            uow.event(job_id, "stage_planning_retry",
                      {"attempt": attempts, "retry_in_s": round(delay, 3), "error": error.to_json()}, stage=stage)
            uow.send([stage_message(job_id, job.job_type, stage, job.round, attempts, delay)])
            return delay

        return self.backend.transaction(work)

    def stage_results(self, job_id: str, stage: int) -> list[TaskResultRow]:
        results = self.backend.stage_results([(job_id, stage)])
        assert results is not None, "no row limit was given"
        return results[job_id, stage]

    def stages_results(
        self, stages: Sequence[tuple[str, int]], max_rows: int | None = None
    ) -> dict[tuple[str, int], list[TaskResultRow]] | None:
        return self.backend.stage_results(stages, max_rows)

    def stage_counts(self, job_id: str) -> dict[int, dict[str, int]]:
        return self.backend.stage_counts(job_id)

    # -- tasks --------------------------------------------------------------------------------------------------
    def claim_tasks(
        self, task_ids: Sequence[str], worker_id: str, lease_seconds: float | None = None
    ) -> list[ClaimedTask]:
        """Take a lease on each task that is queued, due for retry, or running with an expired lease (the lost
        attempt's error is kept), while its job is processing. Increments the attempt. Tasks not returned must
        not be run. The lease lasts `lease_seconds` (None: the task's time limit); a worker renews it."""
        if not task_ids:
            return []
        ids = sorted(set(task_ids))
        return self.backend.statement(
            lambda uow: uow.claim_tasks(ids, worker_id, claim_sources(), WORKING_JOB, LEASE_TAKEN_BACK, lease_seconds)
        )

    def release_claims(self, claims: Sequence[ClaimedTask]) -> list[str]:
        """Undo claims of tasks never started (running at the claim's attempt → queued, the attempt given back);
        the ids released."""
        if not claims:
            return []
        ordered = sorted(claims, key=lambda c: c.task_id)
        return self.backend.statement(lambda uow: uow.release_claims(
            [c.task_id for c in ordered], [c.attempt for c in ordered], task_sources(TaskStatus.QUEUED)
        ))

    def defer_early_tasks(self, deliveries: Sequence[tuple[str, int]]) -> list[str]:
        """Messages (task id, attempt) that arrived before their retry is due: each task still waiting for exactly
        that attempt gets a fresh message due when it is, named by its resend counter; the ids deferred."""
        if not deliveries:
            return []
        ordered = sorted(set(deliveries))

        def work(uow: UnitOfWork) -> list[str]:
            resends = uow.count_early_resends(
                [t for t, _ in ordered], [a for _, a in ordered], WAITING_TASK, WORKING_JOB
            )
            uow.send([_resent(r) for r in resends])
            return [r.task.task_id for r in resends]

        return self.backend.transaction(work)

    def resend_overdue_retries(self, overdue_seconds: float, limit: int = 1000) -> int:
        """Re-send tasks whose retry has been due for longer than `overdue_seconds` (their message was lost), named
        by their resend counter; each is due again from now."""

        def work(uow: UnitOfWork) -> int:
            resends = uow.count_overdue_resends(overdue_seconds, limit, WAITING_TASK, WORKING_JOB)
            for r in resends:
                uow.event(r.task.job_id, "task_retry_resent", {"attempt": r.task.attempt + 1, "resend": r.resend},
                          stage=r.task.stage, task_id=r.task.task_id)
            uow.send([_resent(r) for r in resends])
            return len(resends)

        return self.backend.transaction(work)

    def record_outcomes(
        self, outcomes: Sequence[TaskOutcome], inline_finish: frozenset[str] = frozenset(),
        acknowledge: Sequence[ReceivedMessage] = (),
    ) -> None:
        """Apply task outcomes in one transaction (see `core.outcomes.apply_outcomes`); a completed round of a job
        type in `inline_finish` (it keeps the default finalize) ends in it. The `acknowledge` messages are
        completed in that commit: a recorded outcome's message is never delivered again.

        A batch of completions alone of wide stages is recorded by one statement (`complete_counted`), and each
        stage it took to zero is closed next, in a transaction of its own. Once that statement has run the
        outcomes are stored, so nothing after it fails the batch: a stage left at zero (a worker stopped, the
        database went away) is closed by the janitor (`close_counted_stages`)."""
        if acknowledge and not self.holds_queue:
            raise ValueError("this store's database does not hold the queue: it cannot settle messages")
        if not outcomes:
            self._acknowledge_alone(acknowledge)
            return
        if not counted_alone(outcomes):
            def apply(uow: UnitOfWork) -> None:
                apply_outcomes(uow, outcomes, inline_finish)
                uow.acknowledge(acknowledge)

            self.backend.transaction(apply)
            return
        counted = self.backend.statement(lambda uow: complete_counted(uow, outcomes, acknowledge))
        applied = {change.task_id for change in counted.changes}
        late = [o for o in outcomes if o.task.task_id not in applied]
        after: list[tuple[str, Callable[[UnitOfWork], object]]] = [
            (f"closing stage {stage} of job {job_id} (the janitor closes it)",
             partial(close_stage, job_id=job_id, stage=stage, inline_finish=inline_finish))
            for (job_id, stage), remaining in sorted(counted.remaining.items()) if remaining == 0
        ]
        if late:  # after the closes: a job waiting on its stage goes first
            after.append(("recording late outcomes (their timeline events are lost)",
                          lambda uow: record_late(uow, late)))
        for doing, work in after:
            try:
                self.backend.transaction(work)
            except Exception as exc:
                log.warning("%s failed after the outcomes were stored", doing,
                            extra={"error_type": type(exc).__name__, "error": str(exc)[:500]})

    def close_counted_stages(self, limit: int = 100, inline_finish: frozenset[str] = frozenset()) -> int:
        """Close stages whose counter reached zero but which are still open (the worker that took them to zero
        stopped before closing them, or is about to close them: then one of the two closes); the number this call
        closed. Each stage is closed on its own: one that fails is logged and left for the next pass."""
        keys = self.backend.statement(
            lambda uow: uow.counted_stages(OPEN_JOB, stage_sources(StageStatus.COMPLETED), limit))
        closed = 0
        for job_id, stage in keys:
            try:
                closed += self.backend.transaction(
                    partial(close_stage, job_id=job_id, stage=stage, inline_finish=inline_finish))
            except Exception as exc:
                log.warning("closing a stage left open failed; trying again next pass",
                            extra={"job_id": job_id, "stage": stage, "error_type": type(exc).__name__,
                                   "error": str(exc)[:500]})
        return closed

    def renew_task_leases(
        self, claims: Sequence[ClaimedTask], lease_seconds: float | None = None
    ) -> dict[str, JobStatus]:
        """Extend the lease of each claimed task still running at the claim's attempt (`lease_seconds`, None: the
        task's time limit); the renewed ids with their job's status. A task missing from the answer is no longer
        held by this claim (finished, taken back or cancelled): stop it."""
        if not claims:
            return {}
        ordered = sorted(claims, key=lambda c: c.task_id)
        return self.backend.transaction(lambda uow: uow.renew_task_leases(
            [c.task_id for c in ordered], [c.attempt for c in ordered], lease_seconds
        ))

    def requeue_expired_leases(self, grace_seconds: float, limit: int = 1000) -> int:
        """Running tasks whose lease ended more than `grace_seconds` ago go back to queued with a new message."""

        def work(uow: UnitOfWork) -> int:
            taken = uow.take_back_expired(grace_seconds, limit, WORKING_JOB, LEASE_TAKEN_BACK)
            uow.send([
                task_message(t.task.task_id, t.task.job_id, t.job_type, t.task.stage, t.task.task_type,
                             t.task.attempt + 1, round_number=t.round)
                for t in taken
            ])
            for t in taken:
                uow.event(t.task.job_id, "task_lease_expired", {"attempt": t.task.attempt}, stage=t.task.stage,
                          task_id=t.task.task_id)
            return len(taken)

        return self.backend.transaction(work)

    # -- ending a job -------------------------------------------------------------------------------------------
    def fail_job(self, job_id: str, error: ErrorInfo) -> bool:
        """Queued/processing → finalizing with outcome failed, unstarted tasks cancelled, finalize message."""
        return self._to_finalizing(job_id, JobStatus.FAILED, error.to_json())

    def cancel_job(self, job_id: str, reason: str) -> bool:
        """Queued/processing → finalizing with outcome cancelled, unstarted tasks cancelled at once."""
        return self._to_finalizing(job_id, JobStatus.CANCELLED, cancel_error(reason))

    def _to_finalizing(self, job_id: str, outcome: JobStatus, error: JSON) -> bool:
        def work(uow: UnitOfWork) -> bool:
            job = uow.read_jobs([job_id]).get(job_id)
            if job is None or job.status not in job_sources(JobStatus.FINALIZING):
                return False
            return to_finalizing(uow, job, outcome, error).status is JobStatus.FINALIZING

        return self.backend.transaction(work)

    def replace_message(self, message: ReceivedMessage, messages: Sequence[OutgoingMessage]) -> None:
        """Send `messages` in place of `message`, in one unit of work that settles `message` where the store holds
        the queue (else the consumer completes it after)."""

        def work(uow: UnitOfWork) -> None:
            uow.send(messages)
            uow.acknowledge([message] if self.holds_queue else [])

        self.backend.transaction(work)

    # -- reads --------------------------------------------------------------------------------------------------
    def live_jobs(self, job_ids: Sequence[str]) -> set[str]:
        """Which of these jobs are still processing (their tasks may run): a cheap read for `context.cancelled`."""
        if not job_ids:
            return set()
        statuses = self.backend.job_statuses(sorted(set(job_ids)))
        return {job_id for job_id, status in statuses.items() if status in WORKING_JOB}

    def add_event(
        self, job_id: str, kind: str, detail: JSON, stage: int | None = None, task_id: str | None = None
    ) -> None:
        """Append to the job's timeline; nothing happens for a job that does not exist."""
        self.backend.transaction(lambda uow: uow.event_if_job_exists(job_id, kind, detail, stage, task_id))

    def snapshot(self, job_id: str, events: int = 50) -> JobSnapshot | None:
        return self.backend.snapshot(job_id, events)

    def stuck_jobs(self, older_than_seconds: float, limit: int = 100) -> list[JobRecord]:
        """Non-terminal jobs not updated for longer than the deadline."""
        return self.backend.stuck_jobs(older_than_seconds, limit, OPEN_JOB)


def cancel_error(reason: str) -> JSON:
    return {"type": "Cancelled", "class": "permanent", "message": reason, "at": datetime.now(UTC).isoformat()}


def _resent(r: Resend) -> OutgoingMessage:
    t = r.task
    return resent_task_message(t.task_id, t.job_id, r.job_type, t.stage, t.task_type, t.attempt + 1, r.resend,
                               r.delay_seconds, round_number=r.round)
