"""The end of a round and the start of the next: the finalize fence, finish, and the operator's cancel, retry and
rerun, each decided once over a unit of work.

Finalize is fenced on the job row: a finalize message takes the claim (owner and expiry) before running the job's
`finalize`, renews it while it runs, and the job finishes only if its owner still holds it. A finalize message that
meets a live claim of another owner is deferred to the claim's expiry, never run beside it; an expired claim (its
owner died) is taken over.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.messages import deferred_finalize_message, stage_message, task_message
from core.models import JSON, JobRecord, JobStatus, StageStatus, TaskStatus
from core.outcomes import to_finalizing
from core.states import (
    FINALIZE_JOB,
    LIVE_JOB,
    OPEN_TASK,
    job_sources,
    operator_sources,
    operator_stage_sources,
    operator_task_sources,
    stage_sources,
    task_sources,
)
from core.task_statements import TaskChange
from core.uow import GuardFailed, LockedJob, StoreBackend, UnitOfWork, guarded


class FinalizeDecision(StrEnum):
    RUN = "run"
    DEFERRED = "deferred"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class FinalizeStart:
    decision: FinalizeDecision
    job: JobRecord | None = None
    delay_seconds: float = 0.0
    reason: str = ""


class Refusal(StrEnum):
    NOT_FOUND = "not_found"
    NOT_ALLOWED = "not_allowed"
    NOTHING_TO_RETRY = "nothing_to_retry"


@dataclass(frozen=True, slots=True)
class OperatorResult:
    """What an operator action (cancel, retry, rerun) did, or why it was refused."""

    action: str
    job_id: str
    accepted: bool
    message: str
    refusal: Refusal | None = None
    previous_status: JobStatus | None = None
    status: JobStatus | None = None
    round: int = 0
    stage: int | None = None
    tasks_requeued: int = 0
    stage_resent: bool = False

    def as_dict(self) -> JSON:
        return {
            "action": self.action, "job_id": self.job_id, "accepted": self.accepted, "message": self.message,
            "refusal": self.refusal.value if self.refusal else None,
            "previous_status": self.previous_status.value if self.previous_status else None,
            "status": self.status.value if self.status else None, "round": self.round, "stage": self.stage,
            "tasks_requeued": self.tasks_requeued, "stage_resent": self.stage_resent,
        }


def _refused(action: str, job_id: str, refusal: Refusal, message: str, job: LockedJob | None = None) -> OperatorResult:
    return OperatorResult(action, job_id, False, message, refusal, previous_status=job.status if job else None,
                          status=job.status if job else None, round=job.round if job else 0)


class Rounds:
    """Finalize fence, finish, cancel, retry and rerun; mixed into `core.store.Store`."""

    backend: StoreBackend

    # -- finalize -----------------------------------------------------------------------------------------------
    def begin_finalize(
        self, job_id: str, owner: str, claim_seconds: float, min_recheck: float = 0.2, max_recheck: float = 5.0
    ) -> FinalizeStart:
        """Take the finalize claim for `owner`, or defer this finalize message: while another owner's claim is
        live (to its expiry), or while tasks still run with live leases (until the last lease would end). A round
        that ended `completed` has no task left running (`closed_round`), so no lease is looked for."""

        def work(uow: UnitOfWork) -> FinalizeStart:
            job = uow.lock_jobs([job_id]).get(job_id)
            if job is None or job.status not in FINALIZE_JOB:
                return FinalizeStart(FinalizeDecision.IGNORED)
            claim_left = job.finalize_claim_seconds
            if job.finalize_owner not in (None, owner) and claim_left is not None and claim_left > 0:
                return _defer(uow, job, max(claim_left, min_recheck), "finalize is running elsewhere")
            live = None if closed_round(job) else uow.live_lease_seconds(job_id)
            if live is not None:
                return _defer(uow, job, min(max(live, min_recheck), max_recheck), "tasks are still running")
            claimed = uow.claim_finalize(job_id, owner, claim_seconds, FINALIZE_JOB)
            if claimed is None:
                return FinalizeStart(FinalizeDecision.IGNORED)
            return FinalizeStart(FinalizeDecision.RUN, claimed)

        return self.backend.transaction(work)

    def renew_finalize_claim(self, job_id: str, owner: str, claim_seconds: float) -> bool:
        """Extend `owner`'s finalize claim; False once it is no longer theirs (stop: another owner took over)."""
        return self.backend.transaction(
            lambda uow: uow.renew_finalize_claim(job_id, owner, claim_seconds, FINALIZE_JOB)
        )

    def finish_job(
        self, job_id: str, owner: str, status: JobStatus, result: JSON | None, error: JSON | None
    ) -> bool:
        """Finalizing → a terminal status, only for the owner of the finalize claim; open stages and leftover
        tasks are cancelled (a round that ended `completed` has none: `closed_round`). False if the job was not
        finalizing or the claim is someone else's."""

        def work(uow: UnitOfWork) -> bool:
            job = uow.read_jobs([job_id]).get(job_id)
            sources = job_sources(status)
            if job is None or job.status not in sources or job.finalize_owner != owner:
                return False
            merged = job.error if error is None else error if job.error is None else {
                **job.error, "finalize_error": error}
            if not closed_round(job):
                uow.cancel_tasks(job_id, OPEN_TASK & task_sources(TaskStatus.CANCELLED))
                uow.cancel_stages(job_id, stage_sources(StageStatus.CANCELLED))
            if not uow.finish_job(job_id, owner, status, result, merged, sources):
                raise GuardFailed(f"job {job_id}: the finalize claim is no longer {owner}'s")
            detail: JSON = {"status": status.value, "round": job.round}
            if error is not None:
                detail["error"] = error
            uow.event(job_id, "job_finished", detail)
            return True

        return guarded(self.backend, work, False)

    # -- operator actions ---------------------------------------------------------------------------------------
    def cancel(self, job_id: str, error: JSON) -> OperatorResult:
        """Queued/processing → finalizing(cancelled): unstarted tasks are cancelled at once, running handlers
        finish or stop early, and finalize ends the job `cancelled`."""

        def work(uow: UnitOfWork) -> OperatorResult:
            job = uow.read_jobs([job_id]).get(job_id)
            if job is None:
                return _refused("cancel", job_id, Refusal.NOT_FOUND, f"no job {job_id}")
            if job.status not in LIVE_JOB:
                return _refused("cancel", job_id, Refusal.NOT_ALLOWED,
                                f"job {job_id} is {job.status.value}; only a queued or processing job can be "
                                "cancelled", job)
            after = to_finalizing(uow, job, JobStatus.CANCELLED, error)
            if after.status is not JobStatus.FINALIZING:
                raise GuardFailed(f"job {job_id} changed while being cancelled")
            return OperatorResult("cancel", job_id, True, "cancelled: finalize will end the job", None, job.status,
                                  after.status, job.round, job.current_stage)

        changed = _refused("cancel", job_id, Refusal.NOT_ALLOWED, f"job {job_id} changed while being cancelled")
        return guarded(self.backend, work, changed)

    def retry(self, job_id: str, stage: int, more_attempts: int) -> OperatorResult:
        """Run again what failed: the failed and cancelled tasks of `stage` (where the ended job stopped), with
        `more_attempts` more attempts each, in a new round; or the stage message again when the stage was never
        created (its planner failed, or the job was cancelled before it)."""

        def work(uow: UnitOfWork) -> OperatorResult:
            job = uow.read_jobs([job_id]).get(job_id)
            if job is None:
                return _refused("retry", job_id, Refusal.NOT_FOUND, f"no job {job_id}")
            if job.status not in operator_sources(JobStatus.PROCESSING) or job.current_stage != stage:
                return _refused("retry", job_id, Refusal.NOT_ALLOWED,
                                f"job {job_id} is {job.status.value}; only a failed, cancelled or "
                                "completed_with_errors job can be retried", job)
            changes = uow.requeue_tasks(job_id, stage, operator_task_sources(TaskStatus.QUEUED), more_attempts)
            if changes:
                return _retry_stage(uow, job, stage, changes)
            if uow.lock_stages([(job_id, stage)]):
                return _refused("retry", job_id, Refusal.NOTHING_TO_RETRY,
                                f"stage {stage} of job {job_id} has no failed or cancelled task to run again; "
                                "rerun runs the whole job again", job)
            new_round = _new_round(uow.reopen_job(job_id, operator_sources(JobStatus.PROCESSING)), job_id)
            uow.send([stage_message(job_id, job.job_type, stage, new_round)])
            _retried_event(uow, job, new_round, 0, stage_resent=True)
            return OperatorResult("retry", job_id, True, f"stage {stage} is planned again", None, job.status,
                                  JobStatus.PROCESSING, new_round, stage, 0, True)

        changed = _refused("retry", job_id, Refusal.NOT_ALLOWED, f"job {job_id} changed while being retried")
        return guarded(self.backend, work, changed)

    def rerun(self, job_id: str) -> OperatorResult:
        """Start a fresh round of the same job id: the ended round (result, errors, stages and tasks) is kept as
        history, and the job is queued at stage 1 again with new message ids (the round is in them)."""

        def work(uow: UnitOfWork) -> OperatorResult:
            job = uow.read_jobs([job_id]).get(job_id)
            if job is None:
                return _refused("rerun", job_id, Refusal.NOT_FOUND, f"no job {job_id}")
            if job.status not in operator_sources(JobStatus.QUEUED):
                return _refused("rerun", job_id, Refusal.NOT_ALLOWED,
                                f"job {job_id} is {job.status.value}; only an ended job can be run again", job)
            uow.archive_round(job_id, job.round)
            new_round = _new_round(uow.restart_job(job_id, operator_sources(JobStatus.QUEUED)), job_id)
            uow.event(job_id, "job_rerun", {"round": new_round, "previous_round": job.round,
                                            "previous_status": job.status.value, "previous_error": job.error})
            uow.send([stage_message(job_id, job.job_type, 1, new_round)])
            return OperatorResult("rerun", job_id, True, f"round {new_round} starts at stage 1", None, job.status,
                                  JobStatus.QUEUED, new_round, 1)

        changed = _refused("rerun", job_id, Refusal.NOT_ALLOWED, f"job {job_id} changed while being rerun")
        return guarded(self.backend, work, changed)


def _retry_stage(uow: UnitOfWork, job: LockedJob, stage: int, changes: list[TaskChange]) -> OperatorResult:
    uow.reopen_stage(job.job_id, stage, operator_stage_sources(StageStatus.PROCESSING), OPEN_TASK)
    new_round = _new_round(uow.reopen_job(job.job_id, operator_sources(JobStatus.PROCESSING)), job.job_id)
    uow.send([
        task_message(c.task_id, c.job_id, job.job_type, c.stage, c.task_type, c.attempt + 1, round_number=new_round)
        for c in changes
    ])
    _retried_event(uow, job, new_round, len(changes), stage_resent=False)
    return OperatorResult("retry", job.job_id, True, f"{len(changes)} task(s) of stage {stage} run again", None,
                          job.status, JobStatus.PROCESSING, new_round, stage, len(changes), False)


def _new_round(round_number: int | None, job_id: str) -> int:
    """The job row's closing guarded update: its new round, or the unit of work rolls back."""
    if round_number is None:
        raise GuardFailed(f"job {job_id} changed while an operator acted on it")
    return round_number


def _retried_event(uow: UnitOfWork, job: LockedJob, new_round: int, requeued: int, *, stage_resent: bool) -> None:
    uow.event(job.job_id, "job_retried", {
        "round": new_round, "tasks_requeued": requeued, "stage_resent": stage_resent,
        "previous_status": job.status.value, "previous_error": job.error,
    }, stage=job.current_stage)


def closed_round(job: LockedJob) -> bool:
    """A finalizing job whose round ended `completed` has nothing open: its outcome is set to completed only by the
    transaction whose counters showed every task of every stage completed (`core.outcomes.round_completed`), and
    no operator action reaches a finalizing job. So no lease to wait for, no task or stage to cancel."""
    return job.status in FINALIZE_JOB and job.outcome is JobStatus.COMPLETED


def _defer(uow: UnitOfWork, job: LockedJob, delay: float, reason: str) -> FinalizeStart:
    """Finalize again later; the deferral counter on the job row names the message (never the event log)."""
    count = uow.count_finalize_deferral(job.job_id, FINALIZE_JOB)
    if count is None:
        return FinalizeStart(FinalizeDecision.IGNORED)
    uow.event(job.job_id, "finalize_deferred", {"delay_s": round(delay, 3), "reason": reason})
    uow.send([deferred_finalize_message(job.job_id, job.job_type, job.round, count, delay)])
    return FinalizeStart(FinalizeDecision.DEFERRED, delay_seconds=delay, reason=reason)
