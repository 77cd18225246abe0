"""Tables of the in-memory state store and the transaction that stages writes to them until commit.

Rows are frozen dataclasses replaced whole, so a transaction is a set of pending rows: reads see the
pending row first, and nothing reaches the tables unless the transaction commits. JSON values are copied
through `json` on the way in and out, as PostgreSQL's `jsonb` would, so callers never share them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.ids import canonical_json
from core.models import (
    JSON,
    EventView,
    JobRecord,
    OutgoingMessage,
    ReceivedMessage,
    StageStatus,
    StageView,
    TaskStatus,
    TaskView,
)


def stored(value: Any) -> Any:
    """A private copy of a JSON value, rejected if PostgreSQL's jsonb would reject it."""
    if value is None:
        return None
    return json.loads(canonical_json(value))


def fresh(value: Any) -> Any:
    """A copy of a stored JSON value for a caller to keep."""
    return copy.deepcopy(value)


@dataclass(frozen=True, slots=True)
class StageRow:
    job_id: str
    stage: int
    name: str
    status: StageStatus
    task_count: int
    remaining: int
    failed: int
    started_at: datetime
    completed_at: datetime | None
    task_ids: tuple[str, ...]

    def view(self, counts: dict[str, int]) -> StageView:
        return StageView(
            self.stage, self.name, self.status, self.task_count, self.remaining, self.failed, dict(counts),
            self.started_at, self.completed_at,
        )


@dataclass(frozen=True, slots=True)
class TaskRow:
    task_id: str
    job_id: str
    stage: int
    index: int
    task_type: str
    status: TaskStatus
    parameters: JSON
    max_attempts: int
    timeout_seconds: float
    created_at: datetime
    updated_at: datetime
    attempt: int = 0
    result: JSON | None = None
    errors: tuple[JSON, ...] = ()
    lease_until: datetime | None = None
    not_before: datetime | None = None
    claimed_by: str | None = None
    finished_at: datetime | None = None
    resend_count: int = 0

    def view(self) -> TaskView:
        return TaskView(
            self.task_id, self.job_id, self.stage, self.index, self.task_type, self.status, self.attempt,
            self.max_attempts, self.lease_until, self.not_before, self.claimed_by, fresh(list(self.errors)),
            fresh(self.result), self.updated_at,
        )


@dataclass(frozen=True, slots=True)
class JobControl:
    """The job row's control columns that `JobRecord` does not show: the finalize fence and its counters."""

    round_started_at: datetime
    finalize_deferrals: int = 0
    finalize_owner: str | None = None
    finalize_claim_until: datetime | None = None


@dataclass
class Tables:
    """Committed state. `running` indexes running tasks so lease expiry need not scan every task."""

    jobs: dict[str, JobRecord] = field(default_factory=dict)
    control: dict[str, JobControl] = field(default_factory=dict)
    stages: dict[tuple[str, int], StageRow] = field(default_factory=dict)
    tasks: dict[str, TaskRow] = field(default_factory=dict)
    events: dict[str, list[EventView]] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    rounds: dict[tuple[str, int], JSON] = field(default_factory=dict)


class Transaction:
    """Pending writes over `Tables`, plus the events and messages they cause."""

    def __init__(self, tables: Tables, now: datetime) -> None:
        self.now = now
        self._tables = tables
        self._jobs: dict[str, JobRecord] = {}
        self._control: dict[str, JobControl] = {}
        self._deleted_stages: set[tuple[str, int]] = set()
        self._rounds: dict[tuple[str, int], JSON] = {}
        self._stages: dict[tuple[str, int], StageRow] = {}
        self._tasks: dict[str, TaskRow] = {}
        self._deleted_tasks: set[str] = set()
        self._events: list[tuple[str, EventView]] = []
        self.messages: list[OutgoingMessage] = []
        self.acknowledged: list[ReceivedMessage] = []

    def job(self, job_id: str) -> JobRecord | None:
        return self._jobs.get(job_id) or self._tables.jobs.get(job_id)

    def jobs(self) -> list[JobRecord]:
        """Every job, as this transaction sees it."""
        return list({**self._tables.jobs, **self._jobs}.values())

    def put_job(self, job: JobRecord) -> None:
        self._jobs[job.job_id] = job

    def control(self, job_id: str) -> JobControl:
        return self._control.get(job_id) or self._tables.control[job_id]

    def put_control(self, job_id: str, control: JobControl) -> None:
        self._control[job_id] = control

    def stage(self, job_id: str, stage: int) -> StageRow | None:
        key = (job_id, stage)
        if key in self._deleted_stages:
            return self._stages.get(key)
        return self._stages.get(key) or self._tables.stages.get(key)

    def put_stage(self, row: StageRow) -> None:
        self._stages[(row.job_id, row.stage)] = row

    def delete_stage(self, row: StageRow) -> None:
        """The stage row and its tasks go (on PostgreSQL the round's tasks are deleted first, then its stages)."""
        key = (row.job_id, row.stage)
        self._stages.pop(key, None)
        self._deleted_stages.add(key)
        for task_id in row.task_ids:
            self._tasks.pop(task_id, None)
            self._deleted_tasks.add(task_id)

    def put_round(self, job_id: str, round_number: int, row: JSON) -> None:
        self._rounds[(job_id, round_number)] = row

    def stages_of(self, job: JobRecord) -> list[StageRow]:
        rows = (self.stage(job.job_id, n) for n in range(1, job.total_stages + 1))
        return [row for row in rows if row is not None]

    def task(self, task_id: str) -> TaskRow | None:
        if task_id in self._deleted_tasks:
            return self._tasks.get(task_id)
        return self._tasks.get(task_id) or self._tables.tasks.get(task_id)

    def put_task(self, row: TaskRow) -> None:
        self._tasks[row.task_id] = row

    def tasks_of_stage(self, row: StageRow) -> list[TaskRow]:
        tasks = (self.task(task_id) for task_id in row.task_ids)
        return [task for task in tasks if task is not None]

    def tasks_of(self, job: JobRecord) -> list[TaskRow]:
        return [task for row in self.stages_of(job) for task in self.tasks_of_stage(row)]

    def all_tasks(self) -> list[TaskRow]:
        ids = (set(self._tables.tasks) | set(self._tasks)) - self._deleted_tasks | set(self._tasks)
        tasks = (self.task(task_id) for task_id in ids)
        return [task for task in tasks if task is not None]

    def running_tasks(self) -> list[TaskRow]:
        ids = set(self._tables.running) | {t.task_id for t in self._tasks.values() if t.status is TaskStatus.RUNNING}
        tasks = (self.task(task_id) for task_id in ids)
        return [task for task in tasks if task is not None and task.status is TaskStatus.RUNNING]

    def event(
        self, job_id: str, kind: str, detail: JSON, stage: int | None = None, task_id: str | None = None
    ) -> None:
        if self.job(job_id) is None:
            raise LookupError(f"no job {job_id}: an event needs an existing job")
        self._events.append((job_id, EventView(self.now, kind, stage, task_id, stored(detail))))

    def send(self, messages: list[OutgoingMessage]) -> None:
        self.messages.extend(messages)

    def commit(self) -> None:
        tables = self._tables
        tables.jobs.update(self._jobs)
        tables.control.update(self._control)
        tables.rounds.update(self._rounds)
        for key in self._deleted_stages:
            tables.stages.pop(key, None)
        for task_id in self._deleted_tasks:
            tables.tasks.pop(task_id, None)
            tables.running.discard(task_id)
        tables.stages.update(self._stages)
        tables.tasks.update(self._tasks)
        for task in self._tasks.values():
            if task.status is TaskStatus.RUNNING:
                tables.running.add(task.task_id)
            else:
                tables.running.discard(task.task_id)
        for job_id, event in self._events:
            tables.events.setdefault(job_id, []).append(event)
