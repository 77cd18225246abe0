"""Job routes of the HTTP API: submit (one route per job type), status, list, tasks, cancel, retry, rerun, events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, create_model

from core import admin
from core.jobs import JobDefinition, JobRegistry
from core.models import DeadLetterSelector, JobRecord, JobStatus, TaskStatus
from triggers.http_auth import FunctionKey
from triggers.http_base import (
    DEFAULT_PAGE,
    JOB_ID_PATTERN,
    MAX_PAGE,
    NO_NUL_PATTERN,
    ApiError,
    BodyModels,
    Context,
    JsonObject,
    integral,
    parse_body,
)
from triggers.http_models import (
    JobEvents,
    JobPage,
    JobStatusBody,
    JobSummary,
    Rerun,
    Retried,
    Submitted,
    SubmittedBatch,
    TaskBody,
    TaskPage,
    status_url,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
JOB_CURSOR = "^[0-9]{1,17}\\.[0-9a-f]{64}$"
TASK_CURSOR = "^[0-9]{1,9}\\.[0-9]{1,9}$"


def _list_pattern(values: list[str]) -> str:
    one = "(" + "|".join(values) + ")"
    return f"^{one}(,{one})*$"


JobIdPath = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="the job's id (64 lowercase hex characters)")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"page size (1-{MAX_PAGE})")]
JobCursor = Annotated[str | None, Query(pattern=JOB_CURSOR, description="next_cursor of the previous page")]
TaskCursor = Annotated[str | None, Query(pattern=TASK_CURSOR, description="next_cursor of the previous page")]
JobStatuses = Annotated[str | None, Query(
    pattern=_list_pattern([s.value for s in JobStatus]), description="comma-separated job statuses",
    examples=["failed,cancelled"])]
TaskStatuses = Annotated[str | None, Query(
    pattern=_list_pattern([s.value for s in TaskStatus]), description="comma-separated task statuses")]

_ERRORS_JOB: dict[int | str, dict[str, Any]] = {
    400: {"description": "invalid job id or query"}, 404: {"description": "no such job"},
}


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="cancelled by an operator", max_length=1000, pattern=NO_NUL_PATTERN)


def _split(raw: str | None) -> list[str]:
    return [s for s in (raw or "").split(",") if s]


def job_router(jobs: JobRegistry, bodies: BodyModels) -> APIRouter:
    """The job routes; `jobs` decides the submit routes and the job-type enum of the documented API."""
    router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[FunctionKey])
    for definition in jobs:
        _add_submit(router, definition, bodies)
        _add_submit_batch(router, definition, bodies)
    names = jobs.names()

    @router.post("/submit/{job_type}", include_in_schema=False, status_code=404)
    @router.post("/submit/{job_type}/batch", include_in_schema=False, status_code=404)
    def submit_unknown(ctx: Context, job_type: str) -> None:
        ctx.jobs.get(job_type)  # raises UnknownJobType → 404 listing the valid ones
        raise ApiError(404, "unknown_job_type", f"job type {job_type!r} is not served by this app")

    @router.get("/status/{job_id}", response_model=JobStatusBody, summary="A job's status, stages, result or errors",
                responses=_ERRORS_JOB)
    def job_status(ctx: Context, job_id: JobIdPath) -> JobStatusBody:
        snapshot = ctx.engine.status(job_id)
        if snapshot is None:
            raise admin.JobNotFound(job_id)
        dead = ctx.transport.list_dead_letters(DeadLetterSelector(job_id=job_id))
        return JobStatusBody.of(snapshot, dead)

    @router.get("", response_model=JobPage, summary="Jobs, newest first, filtered and paged",
                responses={400: {"description": "invalid query"}})
    def list_jobs(
        ctx: Context, status: JobStatuses = None,
        type: str | None = Query(None, json_schema_extra={"enum": names}, description="job type"),
        limit: Limit = DEFAULT_PAGE, cursor: JobCursor = None,
    ) -> JobPage:
        if type is not None and type not in ctx.jobs.names():
            raise ApiError(400, "invalid_query", f"unknown job type {type!r}",
                           [{"field": "type", "message": f"valid: {', '.join(ctx.jobs.names())}"}])
        after = _job_cursor(cursor) if cursor else None
        found = ctx.admin.list_jobs([JobStatus(s) for s in _split(status)], type, limit + 1, after)
        page, more = found[:limit], len(found) > limit
        next_cursor = _job_cursor_text(page[-1].created_at, page[-1].job_id) if more else None
        return JobPage(jobs=[JobSummary.of(j) for j in page], next_cursor=next_cursor)

    @router.get("/{job_id}/tasks", response_model=TaskPage, summary="A job's tasks, filtered and paged",
                responses=_ERRORS_JOB)
    def list_tasks(
        ctx: Context, job_id: JobIdPath, status: TaskStatuses = None,
        stage: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="stage number")] = None,
        limit: Limit = DEFAULT_PAGE, cursor: TaskCursor = None,
    ) -> TaskPage:
        after = admin.TaskPageCursor(*(int(part) for part in cursor.split("."))) if cursor else None
        if ctx.store.get_job(job_id) is None:
            raise admin.JobNotFound(job_id)
        found = ctx.admin.list_tasks(job_id, stage, _split(status), limit + 1, after)
        page, more = found[:limit], len(found) > limit
        next_cursor = f"{page[-1].stage}.{page[-1].index}" if more else None
        return TaskPage(job_id=job_id, tasks=[TaskBody.of(t) for t in page], next_cursor=next_cursor)

    @router.post("/{job_id}/cancel", status_code=202, response_model=JobSummary,
                 summary="Cancel a queued or processing job (its unstarted tasks at once)",
                 responses={**_ERRORS_JOB, 409: {"description": "the job is finalizing or finished"},
                            415: {"description": "the body is not JSON"}})
    def cancel_job(ctx: Context, job_id: JobIdPath, body: JsonObject) -> JobSummary:
        request = parse_body(CancelRequest, body)
        admin.raise_refusal(ctx.engine.cancel(job_id, request.reason))
        return JobSummary.of(_job(ctx, job_id))

    bodies.add("cancel_job", CancelRequest, required=False)

    @router.post("/{job_id}/retry", status_code=202, response_model=Retried,
                 summary="Run again the failed and cancelled tasks where an ended job stopped (a new round)",
                 responses={**_ERRORS_JOB, 409: {"description": "the job has not ended, or has nothing to retry"}})
    def retry_job(ctx: Context, job_id: JobIdPath) -> Retried:
        outcome = admin.raise_refusal(ctx.engine.retry(job_id))
        return Retried(**JobSummary.of(_job(ctx, job_id)).model_dump(), retried_stage=outcome.stage or 0,
                       tasks_requeued=outcome.tasks_requeued, stage_resent=outcome.stage_resent, round=outcome.round)

    @router.post("/{job_id}/rerun", status_code=202, response_model=Rerun,
                 summary="Run an ended job again from stage 1 (a new round of the same job id, history kept)",
                 responses={**_ERRORS_JOB, 409: {"description": "the job has not ended"}})
    def rerun_job(ctx: Context, job_id: JobIdPath) -> Rerun:
        outcome = admin.raise_refusal(ctx.engine.rerun(job_id))
        return Rerun(**JobSummary.of(_job(ctx, job_id)).model_dump(), round=outcome.round,
                     previous_status=outcome.previous_status.value if outcome.previous_status else None)

    @router.get("/{job_id}/events", response_model=JobEvents, summary="Timeline and why the job isn't finished",
                responses=_ERRORS_JOB)
    def job_events(
        ctx: Context, job_id: JobIdPath,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="latest events to return")] = 200,
    ) -> JobEvents:
        snapshot = ctx.store.snapshot(job_id, events=limit)
        if snapshot is None:
            raise admin.JobNotFound(job_id)
        return JobEvents.of(snapshot, ctx.transport.list_dead_letters(DeadLetterSelector(job_id=job_id)))

    return router


def _job_cursor_text(created_at: datetime, job_id: str) -> str:
    """`<microseconds since 1970>.<job id>`: every string of the documented pattern is a cursor."""
    return f"{(created_at - _EPOCH) // timedelta(microseconds=1)}.{job_id}"


def _job_cursor(text: str) -> admin.JobPageCursor:
    micros, job_id = text.split(".")
    return admin.JobPageCursor(_EPOCH + timedelta(microseconds=int(micros)), job_id)


def _job(ctx: Context, job_id: str) -> JobRecord:
    job = ctx.store.get_job(job_id)
    if job is None:
        raise admin.JobNotFound(job_id)
    return job


_SUBMITTED: dict[str, Any] = {
    "headers": {"Location": {"description": "the job's status URL", "schema": {"type": "string"}}},
    "links": {
        operation: {"operationId": operation, "parameters": {"job_id": "$response.body#/job_id"}}
        for operation in ("job_status", "list_tasks", "job_events", "cancel_job", "retry_job", "rerun_job")
    },
}


MAX_BATCH = 1000
"""Jobs one batch submit may carry."""


def _add_submit_batch(router: APIRouter, definition: JobDefinition, bodies: BodyModels) -> None:
    job_type = definition.job_type
    operation_id = f"submit_{job_type}_batch"
    model = create_model(
        f"{definition.Parameters.__name__}Batch", __config__=ConfigDict(extra="forbid"),
        jobs=(list[definition.Parameters], Field(min_length=1, max_length=MAX_BATCH,  # type: ignore[name-defined]
                                                  description="each job's parameters, as for one submit")),
    )

    def submit_batch(ctx: Context, body: JsonObject, response: Response) -> SubmittedBatch:
        body = integral(body)
        parse_body(model, body, code="invalid_parameters", what=f"parameters for {job_type}")
        results = ctx.engine.submit_many(job_type, body["jobs"])
        created = sum(1 for r in results if r.created)
        response.status_code = 201 if created else 200
        return SubmittedBatch(
            jobs=[Submitted(**JobSummary.of(r.job).model_dump(), created=r.created) for r in results],
            created=created,
        )

    bodies.add(operation_id, model, required=True)
    router.add_api_route(
        f"/submit/{job_type}/batch", submit_batch, methods=["POST"], status_code=201, response_model=SubmittedBatch,
        operation_id=operation_id, summary=f"Submit up to {MAX_BATCH} {job_type} jobs at once",
        description=(f"Submit many {job_type} jobs in one transaction: one commit for the whole burst. Every entry "
                     "is validated first; one invalid entry refuses the call (details name `jobs.<index>.<field>`). "
                     "Each entry is idempotent as a single submit is; results come in the order given."),
        responses={200: {"model": SubmittedBatch, "description": "every job was submitted before"},
                   201: {"description": "at least one job created"},
                   400: {"description": "a body that breaks the schema (details name each bad field)"},
                   422: {"description": "an entry that fits the schema but breaks a rule of the job type"},
                   415: {"description": "the body is not JSON"}},
    )


def _add_submit(router: APIRouter, definition: JobDefinition, bodies: BodyModels) -> None:
    job_type = definition.job_type
    operation_id = f"submit_{job_type}"

    def submit(ctx: Context, body: JsonObject, response: Response) -> Submitted:
        body = integral(body)
        parse_body(definition.Parameters, body, code="invalid_parameters", what=f"parameters for {job_type}")
        result = ctx.engine.submit(job_type, body)
        response.status_code = 201 if result.created else 200
        response.headers["Location"] = status_url(result.job.job_id)
        return Submitted(**JobSummary.of(result.job).model_dump(), created=result.created)

    required = any(field.is_required() for field in definition.Parameters.model_fields.values())
    bodies.add(operation_id, definition.Parameters, required=required)
    description = (definition.description or f"Submit a {job_type} job.") + (
        " Idempotent: the same parameters give the same job id; a repeat answers 200 with the existing job."
    )
    router.add_api_route(
        f"/submit/{job_type}", submit, methods=["POST"], status_code=201, response_model=Submitted,
        operation_id=operation_id, summary=f"Submit a {job_type} job", description=description,
        responses={200: {"model": Submitted, "description": "the same job was submitted before", **_SUBMITTED},
                   201: {"description": "job created", **_SUBMITTED},
                   400: {"description": "parameters that break the schema (details name each bad field)"},
                   422: {"description": "parameters that fit the schema but break a rule of the job type"},
                   415: {"description": "the body is not JSON"}},
    )
