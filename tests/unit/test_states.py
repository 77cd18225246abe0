"""The job and task state machines: every (from, to) pair checked against the transition tables."""

from __future__ import annotations

import itertools

import pytest

from core.errors import InvalidTransition
from core.models import TERMINAL_JOB_STATUSES, JobStatus, TaskStatus
from core.states import (
    JOB_TRANSITIONS,
    OPERATOR_TRANSITIONS,
    TASK_TRANSITIONS,
    check_job_transition,
    check_operator_transition,
    check_task_transition,
    job_sources,
    operator_sources,
    task_sources,
)

ALLOWED_JOB = {
    (JobStatus.QUEUED, JobStatus.PROCESSING), (JobStatus.QUEUED, JobStatus.FINALIZING),
    (JobStatus.PROCESSING, JobStatus.PROCESSING), (JobStatus.PROCESSING, JobStatus.FINALIZING),
    (JobStatus.FINALIZING, JobStatus.COMPLETED), (JobStatus.FINALIZING, JobStatus.COMPLETED_WITH_ERRORS),
    (JobStatus.FINALIZING, JobStatus.FAILED), (JobStatus.FINALIZING, JobStatus.CANCELLED),
}
ALLOWED_TASK = {
    (TaskStatus.QUEUED, TaskStatus.RUNNING), (TaskStatus.QUEUED, TaskStatus.CANCELLED),
    *((TaskStatus.RUNNING, t) for t in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.RETRY_SCHEDULED,
                                        TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.CANCELLED)),
    (TaskStatus.RETRY_SCHEDULED, TaskStatus.RUNNING), (TaskStatus.RETRY_SCHEDULED, TaskStatus.CANCELLED),
}


def test_tables_cover_every_status() -> None:
    assert set(JOB_TRANSITIONS) == set(JobStatus)
    assert set(TASK_TRANSITIONS) == set(TaskStatus)


@pytest.mark.parametrize(("current", "target"), list(itertools.product(JobStatus, JobStatus)))
def test_job_transition(current: JobStatus, target: JobStatus) -> None:
    allowed = (current, target) in ALLOWED_JOB
    assert (target in JOB_TRANSITIONS[current]) is allowed
    assert (current in job_sources(target)) is allowed
    if allowed:
        check_job_transition(current, target)
    else:
        with pytest.raises(InvalidTransition, match=f"from {current.value} to {target.value}"):
            check_job_transition(current, target)


@pytest.mark.parametrize(("current", "target"), list(itertools.product(TaskStatus, TaskStatus)))
def test_task_transition(current: TaskStatus, target: TaskStatus) -> None:
    allowed = (current, target) in ALLOWED_TASK
    assert (target in TASK_TRANSITIONS[current]) is allowed
    assert (current in task_sources(target)) is allowed
    if allowed:
        check_task_transition(current, target)
    else:
        with pytest.raises(InvalidTransition):
            check_task_transition(current, target)


@pytest.mark.parametrize("status", list(JobStatus))
def test_only_terminal_jobs_have_no_way_out(status: JobStatus) -> None:
    assert status.terminal is (status in TERMINAL_JOB_STATUSES)
    exits = {target for target in JobStatus if status in job_sources(target)}
    assert exits == set(JOB_TRANSITIONS[status])
    assert (not exits) is status.terminal


@pytest.mark.parametrize("status", list(TaskStatus))
def test_only_terminal_tasks_have_no_way_out(status: TaskStatus) -> None:
    exits = {target for target in TaskStatus if status in task_sources(target)}
    assert exits == set(TASK_TRANSITIONS[status])
    assert (not exits) is status.terminal


def test_sources_are_the_inverted_tables() -> None:
    for target in JobStatus:
        assert job_sources(target) == {s for s, ts in JOB_TRANSITIONS.items() if target in ts}
    for task_target in TaskStatus:
        assert task_sources(task_target) == {s for s, ts in TASK_TRANSITIONS.items() if task_target in ts}
    assert job_sources(JobStatus.QUEUED) == frozenset()
    assert task_sources(TaskStatus.QUEUED) == {TaskStatus.RUNNING}
    assert job_sources(JobStatus.FINALIZING) == {JobStatus.QUEUED, JobStatus.PROCESSING}


def test_retry_and_rerun_are_operator_transitions_only() -> None:
    ended = {JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.COMPLETED_WITH_ERRORS}
    for status in TERMINAL_JOB_STATUSES:
        assert not JOB_TRANSITIONS[status], "no message may revive an ended job"
    assert OPERATOR_TRANSITIONS[JobStatus.FAILED] == {JobStatus.PROCESSING, JobStatus.QUEUED}
    assert operator_sources(JobStatus.PROCESSING) == ended
    assert operator_sources(JobStatus.QUEUED) == ended | {JobStatus.COMPLETED}
    check_operator_transition(JobStatus.FAILED, JobStatus.PROCESSING)
    for status in (JobStatus.COMPLETED, JobStatus.PROCESSING, JobStatus.FINALIZING):
        with pytest.raises(InvalidTransition):
            check_operator_transition(status, JobStatus.PROCESSING)
