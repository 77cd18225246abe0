"""Response bodies of the HTTP API as Pydantic models: the single source of their OpenAPI schemas."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.diagnosis import explain
from core.models import DeadLetter, JobRecord, JobSnapshot, JobStatus, StageStatus, TaskStatus, TaskView
from triggers.http_base import API_PREFIX, JOB_ID_PATTERN

JobId = Field(pattern=JOB_ID_PATTERN, description="SHA-256 hex of the job type and its canonical parameters")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


def status_url(job_id: str) -> str:
    return f"{API_PREFIX}/jobs/status/{job_id}"


class JobSummary(_Out):
    job_id: str = JobId
    job_type: str
    status: JobStatus
    outcome: JobStatus | None = Field(description="how a finalizing job will end")
    stage: int
    total_stages: int
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    status_url: str

    @classmethod
    def of(cls, job: JobRecord) -> JobSummary:
        return cls(
            job_id=job.job_id, job_type=job.job_type, status=job.status, outcome=job.outcome,
            stage=job.current_stage, total_stages=job.total_stages, error=job.error, created_at=job.created_at,
            updated_at=job.updated_at, finished_at=job.finished_at, status_url=status_url(job.job_id),
        )


class Submitted(JobSummary):
    created: bool = Field(description="false when these exact parameters were submitted before")


class SubmittedBatch(_Out):
    jobs: list[Submitted] = Field(description="one per entry, in the order given")
    created: int = Field(description="how many of them are new jobs")


class StageBody(_Out):
    stage: int
    name: str
    status: StageStatus
    task_count: int
    remaining: int
    failed: int
    tasks: dict[str, int] = Field(description="task counts by status")
    started_at: datetime | None
    completed_at: datetime | None


class TaskErrors(_Out):
    task_id: str
    stage: int
    status: TaskStatus
    errors: list[dict[str, Any]]


class EventBody(_Out):
    at: datetime
    kind: str
    stage: int | None
    task_id: str | None
    detail: dict[str, Any]


class DeadLetterRef(_Out):
    id: str
    queue: str
    reason: str
    description: str


class JobEvents(_Out):
    job_id: str = JobId
    job_type: str
    status: JobStatus
    stage: int
    total_stages: int
    events: list[EventBody]
    diagnosis: list[str] = Field(description="why the job isn't finished, most important first")
    dead_letters: list[DeadLetterRef]

    @classmethod
    def of(cls, snapshot: JobSnapshot, dead: Sequence[DeadLetter]) -> JobEvents:
        job = snapshot.job
        return cls(
            job_id=job.job_id, job_type=job.job_type, status=job.status, stage=job.current_stage,
            total_stages=job.total_stages,
            events=[EventBody(at=e.at, kind=e.kind, stage=e.stage, task_id=e.task_id, detail=e.detail)
                    for e in snapshot.events],
            diagnosis=explain(snapshot, dead),
            dead_letters=[DeadLetterRef(id=d.id, queue=d.queue, reason=d.reason, description=d.description)
                          for d in dead],
        )


class JobStatusBody(JobEvents):
    outcome: JobStatus | None
    parameters: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    stages: list[StageBody]
    errors: list[TaskErrors] = Field(description="recent failed or retried tasks with every attempt's error")
    status_url: str
    events_url: str
    tasks_url: str

    @classmethod
    def of(cls, snapshot: JobSnapshot, dead: Sequence[DeadLetter]) -> JobStatusBody:
        job = snapshot.job
        base = JobEvents.of(snapshot, dead).model_dump()
        return cls(
            **base, outcome=job.outcome, parameters=job.parameters, result=job.result, error=job.error,
            created_at=job.created_at, updated_at=job.updated_at, finished_at=job.finished_at,
            stages=[StageBody(stage=s.stage, name=s.name, status=s.status, task_count=s.task_count,
                              remaining=s.remaining, failed=s.failed, tasks=s.counts, started_at=s.started_at,
                              completed_at=s.completed_at) for s in snapshot.stages],
            errors=[TaskErrors(task_id=t.task_id, stage=t.stage, status=t.status, errors=t.errors)
                    for t in snapshot.recent_errors],
            status_url=status_url(job.job_id), events_url=f"{API_PREFIX}/jobs/{job.job_id}/events",
            tasks_url=f"{API_PREFIX}/jobs/{job.job_id}/tasks",
        )


class JobPage(_Out):
    jobs: list[JobSummary]
    next_cursor: str | None


class TaskBody(_Out):
    task_id: str
    stage: int
    index: int
    task_type: str
    status: TaskStatus
    attempt: int
    max_attempts: int
    lease_until: datetime | None
    not_before: datetime | None
    claimed_by: str | None
    errors: list[dict[str, Any]] = Field(description="every attempt's error, oldest first")
    result: dict[str, Any] | None
    updated_at: datetime | None

    @classmethod
    def of(cls, task: TaskView) -> TaskBody:
        return cls(
            task_id=task.task_id, stage=task.stage, index=task.index, task_type=task.task_type, status=task.status,
            attempt=task.attempt, max_attempts=task.max_attempts, lease_until=task.lease_until,
            not_before=task.not_before, claimed_by=task.claimed_by, errors=task.errors, result=task.result,
            updated_at=task.updated_at,
        )


class TaskPage(_Out):
    job_id: str = JobId
    tasks: list[TaskBody]
    next_cursor: str | None


class Retried(JobSummary):
    retried_stage: int
    tasks_requeued: int
    stage_resent: bool = Field(description="the stage was never created, so its message was sent again")
    round: int


class Rerun(JobSummary):
    round: int = Field(description="the job's new round: its messages carry it, its previous round is kept")
    previous_status: str | None


class DeadLetterBody(_Out):
    id: str
    queue: str
    message_id: str
    reason: str
    description: str
    delivery_count: int
    replay_count: int
    dead_lettered_at: datetime | None
    body: dict[str, Any]
    properties: dict[str, Any]

    @classmethod
    def of(cls, dl: DeadLetter) -> DeadLetterBody:
        return cls(
            id=dl.id, queue=dl.queue, message_id=dl.message_id, reason=dl.reason, description=dl.description,
            delivery_count=dl.delivery_count, replay_count=dl.replay_count, dead_lettered_at=dl.dead_lettered_at,
            body=dl.body, properties=dict(dl.properties),
        )


class DeadLetterPage(_Out):
    dead_letters: list[DeadLetterBody]
    next_cursor: str | None


class DeadLetterAction(_Out):
    dry_run: bool
    count: int
    dead_letters: list[DeadLetterBody] = Field(default_factory=list,
                                               description="the dead letters acted on (purge lists them on dry runs)")
