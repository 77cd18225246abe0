"""The decisions of task outcomes and fan-in, made once over a unit of work: apply outcomes, complete and advance
a stage, fail fast, move a job to finalizing, and end a completed round inline.

Every function here runs inside one unit of work that read the jobs concerned (`read_jobs`) and decides on that
read; the job row's own update comes last and is guarded, so a job that moved on meanwhile changes nothing (lock
order: tasks, stages, job). A function that changes a job returns its new state.

`inline_finish` names the job types that keep the default `finalize` (the caller knows the job definitions; this
module does not). For those, a round that ends `completed` ends in the transaction that completes its last stage:
every task completed, so nothing runs, nothing is left to cancel and no code of the job's runs; there is nothing
to fence and no finalize message to send. The job still passes through finalizing (the transition tables are
unchanged; the timeline shows `finalizing` then `job_finished`) and its result is the default finalize's, from
the stage counters. Any other outcome (failed, cancelled, completed_with_errors) may still have handlers running,
so it goes through the finalize message, which waits for their leases.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from core.messages import finalize_message, stage_message, task_message
from core.models import (
    JSON,
    ErrorInfo,
    FailurePolicy,
    JobStatus,
    OutcomeKind,
    ReceivedMessage,
    StageStatus,
    TaskOutcome,
    TaskStatus,
)
from core.progress import StageCounters, default_result, task_counts
from core.states import UNSTARTED_TASK, WORKING_JOB, job_sources, stage_sources, task_sources
from core.task_statements import CountedCompletions, TaskChange
from core.uow import JobMove, LockedJob, MoveJob, StageCount, StageTotals, UnitOfWork


@dataclass
class _Tally:
    done: int = 0
    failed: int = 0


@dataclass
class _Batch:
    """What one batch of outcomes changed, per stage."""

    tallies: dict[tuple[str, int], _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    applied: set[str] = field(default_factory=set)

    def count(self, changes: Sequence[TaskChange], *, failed: bool = False) -> None:
        for change in changes:
            tally = self.tallies[(change.job_id, change.stage)]
            tally.done += 1
            tally.failed += int(failed)
            self.applied.add(change.task_id)


def apply_outcomes(
    uow: UnitOfWork, outcomes: Sequence[TaskOutcome], inline_finish: frozenset[str] = frozenset()
) -> None:
    """Record a batch of outcomes. Lock order: tasks (in id order), then stage counters (in (job, stage) order),
    then the job row (advance, finalize, fail fast), each guarded.

    An outcome counts only for the attempt that is still current (status running, same attempt); any other is
    late (its lease was taken back, or the job ended) and is recorded as a `late_outcome` event, nothing else.
    While the job works (`processing`) a failure may fail it fast and a retry is scheduled; once it is cancelled
    or failing, a completion or failure is still recorded but a retry is not scheduled: the task is cancelled.
    """
    ordered = sorted(outcomes, key=lambda o: o.task.task_id)
    # A batch of completions alone decides nothing about its jobs until a counter reaches zero, so the jobs are read
    # only when a retry or failure needs them (or, below, when a stage is done): the common batch costs no read.
    needs_jobs = any(o.kind is not OutcomeKind.COMPLETED for o in ordered)
    jobs = uow.read_jobs(sorted({o.task.job_id for o in outcomes})) if needs_jobs else {}
    working = {job_id for job_id, job in jobs.items() if job.status in WORKING_JOB}
    batch = _Batch()

    completed = [o for o in ordered if o.kind is OutcomeKind.COMPLETED]
    if completed:
        batch.count(uow.complete_tasks(
            [o.task.task_id for o in completed], [o.task.attempt for o in completed],
            [o.result or {} for o in completed], task_sources(TaskStatus.COMPLETED),
        ))

    retries = [o for o in ordered if o.kind is OutcomeKind.RETRY and o.task.job_id in working]
    if retries:
        _schedule_retries(uow, jobs, retries, batch)
    stopped = [o for o in ordered if o.kind is OutcomeKind.RETRY and o.task.job_id not in working]
    if stopped:  # cancelled, like the job's other unfinished tasks: not done, so not counted toward fan-in
        cancelled = uow.end_tasks(
            TaskStatus.CANCELLED, [o.task.task_id for o in stopped], [o.task.attempt for o in stopped],
            [_error(o) for o in stopped], task_sources(TaskStatus.CANCELLED),
        )
        batch.applied.update(c.task_id for c in cancelled)

    failing: dict[str, JSON] = {}  # fail-fast jobs this batch fails, with the first failure's error
    failed = [o for o in ordered if o.kind is OutcomeKind.FAILED]
    if failed:
        changes = uow.end_tasks(
            TaskStatus.FAILED, [o.task.task_id for o in failed], [o.task.attempt for o in failed],
            [_error(o) for o in failed], task_sources(TaskStatus.FAILED),
        )
        batch.count(changes, failed=True)
        errors = {o.task.task_id: _error(o) for o in failed}
        for change in changes:
            error = errors[change.task_id]
            uow.event(change.job_id, "task_failed", {"error": error}, stage=change.stage, task_id=change.task_id)
            job = jobs[change.job_id]
            if job.status in WORKING_JOB and job.failure_policy is FailurePolicy.FAIL_FAST:
                failing.setdefault(change.job_id, {**error, "task_id": change.task_id})
    # A failing job's unstarted tasks are cancelled with the other task rows; its own row moves last, below.
    unstarted = {job_id: _cancel_unstarted(uow, job_id) for job_id in sorted(failing)}

    late = [o for o in ordered if o.task.task_id not in batch.applied]
    if late:
        record_late(uow, late)

    # Every stage counter of the batch in one statement, then every stage it took to zero completed in one (stage
    # rows in (job, stage) order), then each job moved on (job rows last, in job order).
    counts = [StageCount(job_id, stage, t.done, t.failed) for (job_id, stage), t in sorted(batch.tallies.items())]
    remaining = uow.decrement_stages(counts) if counts else {}
    zeroed = [key for key in sorted(remaining) if remaining[key] == 0]
    unread = sorted({job_id for job_id, _ in zeroed if job_id not in jobs})
    if unread:
        jobs.update(uow.read_jobs(unread))
    closed = _complete_stages(uow, [key for key in zeroed if key[0] in jobs])
    # A failing job's stage may be done too, but the job fails: every job row moves in one statement, in id order.
    _stages_completed(uow, jobs, closed, inline_finish,
                      {job_id: (error, unstarted[job_id]) for job_id, error in failing.items()})


WIDE_STAGE_TASKS = 64
"""From this many tasks a stage is wide: its completions, batched by many threads at once, contend on its counter
row, so a batch of them is recorded by one statement (`complete_counted`) and the stage closed after it. A narrower
stage's few batches record and close in one transaction, one commit fewer."""


def counted_alone(outcomes: Sequence[TaskOutcome]) -> bool:
    """Whether a batch goes to `complete_counted`: completions alone, of wide stages."""
    return all(o.kind is OutcomeKind.COMPLETED and o.task.stage_tasks >= WIDE_STAGE_TASKS for o in outcomes)


def complete_counted(
    uow: UnitOfWork, completed: Sequence[TaskOutcome], acknowledge: Sequence[ReceivedMessage] = ()
) -> CountedCompletions:
    """A batch of completions alone, as one statement: the tasks completed (guarded on status and attempt), their
    stage counters decremented and their messages (`acknowledge`) completed. Nothing else needs deciding until a
    counter reaches zero, so the common batch holds a stage's counter row only while it commits. A stage it took
    to zero is closed next (`close_stage`)."""
    ordered = sorted(completed, key=lambda o: o.task.task_id)
    return uow.complete_tasks_counted(
        [o.task.task_id for o in ordered], [o.task.attempt for o in ordered], [o.result or {} for o in ordered],
        task_sources(TaskStatus.COMPLETED), acknowledge,
    )


def close_stage(uow: UnitOfWork, job_id: str, stage: int, inline_finish: frozenset[str] = frozenset()) -> bool:
    """The fan-in decision for a stage whose counter reached zero in an earlier statement: complete the stage and
    advance or finalize the job, as `stage_done`. Whoever runs it first - the worker whose completions took the
    counter to zero, or the janitor - closes the stage; the stage's guarded completion (still open, counter at
    zero) makes every later run, and one after a retry reopened the stage, change nothing. True if it closed it."""
    job = uow.read_jobs([job_id]).get(job_id)
    if job is None or not _complete_stage(uow, job_id, stage):
        return False
    _stage_completed(uow, job, stage, inline_finish)
    return True


def _schedule_retries(uow: UnitOfWork, jobs: dict[str, LockedJob], retries: list[TaskOutcome], batch: _Batch) -> None:
    changes = uow.schedule_retries(
        [o.task.task_id for o in retries], [o.task.attempt for o in retries], [_error(o) for o in retries],
        [o.retry_delay_seconds for o in retries], task_sources(TaskStatus.RETRY_SCHEDULED),
    )
    by_id = {o.task.task_id: o for o in retries}
    messages = []
    for change in changes:
        outcome, job = by_id[change.task_id], jobs[change.job_id]
        delay = outcome.retry_delay_seconds
        messages.append(task_message(
            change.task_id, change.job_id, job.job_type, change.stage, change.task_type, change.attempt + 1, delay,
            round_number=job.round,
        ))
        uow.event(change.job_id, "task_retry_scheduled",
                  {"attempt": change.attempt, "retry_in_s": round(delay, 3), "error": _error(outcome)},
                  stage=change.stage, task_id=change.task_id)
        batch.applied.add(change.task_id)
    uow.send(messages)


def record_late(uow: UnitOfWork, late: Sequence[TaskOutcome]) -> None:
    """Outcomes of attempts that are no longer current change nothing; the timeline says they came."""
    current = {state.task_id: state for state in uow.task_states([o.task.task_id for o in late])}
    for o in late:
        state = current.get(o.task.task_id)
        detail: JSON = {
            "attempt": o.task.attempt, "outcome": o.kind.value, "worker_result_kept": False,
            "task_status": state.status.value if state else None, "task_attempt": state.attempt if state else None,
        }
        if o.error is not None:
            detail["error"] = o.error.to_json()
        uow.event_if_job_exists(o.task.job_id, "late_outcome", detail, stage=o.task.stage, task_id=o.task.task_id)


def stage_done(
    uow: UnitOfWork, job: LockedJob, stage: int, inline_finish: frozenset[str] = frozenset()
) -> LockedJob:
    """The fan-in decision, taken by exactly one transaction: the one that completes the stage (its counter at
    zero). A stage that is no longer open, or was reopened since its counter reached zero, changes nothing."""
    if not _complete_stage(uow, job.job_id, stage):
        return job
    return _stage_completed(uow, job, stage, inline_finish)


def _complete_stage(uow: UnitOfWork, job_id: str, stage: int) -> bool:
    return bool(_complete_stages(uow, [(job_id, stage)]))


def _complete_stages(uow: UnitOfWork, keys: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """Complete the stages among `keys` still open with their counter at zero; those completed, in key order."""
    if not keys:
        return []
    tallies = uow.complete_stages(keys, stage_sources(StageStatus.COMPLETED))
    for (job_id, stage), tally in sorted(tallies.items()):
        uow.event(job_id, "stage_completed", {"tasks": tally.task_count, "failed": tally.failed}, stage=stage)
    return sorted(tallies)


def _stage_completed(uow: UnitOfWork, job: LockedJob, stage: int, inline_finish: frozenset[str]) -> LockedJob:
    """Advance the job past a stage just completed, or move it to finalizing after its last stage."""
    return _stages_completed(uow, {job.job_id: job}, [(job.job_id, stage)], inline_finish)[job.job_id]


def _stages_completed(
    uow: UnitOfWork, jobs: dict[str, LockedJob], keys: Sequence[tuple[str, int]], inline_finish: frozenset[str],
    failing: Mapping[str, tuple[JSON, int]] | None = None,
) -> dict[str, LockedJob]:
    """Move on every job whose stage (of `keys`) was just completed, and fail every job of `failing` (its error and
    how many of its unstarted tasks were cancelled), in one statement for all of them: past the stage, or to
    finalizing after the last; a round that ends completed, of a job type in `inline_finish` (it keeps the default
    finalize), on to completed with the default finalize's result and no finalize message. The jobs, updated where
    they moved."""
    failing = failing or {}
    moving = [(jobs[job_id], stage) for job_id, stage in sorted(keys)
              if job_id not in failing and jobs[job_id].status in WORKING_JOB and jobs[job_id].current_stage == stage]
    ending = [job.job_id for job, stage in moving if stage >= job.total_stages]
    totals = uow.stage_totals(ending) if ending else {}
    moves = [_move(job, stage, totals.get(job.job_id, []), inline_finish) for job, stage in moving]
    moves += [MoveJob(job_id, jobs[job_id].current_stage, JobMove.FAIL, JobStatus.FAILED, error=error)
              for job_id, (error, _) in failing.items()]
    if not moves:
        return jobs
    moves.sort(key=lambda m: m.job_id)
    moved = uow.move_jobs(moves, job_sources(JobStatus.PROCESSING) & WORKING_JOB,
                          job_sources(JobStatus.FINALIZING) & WORKING_JOB, job_sources(JobStatus.FINALIZING))
    updated = dict(jobs)
    messages = []
    for move in moves:
        if move.job_id not in moved:
            continue
        job = jobs[move.job_id]
        if move.move is JobMove.ADVANCE:
            messages.append(stage_message(job.job_id, job.job_type, move.stage + 1, job.round))
            updated[job.job_id] = replace(job, current_stage=move.stage + 1, plan_attempts=0)
            continue
        assert move.outcome is not None
        if move.move is JobMove.FAIL:
            updated[job.job_id] = _now_finalizing(uow, job, move.outcome, move.error, failing[job.job_id][1])
            continue
        uow.event(job.job_id, "finalizing", {"outcome": move.outcome.value})
        updated[job.job_id] = replace(job, status=JobStatus.FINALIZING, outcome=move.outcome)
        if move.move is JobMove.FINISH:
            uow.event(job.job_id, "job_finished", {"status": JobStatus.COMPLETED.value, "round": job.round,
                                                   "finalize": "inline"})
            updated[job.job_id] = replace(job, status=JobStatus.COMPLETED, outcome=move.outcome, result=move.result)
        else:
            messages.append(finalize_message(job.job_id, job.job_type, job.round))
    uow.send(messages)
    return updated


def _move(job: LockedJob, stage: int, totals: Sequence[StageTotals], inline_finish: frozenset[str]) -> MoveJob:
    """How the job moves on from its completed `stage` (`totals`: its stages' counters, for the last stage)."""
    if stage < job.total_stages:
        return MoveJob(job.job_id, stage, JobMove.ADVANCE)
    outcome = JobStatus.COMPLETED_WITH_ERRORS if any(t.failed for t in totals) else JobStatus.COMPLETED
    if job.job_type in inline_finish and round_completed(outcome, totals):
        counts = task_counts(JobStatus.FINALIZING, [
            StageCounters(t.stage, t.task_count, t.remaining, t.failed, running=0, retry_scheduled=0) for t in totals
        ])
        return MoveJob(job.job_id, stage, JobMove.FINISH, outcome, default_result(JobStatus.COMPLETED, counts))
    return MoveJob(job.job_id, stage, JobMove.FINALIZE, outcome)


def round_completed(outcome: JobStatus, totals: Sequence[StageTotals]) -> bool:
    """A round that ends `completed` has every task of every stage completed (no stage counter left, none failed):
    no task runs or waits, no stage is open. The finalize fence's shortcuts rest on this."""
    return outcome is JobStatus.COMPLETED and all(t.remaining == 0 and t.failed == 0 for t in totals)


def to_finalizing(uow: UnitOfWork, job: LockedJob, outcome: JobStatus, error: JSON | None) -> LockedJob:
    """Fail or cancel a live job: finalizing with that outcome, its unstarted tasks cancelled at once (running
    handlers finish or see the cancellation), and the finalize message."""
    if job.status not in job_sources(JobStatus.FINALIZING):
        return job
    # Tasks before the job row (the lock order). Should the job have left queued/processing meanwhile, its
    # unstarted tasks were cancelled by whatever moved it, so cancelling them here changes nothing that matters.
    return _finalizing(uow, job, outcome, error, _cancel_unstarted(uow, job.job_id))


def _cancel_unstarted(uow: UnitOfWork, job_id: str) -> int:
    return uow.cancel_tasks(job_id, UNSTARTED_TASK & task_sources(TaskStatus.CANCELLED))


def _finalizing(uow: UnitOfWork, job: LockedJob, outcome: JobStatus, error: JSON | None, cancelled: int) -> LockedJob:
    """The job row's guarded move to finalizing (its unstarted tasks already cancelled), its event and message."""
    if not uow.job_to_finalizing(job.job_id, outcome, error, job_sources(JobStatus.FINALIZING)):
        return job
    return _now_finalizing(uow, job, outcome, error, cancelled)


def _now_finalizing(uow: UnitOfWork, job: LockedJob, outcome: JobStatus, error: JSON | None, cancelled: int
                    ) -> LockedJob:
    """The event and finalize message of a job its guarded update has just failed or cancelled."""
    kind = "job_failed" if outcome is JobStatus.FAILED else "job_cancelled"
    uow.event(job.job_id, kind, {"outcome": outcome.value, "error": error, "cancelled_tasks": cancelled})
    uow.send([finalize_message(job.job_id, job.job_type, job.round)])
    return replace(job, status=JobStatus.FINALIZING, outcome=outcome, error=job.error or error)


def _error(outcome: TaskOutcome) -> JSON:
    error: ErrorInfo | None = outcome.error
    assert error is not None, "retry and failure outcomes carry an error"
    return error.to_json()
