"""The read-side queries the admin API pages through, and the errors its operator actions answer with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from core.errors import CoreMachineError
from core.models import JobRecord, JobStatus, TaskView
from core.rounds import OperatorResult, Refusal

__all__ = ["AdminStore", "JobConflict", "JobNotFound", "JobPageCursor", "OperatorResult", "TaskPageCursor",
           "raise_refusal"]


class JobNotFound(CoreMachineError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job {job_id}")


class JobConflict(CoreMachineError):
    """The job is not in a state the requested action applies to."""

    def __init__(self, result: OperatorResult, message: str) -> None:
        self.result = result
        self.status = result.status.value if result.status else None
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class JobPageCursor:
    """Position after the last job of a page (jobs are listed newest first)."""

    created_at: datetime
    job_id: str


@dataclass(frozen=True, slots=True)
class TaskPageCursor:
    """Position after the last task of a page (tasks are listed by stage, then index)."""

    stage: int
    index: int


class AdminStore(Protocol):
    def list_jobs(
        self, statuses: Sequence[JobStatus], job_type: str | None, limit: int, after: JobPageCursor | None
    ) -> list[JobRecord]:
        """Jobs newest first, filtered; at most `limit`, strictly after the cursor."""
        ...

    def list_tasks(
        self, job_id: str, stage: int | None, statuses: Sequence[str], limit: int, after: TaskPageCursor | None
    ) -> list[TaskView]:
        """A job's tasks by stage and index, filtered; at most `limit`, strictly after the cursor."""
        ...


def raise_refusal(result: OperatorResult) -> OperatorResult:
    """The result of an accepted operator action; a refused one as the error the API answers with."""
    if result.accepted:
        return result
    if result.refusal is Refusal.NOT_FOUND:
        raise JobNotFound(result.job_id)
    raise JobConflict(result, result.message)
