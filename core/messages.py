"""Queue message bodies: constructors the store uses for its outbox, and a strict parser for receivers.

Every constructed message carries the trace context bound to its job, if any (`core.tracing.with_trace`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, overload

from core.errors import MalformedMessage
from core.ids import (
    bounded_message_id,
    finalize_message_id,
    is_job_id,
    round_message_id,
    stage_message_id,
    task_message_id,
)
from core.models import JOBS_QUEUE, TASKS_QUEUE, MessageKind, OutgoingMessage
from core.tracing import with_trace


def stage_message(
    job_id: str, job_type: str, stage: int, round_number: int = 0, plan_attempt: int = 0, delay_seconds: float = 0.0
) -> OutgoingMessage:
    """Start `stage`. `plan_attempt` > 0 names the re-sent message after that many failed planner attempts."""
    base = stage_message_id(job_id, stage)
    body: dict[str, str | int] = {"kind": MessageKind.STAGE.value, "job_id": job_id, "stage": stage}
    if plan_attempt:
        base = bounded_message_id(f"{base}:p{plan_attempt}")
        body["attempt"] = plan_attempt
    return OutgoingMessage(
        queue=JOBS_QUEUE,
        message_id=round_message_id(base, round_number),
        body=dict(body),
        properties=with_trace(
            {"kind": MessageKind.STAGE.value, "job_id": job_id, "job_type": job_type, "stage": stage}
        ),
        delay_seconds=delay_seconds,
        continues_job=stage > 1,
    )


def finalize_message(job_id: str, job_type: str, round_number: int = 0) -> OutgoingMessage:
    return OutgoingMessage(
        queue=JOBS_QUEUE,
        message_id=round_message_id(finalize_message_id(job_id), round_number),
        body={"kind": MessageKind.FINALIZE.value, "job_id": job_id},
        properties=with_trace({"kind": MessageKind.FINALIZE.value, "job_id": job_id, "job_type": job_type}),
        continues_job=True,
    )


def task_message(
    task_id: str, job_id: str, job_type: str, stage: int, task_type: str, attempt: int, delay_seconds: float = 0.0,
    round_number: int = 0,
) -> OutgoingMessage:
    """`attempt` is the attempt this delivery will run (1 for the first); the round names the job's round."""
    properties = with_trace(_task_properties(job_id, job_type, stage, task_type, attempt))
    return _task_message(task_id, job_id, stage, task_type, attempt, round_number, properties, delay_seconds)


def _task_properties(job_id: str, job_type: str, stage: int, task_type: str, attempt: int) -> dict[str, str | int]:
    return {"kind": MessageKind.TASK.value, "job_id": job_id, "job_type": job_type, "stage": stage,
            "task_type": task_type, "attempt": attempt}


def _task_message(
    task_id: str, job_id: str, stage: int, task_type: str, attempt: int, round_number: int,
    properties: dict[str, str | int], delay_seconds: float = 0.0,
) -> OutgoingMessage:
    return OutgoingMessage(
        queue=TASKS_QUEUE,
        message_id=round_message_id(task_message_id(task_id, attempt), round_number),
        body={"kind": MessageKind.TASK.value, "job_id": job_id, "stage": stage, "task_id": task_id,
              "task_type": task_type, "attempt": attempt},
        properties=properties,
        delay_seconds=delay_seconds,
    )


class StageTaskMessages(Sequence[OutgoingMessage]):
    """The first-attempt messages of a new stage's tasks, each made when it is read: the same messages as
    `task_message` makes, but a wide stage's can be written to the queue while the rest are still being made.
    Tasks of one type share one properties object (with the job's trace context, looked up once)."""

    def __init__(
        self, job_id: str, job_type: str, stage: int, task_ids: Sequence[str], task_types: Sequence[str],
        round_number: int = 0,
    ) -> None:
        self._job_id, self._job_type, self._stage, self._round = job_id, job_type, stage, round_number
        self._task_ids, self._task_types = task_ids, task_types
        self._properties: dict[str, dict[str, str | int]] = {}

    def __len__(self) -> int:
        return len(self._task_ids)

    @overload
    def __getitem__(self, index: int) -> OutgoingMessage: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[OutgoingMessage]: ...

    def __getitem__(self, index: int | slice) -> OutgoingMessage | Sequence[OutgoingMessage]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self._message(self._task_ids[index], self._task_types[index])

    def __iter__(self) -> Iterator[OutgoingMessage]:
        return map(self._message, self._task_ids, self._task_types)

    def _message(self, task_id: str, task_type: str) -> OutgoingMessage:
        properties = self._properties.get(task_type)
        if properties is None:
            properties = self._properties[task_type] = with_trace(
                _task_properties(self._job_id, self._job_type, self._stage, task_type, 1))
        return _task_message(task_id, self._job_id, self._stage, task_type, 1, self._round, properties)


def resent_task_message(
    task_id: str, job_id: str, job_type: str, stage: int, task_type: str, attempt: int, resend: int,
    delay_seconds: float = 0.0, round_number: int = 0,
) -> OutgoingMessage:
    """The message of `attempt` sent again (early delivery deferred, or a lost retry re-sent by the janitor);
    `resend` is the task's resend counter, so each copy has its own id and duplicate detection keeps it."""
    base = task_message(task_id, job_id, job_type, stage, task_type, attempt, delay_seconds, round_number)
    return replace(base, message_id=bounded_message_id(f"{base.message_id}:s{resend}"))


def deferred_finalize_message(
    job_id: str, job_type: str, round_number: int, deferral: int, delay_seconds: float
) -> OutgoingMessage:
    """Finalize again later: the job still has running tasks whose leases are live."""
    base = finalize_message(job_id, job_type, round_number)
    return OutgoingMessage(
        queue=base.queue,
        message_id=bounded_message_id(f"{base.message_id}:d{deferral}"),
        body=base.body,
        properties=base.properties,
        delay_seconds=delay_seconds,
        continues_job=True,
    )


@dataclass(frozen=True, slots=True)
class JobMessage:
    kind: MessageKind
    job_id: str
    stage: int | None
    plan_attempt: int = 0


@dataclass(frozen=True, slots=True)
class TaskMessage:
    job_id: str
    stage: int
    task_id: str
    task_type: str
    attempt: int


def parse_job_message(body: Any) -> JobMessage:
    if not isinstance(body, dict):
        raise MalformedMessage(f"job message body must be an object, got {type(body).__name__}")
    kind = body.get("kind")
    if kind not in (MessageKind.STAGE.value, MessageKind.FINALIZE.value):
        raise MalformedMessage(f"job message kind must be 'stage' or 'finalize', got {kind!r}")
    job_id = _job_id(body)
    if kind == MessageKind.STAGE.value:
        attempt = body.get("attempt", 0)
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 0:
            raise MalformedMessage(f"message field 'attempt' must be a whole number, got {attempt!r}")
        return JobMessage(MessageKind.STAGE, job_id, _positive_int(body, "stage"), attempt)
    return JobMessage(MessageKind.FINALIZE, job_id, None)


def parse_task_message(body: Any) -> TaskMessage:
    if not isinstance(body, dict):
        raise MalformedMessage(f"task message body must be an object, got {type(body).__name__}")
    if body.get("kind") != MessageKind.TASK.value:
        raise MalformedMessage(f"task message kind must be 'task', got {body.get('kind')!r}")
    task_id, task_type = body.get("task_id"), body.get("task_type")
    if not isinstance(task_id, str) or not task_id:
        raise MalformedMessage("task message has no task_id")
    if not isinstance(task_type, str) or not task_type:
        raise MalformedMessage("task message has no task_type")
    return TaskMessage(_job_id(body), _positive_int(body, "stage"), task_id, task_type, _positive_int(body, "attempt"))


def _job_id(body: dict[str, Any]) -> str:
    job_id = body.get("job_id")
    if not isinstance(job_id, str) or not is_job_id(job_id):
        raise MalformedMessage(f"message has no valid job_id: {job_id!r}")
    return job_id


def _positive_int(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise MalformedMessage(f"message field {key!r} must be a positive integer, got {value!r}")
    return value
