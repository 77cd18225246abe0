"""Row → record conversion for the PostgreSQL store, and JSON adaptation of parameters."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from core.models import (
    JSON,
    ClaimedTask,
    EventView,
    FailurePolicy,
    JobRecord,
    JobStatus,
    StageStatus,
    StageView,
    TaskResultRow,
    TaskStatus,
    TaskView,
)
from core.task_statements import Resend, TaskChange
from core.uow import LockedJob


def job_from_row(row: tuple[Any, ...]) -> JobRecord:
    """A job from the store's job columns (`select_job`); the round and planner attempts end the row."""
    (job_id, job_type, status, parameters, current_stage, total_stages, policy, result, error,
     created_at, updated_at, finished_at, outcome, round_number, plan_attempts) = row
    return JobRecord(
        job_id=job_id,
        job_type=job_type,
        status=JobStatus(status),
        parameters=parameters,
        current_stage=current_stage,
        total_stages=total_stages,
        failure_policy=FailurePolicy(policy),
        result=result,
        error=error,
        created_at=created_at,
        updated_at=updated_at,
        finished_at=finished_at,
        outcome=JobStatus(outcome) if outcome else None,
        round=round_number,
        plan_attempts=plan_attempts,
    )


def locked_job_from_row(row: tuple[Any, ...]) -> LockedJob:
    (job_id, job_type, status, current_stage, total_stages, policy, round_number, outcome, error, result,
     plan_attempts, deferrals, owner, claim_seconds) = row
    return LockedJob(
        job_id, job_type, JobStatus(status), current_stage, total_stages, FailurePolicy(policy), round_number,
        JobStatus(outcome) if outcome else None, error, result, plan_attempts, deferrals, owner,
        None if claim_seconds is None else float(claim_seconds),
    )


def resend_from_row(row: tuple[Any, ...]) -> Resend:
    task_id, job_id, stage, task_type, attempt, job_type, round_number, resend, delay = row
    return Resend(TaskChange(task_id, job_id, stage, task_type, attempt), job_type, round_number, resend, float(delay))


def task_change_from_row(row: tuple[Any, ...]) -> TaskChange:
    task_id, job_id, stage, task_type, attempt = row
    return TaskChange(task_id, job_id, stage, task_type, attempt)


def claimed_from_row(row: tuple[Any, ...]) -> ClaimedTask:
    (task_id, job_id, job_type, stage, idx, task_type, parameters, attempt, max_attempts, timeout, policy,
     round_number, stage_tasks) = row
    return ClaimedTask(
        task_id, job_id, job_type, stage, idx, task_type, parameters, attempt, max_attempts, timeout,
        FailurePolicy(policy), round_number, stage_tasks,
    )


def result_from_row(row: tuple[Any, ...]) -> TaskResultRow:
    task_id, idx, status, result = row
    return TaskResultRow(task_id, idx, TaskStatus(status), result)


def task_view_from_row(row: tuple[Any, ...] | None) -> TaskView | None:
    if row is None:
        return None
    (task_id, job_id, stage, idx, task_type, status, attempt, max_attempts, lease_until, not_before,
     claimed_by, errors, result, updated_at) = row
    return TaskView(
        task_id, job_id, stage, idx, task_type, TaskStatus(status), attempt, max_attempts, lease_until,
        not_before, claimed_by, list(errors or []), result, updated_at,
    )


def stage_view_from_row(row: tuple[Any, ...], counts: dict[str, int]) -> StageView:
    stage, name, status, task_count, remaining, failed, started_at, completed_at = row
    return StageView(
        stage, name, StageStatus(status), task_count, remaining, failed, counts, started_at, completed_at
    )


def event_from_row(row: tuple[Any, ...]) -> EventView:
    at, kind, stage, task_id, detail = row
    return EventView(at, kind, stage, task_id, detail or {})


def jsonb(value: JSON | None) -> Jsonb | None:
    return None if value is None else Jsonb(value)

