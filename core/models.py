"""Value types of the engine: statuses, records read from the store, messages and task outcomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

JSON = dict[str, Any]


class JobStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_JOB_STATUSES


TERMINAL_JOB_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.FAILED, JobStatus.CANCELLED}
)


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRY_SCHEDULED = "retry_scheduled"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


class StageStatus(StrEnum):
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ErrorClass(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    UNKNOWN = "unknown"


class FailurePolicy(StrEnum):
    FAIL_FAST = "fail_fast"
    CONTINUE = "continue"


class MessageKind(StrEnum):
    STAGE = "stage"
    FINALIZE = "finalize"
    TASK = "task"


JOBS_QUEUE = "jobs"
TASKS_QUEUE = "tasks"
# How the ordering transports put `OutgoingMessage.continues_job` first: they order due messages by due time, and
# such a message counts as due this long already. It precedes every unmarked message sent within that span.
CONTINUATION_HEAD_START_SECONDS = 86_400.0


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """One recorded failure: what happened, how it was classified and where."""

    error_type: str
    error_class: ErrorClass
    message: str
    attempt: int | None = None
    where: str | None = None
    at: str | None = None

    def to_json(self) -> JSON:
        return {
            "type": self.error_type,
            "class": self.error_class.value,
            "message": self.message,
            "attempt": self.attempt,
            "where": self.where,
            "at": self.at,
        }

    @classmethod
    def from_json(cls, data: JSON) -> ErrorInfo:
        return cls(
            error_type=data["type"],
            error_class=ErrorClass(data["class"]),
            message=data["message"],
            attempt=data.get("attempt"),
            where=data.get("where"),
            at=data.get("at"),
        )


@dataclass(frozen=True, slots=True)
class NewJob:
    job_id: str
    job_type: str
    parameters: JSON
    total_stages: int
    failure_policy: FailurePolicy


@dataclass(frozen=True, slots=True)
class JobRecord:
    job_id: str
    job_type: str
    status: JobStatus
    parameters: JSON
    current_stage: int
    total_stages: int
    failure_policy: FailurePolicy
    result: JSON | None
    error: JSON | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    outcome: JobStatus | None = None
    round: int = 0
    plan_attempts: int = 0


@dataclass(frozen=True, slots=True)
class StageView:
    stage: int
    name: str
    status: StageStatus
    task_count: int
    remaining: int
    failed: int
    counts: dict[str, int]
    started_at: datetime | None
    completed_at: datetime | None


@dataclass(frozen=True, slots=True)
class EventView:
    at: datetime
    kind: str
    stage: int | None
    task_id: str | None
    detail: JSON


@dataclass(frozen=True, slots=True)
class TaskView:
    task_id: str
    job_id: str
    stage: int
    index: int
    task_type: str
    status: TaskStatus
    attempt: int
    max_attempts: int
    lease_until: datetime | None
    not_before: datetime | None
    claimed_by: str | None
    errors: list[JSON]
    result: JSON | None
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """A job with its stages, recent events and the tasks that explain where it is."""

    job: JobRecord
    stages: list[StageView]
    events: list[EventView]
    oldest_running: TaskView | None
    next_retry: TaskView | None
    recent_errors: list[TaskView]


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A task as `create_tasks` describes it, before it has an id."""

    task_type: str
    parameters: JSON = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StagePlan:
    """Everything the store needs to create one stage: its tasks and their limits."""

    job_id: str
    stage: int
    stage_name: str
    tasks: list[TaskSpec]
    max_attempts: int
    timeout_seconds: float
    round: int | None = None
    """The job's round the plan was made in (from the tasks of that round); in another round it creates nothing."""


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """A task this worker now holds a lease on (attempt already incremented)."""

    task_id: str
    job_id: str
    job_type: str
    stage: int
    index: int
    task_type: str
    parameters: JSON
    attempt: int
    max_attempts: int
    timeout_seconds: float
    failure_policy: FailurePolicy
    round: int = 0
    stage_tasks: int = 0  # how many tasks the stage has (0: not known), which says how its outcomes are recorded


@dataclass(frozen=True, slots=True)
class TaskResultRow:
    task_id: str
    index: int
    status: TaskStatus
    result: JSON | None


class OutcomeKind(StrEnum):
    COMPLETED = "completed"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """What running one claimed task came to; the store applies it with a guarded update."""

    task: ClaimedTask
    kind: OutcomeKind
    result: JSON | None = None
    error: ErrorInfo | None = None
    retry_delay_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message to put on a queue. The body carries ids only, never task data."""

    queue: str
    message_id: str
    body: JSON
    properties: dict[str, str | int] = field(default_factory=dict)
    delay_seconds: float = 0.0
    continues_job: bool = False
    """It moves a started job on (its next stage, its finalize). A transport that can order its queue (PostgreSQL,
    in-memory) hands it out, when due, before every message without the mark: a burst of jobs then finishes job
    by job instead of all at the end. Service Bus queues are first in, first out; there it changes nothing."""

    @property
    def due_offset_seconds(self) -> float:
        """Where an ordering transport puts the message, in seconds from now: its delay, or for an undelayed
        continuation `-CONTINUATION_HEAD_START_SECONDS` (due already, and ahead of the unmarked messages)."""
        if self.delay_seconds > 0:
            return float(self.delay_seconds)
        return -CONTINUATION_HEAD_START_SECONDS if self.continues_job else 0.0


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A message held under a lock by one consumer until it is settled."""

    queue: str
    message_id: str
    body: JSON
    properties: dict[str, str | int]
    delivery_count: int
    lock_token: str
    enqueued_at: datetime | None = None
    sequence_number: int | None = None
    due_at: datetime | None = None
    """When it was due before this delivery (its place in an ordering queue; a release puts it back there)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    queue: str
    message_id: str
    body: JSON
    properties: dict[str, str | int]
    reason: str
    description: str
    delivery_count: int
    dead_lettered_at: datetime | None
    replay_count: int = 0


@dataclass(frozen=True, slots=True)
class DeadLetterSelector:
    """Which dead letters an operation touches. All fields empty means every dead letter."""

    queue: str | None = None
    ids: tuple[str, ...] = ()
    job_id: str | None = None
    task_type: str | None = None
    reason: str | None = None

    @property
    def everything(self) -> bool:
        return not (self.ids or self.job_id or self.task_type or self.reason)
