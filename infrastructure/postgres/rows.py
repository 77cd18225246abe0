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


def job_from_row(row: tuple[Any, ...]) -> JobRecord:
    (job_id, job_type, status, parameters, current_stage, total_stages, policy, result, error,
     created_at, updated_at, finished_at, outcome) = row
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
    )


def claimed_from_row(row: tuple[Any, ...]) -> ClaimedTask:
    (task_id, job_id, job_type, stage, idx, task_type, parameters, attempt, max_attempts, timeout, policy) = row
    return ClaimedTask(
        task_id, job_id, job_type, stage, idx, task_type, parameters, attempt, max_attempts, timeout,
        FailurePolicy(policy),
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

