"""The engine's spans and metrics: a task-attempt middleware, and the spans around job messages and submit.

Span names: `coremachine.submit`, `coremachine.stage` (a stage message: the stage starts), `coremachine.task`
(one attempt), `coremachine.finalize`; attributes `job_id`, `job_type`, `stage`, `task_id`, `attempt` where they
apply. Metrics: `coremachine.tasks.completed|failed|retried` (counters) and `coremachine.task.duration`
(seconds), by `job_type` and `task_type`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from core.errors import classify
from core.middleware import Call, Middleware
from core.models import JSON, ClaimedTask, ErrorClass, MessageKind, ReceivedMessage
from core.tracing import Attributes, Telemetry, bound_traces, carrier_in, trace_of


def task_attributes(task: ClaimedTask) -> dict[str, str | int]:
    return {
        "job_id": task.job_id,
        "job_type": task.job_type,
        "stage": task.stage,
        "task_id": task.task_id,
        "task_type": task.task_type,
        "attempt": task.attempt,
    }


def _failure_kind(task: ClaimedTask, exc: BaseException) -> str:
    """'failed' when no attempt follows (permanent error, or the last attempt), else 'retried'."""
    if classify(exc) is ErrorClass.PERMANENT or task.attempt >= task.max_attempts:
        return "failed"
    return "retried"


def tracing_middleware(telemetry: Telemetry) -> Middleware:
    """A span per task attempt, continuing the trace its message carried, with the outcome counted and timed."""

    def with_tracing(task: ClaimedTask, call: Call) -> JSON:
        attributes = task_attributes(task)
        kinds: Attributes = {"job_type": task.job_type, "task_type": task.task_type}
        started = time.perf_counter()
        with telemetry.span("coremachine.task", attributes, parent=trace_of(task.job_id)) as span:
            try:
                result = call()
            except BaseException as exc:
                span.record_error(exc)
                telemetry.count(f"coremachine.tasks.{_failure_kind(task, exc)}", 1, kinds)
                raise
            finally:
                telemetry.record("coremachine.task.duration", time.perf_counter() - started, kinds)
        telemetry.count("coremachine.tasks.completed", 1, kinds)
        return result

    return with_tracing


def _job_of(message: ReceivedMessage) -> str:
    body_job = message.body.get("job_id") if isinstance(message.body, dict) else None
    return str(message.properties.get("job_id") or body_job or "")


@contextmanager
def job_message_span(telemetry: Telemetry, message: ReceivedMessage) -> Iterator[None]:
    """The span of one job message (a stage start or a finalize), continuing its trace; messages written
    meanwhile for the job carry this span's context."""
    body: dict[str, Any] = message.body if isinstance(message.body, dict) else {}
    finalize = body.get("kind") == MessageKind.FINALIZE.value
    attributes: dict[str, str | int] = {"job_id": _job_of(message),
                                        "job_type": str(message.properties.get("job_type", ""))}
    if isinstance(body.get("stage"), int):
        attributes["stage"] = body["stage"]
    name = "coremachine.finalize" if finalize else "coremachine.stage"
    job_id = str(attributes["job_id"])
    with (
        telemetry.span(name, attributes, parent=carrier_in(message.properties)),
        bound_traces({job_id: telemetry.carrier()} if job_id else {}),
    ):
        yield


def task_batch_traces(messages: Sequence[ReceivedMessage]) -> dict[str, dict[str, str]]:
    """Each job's trace context as its task messages carried it (for the attempts and what they cause)."""
    traces: dict[str, dict[str, str]] = {}
    for message in messages:
        if (carrier := carrier_in(message.properties)) and (job_id := _job_of(message)):
            traces[job_id] = carrier
    return traces
