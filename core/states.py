"""The job, stage and task state machines as explicit transition tables; terminal states have no way out.

The tables list exactly the moves the engine makes, and every guarded statement of the store takes its allowed
source states from them (or from the named guard sets below), so the state machine has one source of truth.
Moves only an operator may make (retry, rerun) live in separate tables: a late or duplicate queue message must
never revive a finished job.
"""

from __future__ import annotations

from core.errors import InvalidTransition
from core.models import JobStatus, StageStatus, TaskStatus

J = JobStatus
T = TaskStatus
S = StageStatus

JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    J.QUEUED: frozenset({J.PROCESSING, J.FINALIZING}),
    J.PROCESSING: frozenset({J.PROCESSING, J.FINALIZING}),
    J.FINALIZING: frozenset({J.COMPLETED, J.COMPLETED_WITH_ERRORS, J.FAILED, J.CANCELLED}),
    J.COMPLETED: frozenset(),
    J.COMPLETED_WITH_ERRORS: frozenset(),
    J.FAILED: frozenset(),
    J.CANCELLED: frozenset(),
}
"""A completed round of a job type that keeps the default finalize goes processing → finalizing → completed in one
unit of work (`core.outcomes.stage_done`): both edges in one statement (`UnitOfWork.move_jobs`, a finish), guarded
by the first, so no direct edge processing → completed exists to widen the guard of `finish_job`."""

TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    T.QUEUED: frozenset({T.RUNNING, T.CANCELLED}),
    T.RUNNING: frozenset({T.COMPLETED, T.FAILED, T.RETRY_SCHEDULED, T.QUEUED, T.RUNNING, T.CANCELLED}),
    T.RETRY_SCHEDULED: frozenset({T.RUNNING, T.CANCELLED}),
    T.COMPLETED: frozenset(),
    T.FAILED: frozenset(),
    T.CANCELLED: frozenset(),
}

STAGE_TRANSITIONS: dict[StageStatus, frozenset[StageStatus]] = {
    S.PROCESSING: frozenset({S.COMPLETED, S.CANCELLED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}

OPERATOR_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    J.FAILED: frozenset({J.PROCESSING, J.QUEUED}),
    J.CANCELLED: frozenset({J.PROCESSING, J.QUEUED}),
    J.COMPLETED_WITH_ERRORS: frozenset({J.PROCESSING, J.QUEUED}),
    J.COMPLETED: frozenset({J.QUEUED}),
}
"""Job moves only an operator makes: `retry` (→ processing, the failed work of the stage where the job stopped)
and `rerun` (→ queued at stage 1, a fresh round). They stay out of `JOB_TRANSITIONS`."""

OPERATOR_TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    T.FAILED: frozenset({T.QUEUED}),
    T.CANCELLED: frozenset({T.QUEUED}),
}
"""Task moves of `retry`: failed and cancelled tasks of the retried stage are queued again."""

OPERATOR_STAGE_TRANSITIONS: dict[StageStatus, frozenset[StageStatus]] = {
    S.COMPLETED: frozenset({S.PROCESSING}),
    S.CANCELLED: frozenset({S.PROCESSING}),
}
"""Stage moves of `retry`: the retried stage is open again until its requeued tasks are done."""

WORKING_JOB = frozenset({J.PROCESSING})
"""Job statuses in which tasks are claimed, retried and counted toward advancing the job."""

LIVE_JOB = frozenset({J.QUEUED, J.PROCESSING})
"""Job statuses in which work goes on: a stage may be planned, and handlers need not stop."""

OPEN_JOB = frozenset({J.QUEUED, J.PROCESSING, J.FINALIZING})
"""Job statuses of a job that has not ended."""

FINALIZE_JOB = frozenset({J.FINALIZING})
"""Job statuses in which the finalize claim may be taken, renewed or deferred."""

LEASED_TASK = frozenset({T.RUNNING})
"""Tasks that hold a lease: renewed while the handler runs, taken back once it expired."""

WAITING_TASK = frozenset({T.RETRY_SCHEDULED})
"""Tasks waiting for a scheduled retry: the ones whose message may be re-sent without a new attempt."""

UNSTARTED_TASK = frozenset({T.QUEUED, T.RETRY_SCHEDULED})
"""Tasks no handler holds: cancelled at once when the job is cancelled or fails."""

OPEN_TASK = frozenset({T.QUEUED, T.RUNNING, T.RETRY_SCHEDULED})
"""Tasks not yet ended: cancelled when their job finishes."""

DONE_TASK = frozenset({T.COMPLETED, T.FAILED})
"""Tasks that count as done toward their stage's fan-in counter."""


def job_sources(target: JobStatus) -> frozenset[JobStatus]:
    """Statuses a job may move to `target` from: the WHERE clause of every guarded job update."""
    return frozenset(s for s, targets in JOB_TRANSITIONS.items() if target in targets)


def task_sources(target: TaskStatus) -> frozenset[TaskStatus]:
    """Statuses a task may move to `target` from: the WHERE clause of every guarded task update."""
    return frozenset(s for s, targets in TASK_TRANSITIONS.items() if target in targets)


def stage_sources(target: StageStatus) -> frozenset[StageStatus]:
    """Statuses a stage may move to `target` from."""
    return frozenset(s for s, targets in STAGE_TRANSITIONS.items() if target in targets)


def claim_sources() -> frozenset[TaskStatus]:
    """Statuses a task is claimed from when due; a running task is claimed only once its lease has expired."""
    return task_sources(T.RUNNING) - {T.RUNNING}


def check_job_transition(current: JobStatus, target: JobStatus) -> None:
    if target not in JOB_TRANSITIONS[current]:
        raise InvalidTransition(f"job cannot go from {current.value} to {target.value}")


def check_task_transition(current: TaskStatus, target: TaskStatus) -> None:
    if target not in TASK_TRANSITIONS[current]:
        raise InvalidTransition(f"task cannot go from {current.value} to {target.value}")


def operator_sources(target: JobStatus) -> frozenset[JobStatus]:
    """Statuses an operator action may move a job to `target` from: the guard of retry and rerun."""
    return frozenset(s for s, targets in OPERATOR_TRANSITIONS.items() if target in targets)


def operator_task_sources(target: TaskStatus) -> frozenset[TaskStatus]:
    return frozenset(s for s, targets in OPERATOR_TASK_TRANSITIONS.items() if target in targets)


def operator_stage_sources(target: StageStatus) -> frozenset[StageStatus]:
    return frozenset(s for s, targets in OPERATOR_STAGE_TRANSITIONS.items() if target in targets)


def check_operator_transition(current: JobStatus, target: JobStatus) -> None:
    if target not in OPERATOR_TRANSITIONS.get(current, frozenset()):
        raise InvalidTransition(f"an operator cannot move a job from {current.value} to {target.value}")


def values(statuses: frozenset[JobStatus] | frozenset[TaskStatus] | frozenset[StageStatus]) -> list[str]:
    """A guard set as the sorted list of values a SQL statement takes as its parameter."""
    return sorted(s.value for s in statuses)
