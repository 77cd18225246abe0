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
    task_id_for,
    task_message_id,
)
from core.models import JOBS_QUEUE, TASKS_QUEUE, MessageKind, OutgoingMessage, ReceivedMessage
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
        body=_task_body(job_id, stage, task_id, task_type, attempt),
        properties=properties,
        delay_seconds=delay_seconds,
    )


def _task_body(job_id: str, stage: int, task_id: str, task_type: str, attempt: int) -> dict[str, str | int]:
    return {"kind": MessageKind.TASK.value, "job_id": job_id, "stage": stage, "task_id": task_id,
            "task_type": task_type, "attempt": attempt}


SPREAD_MESSAGES = 64
"""A stage is sent as at least this many messages (or one per task): enough to spread over every worker thread."""
MAX_TASKS_PER_MESSAGE = 256
DEFAULT_TASKS_PER_MESSAGE = 16
"""Where a queue row costs about what the task's own bookkeeping does (the PostgreSQL transport)."""


def tasks_per_message(tasks: int, most: int) -> int:
    """How many tasks of a stage of `tasks` one message carries: up to `most`, never so many that the stage would
    be fewer than `SPREAD_MESSAGES` messages."""
    return max(1, min(most, MAX_TASKS_PER_MESSAGE, tasks // SPREAD_MESSAGES))


class StageTaskMessages(Sequence[OutgoingMessage]):
    """The first-attempt messages of a new stage's tasks, each made when it is read: the same messages as
    `task_message` makes, but a wide stage's can be written to the queue while the rest are still being made.
    Tasks of one type share one properties object (with the job's trace context, looked up once).

    With `per_message` > 1, one message carries up to that many consecutive tasks of one type (`first`, `count`:
    the tasks' indexes, their ids follow from them): a wide stage then writes a message row per batch, not per
    task. `parse_task_messages` reads both forms."""

    def __init__(
        self, job_id: str, job_type: str, stage: int, task_ids: Sequence[str], task_types: Sequence[str],
        round_number: int = 0, per_message: int = 1,
    ) -> None:
        self._job_id, self._job_type, self._stage, self._round = job_id, job_type, stage, round_number
        self._task_ids, self._task_types = task_ids, task_types
        self._properties: dict[str, dict[str, str | int]] = {}
        self._runs = _runs(task_types, per_message) if per_message > 1 else None

    def __len__(self) -> int:
        return len(self._task_ids) if self._runs is None else len(self._runs)

    @overload
    def __getitem__(self, index: int) -> OutgoingMessage: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[OutgoingMessage]: ...

    def __getitem__(self, index: int | slice) -> OutgoingMessage | Sequence[OutgoingMessage]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if self._runs is not None:
            return self._batch(*self._runs[index])
        return self._message(self._task_ids[index], self._task_types[index])

    def __iter__(self) -> Iterator[OutgoingMessage]:
        if self._runs is not None:
            return (self._batch(first, count) for first, count in self._runs)
        return map(self._message, self._task_ids, self._task_types)

    def _props(self, task_type: str) -> dict[str, str | int]:
        properties = self._properties.get(task_type)
        if properties is None:
            properties = self._properties[task_type] = with_trace(
                _task_properties(self._job_id, self._job_type, self._stage, task_type, 1))
        return properties

    def _message(self, task_id: str, task_type: str) -> OutgoingMessage:
        return _task_message(task_id, self._job_id, self._stage, task_type, 1, self._round, self._props(task_type))

    def _batch(self, first: int, count: int) -> OutgoingMessage:
        task_type = self._task_types[first]
        if count == 1:
            return self._message(self._task_ids[first], task_type)
        first_id = task_id_for(self._job_id, self._stage, first)
        return OutgoingMessage(
            queue=TASKS_QUEUE,
            message_id=round_message_id(bounded_message_id(f"t:{first_id}+{count}:a1"), self._round),
            body={"kind": MessageKind.TASK.value, "job_id": self._job_id, "stage": self._stage,
                  "task_type": task_type, "attempt": 1, "first": first, "count": count},
            properties={**self._props(task_type), "tasks": count},
        )


def _runs(task_types: Sequence[str], per_message: int) -> list[tuple[int, int]]:
    """(first index, count) of each batch: consecutive tasks of one type, at most `per_message` of them."""
    runs: list[tuple[int, int]] = []
    total = len(task_types)
    if total and task_types.count(task_types[0]) == total:  # one type throughout: plain slices
        return [(first, min(per_message, total - first)) for first in range(0, total, per_message)]
    first = 0
    while first < total:
        end, task_type = first + 1, task_types[first]
        while end < total and end - first < per_message and task_types[end] == task_type:
            end += 1
        runs.append((first, end - first))
        first = end
    return runs


def resent_task_message(
    task_id: str, job_id: str, job_type: str, stage: int, task_type: str, attempt: int, resend: int,
    delay_seconds: float = 0.0, round_number: int = 0,
) -> OutgoingMessage:
    """The message of `attempt` sent again (early delivery deferred, or a lost retry re-sent by the janitor);
    `resend` is the task's resend counter, so each copy has its own id and duplicate detection keeps it."""
    base = task_message(task_id, job_id, job_type, stage, task_type, attempt, delay_seconds, round_number)
    return replace(base, message_id=bounded_message_id(f"{base.message_id}:s{resend}"))


def split_task_message(message: ReceivedMessage, tasks: Sequence[TaskMessage]) -> list[OutgoingMessage]:
    """A message of several tasks as one message per task, to send in its place: each with an id of its own made
    from the batch's (so a round's or a replay's split never collides with another's) and its properties."""
    properties = {k: v for k, v in message.properties.items() if k != "tasks"}
    return [
        OutgoingMessage(
            queue=message.queue,
            message_id=bounded_message_id(f"{message.message_id}/{i}"),
            body=_task_body(t.job_id, t.stage, t.task_id, t.task_type, t.attempt),
            properties=properties,
        )
        for i, t in enumerate(tasks)
    ]


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


def parse_task_messages(body: Any) -> list[TaskMessage]:
    """The tasks a task message carries: one, or a stage's batch (`StageTaskMessages` with `per_message` > 1)."""
    if not isinstance(body, dict) or "count" not in body:
        return [parse_task_message(body)]
    task_type = _task_type(body)
    first, count = body.get("first"), body.get("count")
    if not isinstance(first, int) or isinstance(first, bool) or first < 0:
        raise MalformedMessage(f"message field 'first' must be a whole number, got {first!r}")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_TASKS_PER_MESSAGE:
        raise MalformedMessage(f"message field 'count' must be 1 to {MAX_TASKS_PER_MESSAGE}, got {count!r}")
    job_id, stage, attempt = _job_id(body), _positive_int(body, "stage"), _positive_int(body, "attempt")
    return [TaskMessage(job_id, stage, task_id_for(job_id, stage, i), task_type, attempt)
            for i in range(first, first + count)]


def parse_task_message(body: Any) -> TaskMessage:
    if not isinstance(body, dict):
        raise MalformedMessage(f"task message body must be an object, got {type(body).__name__}")
    task_type = _task_type(body)
    task_id = body.get("task_id")
    if not isinstance(task_id, str) or not task_id:
        raise MalformedMessage("task message has no task_id")
    return TaskMessage(_job_id(body), _positive_int(body, "stage"), task_id, task_type, _positive_int(body, "attempt"))


def _task_type(body: dict[str, Any]) -> str:
    """The task type of a body of kind 'task' (one task or a batch)."""
    if body.get("kind") != MessageKind.TASK.value:
        raise MalformedMessage(f"task message kind must be 'task', got {body.get('kind')!r}")
    task_type = body.get("task_type")
    if not isinstance(task_type, str) or not task_type:
        raise MalformedMessage("task message has no task_type")
    return task_type


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
