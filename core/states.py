"""The job and task state machines as explicit transition tables; terminal states have no way out."""

from __future__ import annotations

from core.errors import InvalidTransition
from core.models import JobStatus, TaskStatus

J = JobStatus
T = TaskStatus

JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    J.QUEUED: frozenset({J.PROCESSING, J.FINALIZING, J.CANCELLED}),
    J.PROCESSING: frozenset({J.PROCESSING, J.FINALIZING, J.CANCELLED}),
    J.FINALIZING: frozenset({J.COMPLETED, J.COMPLETED_WITH_ERRORS, J.FAILED, J.CANCELLED}),
    J.COMPLETED: frozenset(),
    J.COMPLETED_WITH_ERRORS: frozenset(),
    J.FAILED: frozenset(),
    J.CANCELLED: frozenset(),
}

TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    T.QUEUED: frozenset({T.RUNNING, T.CANCELLED}),
    T.RUNNING: frozenset({T.COMPLETED, T.FAILED, T.RETRY_SCHEDULED, T.QUEUED, T.RUNNING, T.CANCELLED}),
    T.RETRY_SCHEDULED: frozenset({T.RUNNING, T.CANCELLED}),
    T.COMPLETED: frozenset(),
    T.FAILED: frozenset(),
    T.CANCELLED: frozenset(),
}


def job_sources(target: JobStatus) -> frozenset[JobStatus]:
    """Statuses a job may move to `target` from: the WHERE clause of every guarded job update."""
    return frozenset(s for s, targets in JOB_TRANSITIONS.items() if target in targets)


def task_sources(target: TaskStatus) -> frozenset[TaskStatus]:
    """Statuses a task may move to `target` from: the WHERE clause of every guarded task update."""
    return frozenset(s for s, targets in TASK_TRANSITIONS.items() if target in targets)


def check_job_transition(current: JobStatus, target: JobStatus) -> None:
    if target not in JOB_TRANSITIONS[current]:
        raise InvalidTransition(f"job cannot go from {current.value} to {target.value}")


def check_task_transition(current: TaskStatus, target: TaskStatus) -> None:
    if target not in TASK_TRANSITIONS[current]:
        raise InvalidTransition(f"task cannot go from {current.value} to {target.value}")


OPERATOR_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    J.FAILED: frozenset({J.PROCESSING}),
}
"""Moves only an operator may make (the retry command), never a queue message: a late or duplicate message
must not revive a finished job, so these stay out of `JOB_TRANSITIONS`."""


def operator_sources(target: JobStatus) -> frozenset[JobStatus]:
    """Statuses an operator action may move a job to `target` from: the guard of the retry update."""
    return frozenset(s for s, targets in OPERATOR_TRANSITIONS.items() if target in targets)


def check_operator_transition(current: JobStatus, target: JobStatus) -> None:
    if target not in OPERATOR_TRANSITIONS.get(current, frozenset()):
        raise InvalidTransition(f"an operator cannot move a job from {current.value} to {target.value}")
