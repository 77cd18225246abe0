"""Job routes of the HTTP API: submit, status, list, tasks, cancel, retry and the events timeline."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core import admin
from core.models import DeadLetterSelector, JobRecord, JobStatus, TaskStatus, TaskView
from triggers.cli_display import snapshot_json
from triggers.http_base import (
    API_PREFIX,
    ApiContext,
    ApiError,
    Request,
    Response,
    Route,
    decode_cursor,
    encode_cursor,
    int_param,
    job_id_param,
    json_object,
    page_limit,
)


def status_url(job_id: str) -> str:
    return f"{API_PREFIX}/jobs/status/{job_id}"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def job_summary(job: JobRecord) -> dict[str, Any]:
    return {
        "job_id": job.job_id, "job_type": job.job_type, "status": job.status.value,
        "outcome": job.outcome.value if job.outcome else None, "stage": job.current_stage,
        "total_stages": job.total_stages, "error": job.error, "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at), "finished_at": _iso(job.finished_at), "status_url": status_url(job.job_id),
    }


def task_json(task: TaskView) -> dict[str, Any]:
    return {
        "task_id": task.task_id, "stage": task.stage, "index": task.index, "task_type": task.task_type,
        "status": task.status.value, "attempt": task.attempt, "max_attempts": task.max_attempts,
        "lease_until": _iso(task.lease_until), "not_before": _iso(task.not_before), "claimed_by": task.claimed_by,
        "errors": task.errors, "result": task.result, "updated_at": _iso(task.updated_at),
    }


def _statuses(req: Request, valid: list[str]) -> list[str]:
    raw = req.query.get("status") or ""
    wanted = [s.strip() for s in raw.split(",") if s.strip()]
    bad = [s for s in wanted if s not in valid]
    if bad:
        raise ApiError(400, "invalid_query", f"unknown status {', '.join(map(repr, bad))}; valid: {', '.join(valid)}",
                       [{"field": "status", "message": f"{s!r} is not one of {', '.join(valid)}"} for s in bad])
    return wanted


def submit(ctx: ApiContext, req: Request) -> Response:
    job_type = req.route_params.get("job_type", "")
    definition = ctx.jobs.get(job_type)  # UnknownJobType → 404 listing the valid ones
    parameters = json_object(req)
    result = ctx.engine.submit(definition.job_type, parameters)
    body = {**job_summary(result.job), "created": result.created}
    return Response(201 if result.created else 200, body, {"Location": status_url(result.job.job_id)})


def status(ctx: ApiContext, req: Request) -> Response:
    job_id = job_id_param(req)
    snapshot = ctx.engine.status(job_id)
    if snapshot is None:
        raise admin.JobNotFound(job_id)
    dead = ctx.transport.list_dead_letters(DeadLetterSelector(job_id=job_id))
    body = snapshot_json(snapshot, dead)
    body["outcome"] = snapshot.job.outcome.value if snapshot.job.outcome else None
    body["status_url"] = status_url(job_id)
    body["events_url"] = f"{API_PREFIX}/jobs/{job_id}/events"
    body["tasks_url"] = f"{API_PREFIX}/jobs/{job_id}/tasks"
    return Response(200, body)


def list_jobs(ctx: ApiContext, req: Request) -> Response:
    statuses = [JobStatus(s) for s in _statuses(req, [s.value for s in JobStatus])]
    job_type = req.query.get("type") or None
    limit = page_limit(req)
    cursor = decode_cursor(req)
    after = None
    if cursor is not None:
        try:
            after = admin.JobPageCursor(datetime.fromisoformat(str(cursor["created_at"])), str(cursor["job_id"]))
        except (KeyError, ValueError, TypeError):
            raise ApiError(400, "invalid_cursor", "cursor is not one this API returned") from None
    jobs = ctx.admin.list_jobs(statuses, job_type, limit + 1, after)
    page, more = jobs[:limit], len(jobs) > limit
    next_cursor = (
        encode_cursor({"created_at": page[-1].created_at.isoformat(), "job_id": page[-1].job_id}) if more else None
    )
    return Response(200, {"jobs": [job_summary(j) for j in page], "next_cursor": next_cursor})


def list_tasks(ctx: ApiContext, req: Request) -> Response:
    job_id = job_id_param(req)
    statuses = _statuses(req, [s.value for s in TaskStatus])
    stage = int_param(req, "stage")
    limit = page_limit(req)
    cursor = decode_cursor(req)
    after = None
    if cursor is not None:
        stage_at, index_at = cursor.get("stage"), cursor.get("index")
        if not isinstance(stage_at, int) or not isinstance(index_at, int):
            raise ApiError(400, "invalid_cursor", "cursor is not one this API returned")
        after = admin.TaskPageCursor(stage_at, index_at)
    if ctx.store.get_job(job_id) is None:
        raise admin.JobNotFound(job_id)
    tasks = ctx.admin.list_tasks(job_id, stage, statuses, limit + 1, after)
    page, more = tasks[:limit], len(tasks) > limit
    next_cursor = encode_cursor({"stage": page[-1].stage, "index": page[-1].index}) if more else None
    return Response(200, {"job_id": job_id, "tasks": [task_json(t) for t in page], "next_cursor": next_cursor})


def cancel(ctx: ApiContext, req: Request) -> Response:
    job_id = job_id_param(req)
    body = json_object(req)
    reason = body.get("reason", "cancelled by an operator")
    if not isinstance(reason, str) or len(reason) > 1000:
        raise ApiError(400, "invalid_body", "reason must be a string of at most 1000 characters",
                       [{"field": "reason", "message": "must be a string of at most 1000 characters"}])
    job = admin.cancel_job(ctx.store, ctx.relay, job_id, reason)
    return Response(202, job_summary(job))


def retry(ctx: ApiContext, req: Request) -> Response:
    job_id = job_id_param(req)
    outcome = admin.retry_job(ctx.store, ctx.admin, ctx.relay, ctx.jobs, job_id)
    job = ctx.store.get_job(job_id)
    assert job is not None
    body = {**job_summary(job), "retried_stage": outcome.stage, "tasks_requeued": outcome.tasks_requeued,
            "stage_resent": outcome.stage_resent, "round": outcome.round}
    return Response(202, body)


def events(ctx: ApiContext, req: Request) -> Response:
    job_id = job_id_param(req)
    limit = page_limit(req) if req.query.get("limit") else 200
    snapshot = ctx.store.snapshot(job_id, events=limit)
    if snapshot is None:
        raise admin.JobNotFound(job_id)
    dead = ctx.transport.list_dead_letters(DeadLetterSelector(job_id=job_id))
    full = snapshot_json(snapshot, dead)
    keys = ("job_id", "job_type", "status", "stage", "total_stages", "events", "diagnosis", "dead_letters")
    return Response(200, {k: full[k] for k in keys})


ROUTES = [
    Route("submit_job", "POST", "jobs/submit/{job_type}", submit, summary="Submit a job (idempotent)"),
    Route("job_status", "GET", "jobs/status/{job_id}", status, summary="A job's status, stages, result or errors"),
    Route("list_jobs", "GET", "jobs", list_jobs, summary="Jobs, newest first, filtered and paged"),
    Route("list_tasks", "GET", "jobs/{job_id}/tasks", list_tasks, summary="A job's tasks, filtered and paged"),
    Route("cancel_job", "POST", "jobs/{job_id}/cancel", cancel, summary="Cancel a queued or processing job"),
    Route("retry_job", "POST", "jobs/{job_id}/retry", retry, summary="Re-run a failed job's failed tasks"),
    Route("job_events", "GET", "jobs/{job_id}/events", events, summary="Timeline and why the job isn't finished"),
]
