"""Runs a batch of task messages: claim with a lease, call handlers, record every outcome in one commit."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from core import logcontext
from core.errors import ConfigurationError, MalformedMessage, PermanentError, UnknownJobType, classify
from core.ids import canonical_json
from core.jobs import JobRegistry
from core.messages import TaskMessage, parse_task_message
from core.middleware import DEFAULT_MIDDLEWARE, Middleware, wrap
from core.models import JSON, ClaimedTask, ErrorClass, ErrorInfo, OutcomeKind, ReceivedMessage, TaskOutcome
from core.ports import Relay, StateStore
from core.registry import TaskContext, TaskRegistry
from core.retry import RetryPolicy
from core.settlement import Settlement, complete, dead_letter

log = logging.getLogger("coremachine.tasks")


class TaskRunner:
    def __init__(
        self,
        store: StateStore,
        relay: Relay,
        jobs: JobRegistry,
        tasks: TaskRegistry,
        worker_id: str,
        middleware: Sequence[Middleware] = DEFAULT_MIDDLEWARE,
    ) -> None:
        self._store = store
        self._relay = relay
        self._jobs = jobs
        self._tasks = tasks
        self._worker_id = worker_id
        self._middleware = tuple(middleware)

    def run(self, messages: Sequence[ReceivedMessage]) -> list[Settlement]:
        settlements: list[Settlement] = []
        wanted: dict[str, tuple[TaskMessage, ReceivedMessage]] = {}
        for message in messages:
            try:
                parsed = parse_task_message(message.body)
            except MalformedMessage as exc:
                log.warning("malformed task message", extra={"message_id": message.message_id, "error": str(exc)})
                settlements.append(dead_letter(message, "MalformedMessage", str(exc)))
                continue
            if parsed.task_type not in self._tasks:
                settlements.append(self._unknown_task_type(message, parsed))
                continue
            if parsed.task_id in wanted:
                settlements.append(complete(message))
                continue
            wanted[parsed.task_id] = (parsed, message)
        if not wanted:
            return settlements

        claimed = self._store.claim_tasks(list(wanted), self._worker_id)
        claimed_ids = {task.task_id for task in claimed}
        for task_id, (_, message) in wanted.items():
            if task_id not in claimed_ids:
                log.debug("task not claimable (done, leased elsewhere, not due, or job over)",
                          extra={"task_id": task_id, "message_id": message.message_id})
                settlements.append(complete(message))

        outcomes = [self._execute(task) for task in claimed]
        if outcomes:
            self._store.record_outcomes(outcomes)
            self._relay.flush()
        settlements.extend(complete(wanted[task.task_id][1]) for task in claimed)
        return settlements

    def _unknown_task_type(self, message: ReceivedMessage, parsed: TaskMessage) -> Settlement:
        description = f"no handler registered for task type {parsed.task_type!r} on worker {self._worker_id}"
        with logcontext.bind(job_id=parsed.job_id, stage=parsed.stage, task_id=parsed.task_id):
            log.error("dead-lettering task message with unknown task type", extra={"task_type": parsed.task_type})
        self._store.add_event(
            parsed.job_id,
            "dead_lettered",
            {"reason": "UnknownTaskType", "description": description, "message_id": message.message_id},
            stage=parsed.stage,
            task_id=parsed.task_id,
        )
        return dead_letter(message, "UnknownTaskType", description)

    def _execute(self, task: ClaimedTask) -> TaskOutcome:
        if task.attempt > task.max_attempts:
            error = ErrorInfo(
                "LeaseExpired",
                ErrorClass.TRANSIENT,
                f"attempt {task.attempt - 1} stopped without finishing (its lease expired); "
                f"no attempts left of {task.max_attempts}",
                attempt=task.attempt - 1,
                where="worker",
                at=_now(),
            )
            return TaskOutcome(task, OutcomeKind.FAILED, error=error)
        handler = self._tasks.get(task.task_type)
        context = TaskContext(
            task.job_id, task.job_type, task.stage, task.task_id, task.index, task.attempt, task.max_attempts
        )

        def call() -> JSON:
            return _as_result(handler(dict(task.parameters), context), task.task_type)

        try:
            result = wrap(task, call, self._middleware)
        except Exception as exc:
            return self._failure(task, exc)
        return TaskOutcome(task, OutcomeKind.COMPLETED, result=result)

    def _failure(self, task: ClaimedTask, exc: Exception) -> TaskOutcome:
        error_class = classify(exc)
        error = ErrorInfo(
            type(exc).__name__,
            error_class,
            str(exc)[:2000] or type(exc).__name__,
            attempt=task.attempt,
            where=_where(exc, task.task_type),
            at=_now(),
        )
        delay = self._retry_policy(task).next_delay(task.attempt, error_class)
        with logcontext.bind(job_id=task.job_id, job_type=task.job_type, stage=task.stage,
                             task_id=task.task_id, attempt=task.attempt):
            log.warning(
                "task failed",
                extra={"error_type": error.error_type, "error_class": error_class.value,
                       "error": error.message, "retry_in_s": delay},
            )
        if delay is None:
            return TaskOutcome(task, OutcomeKind.FAILED, error=error)
        return TaskOutcome(task, OutcomeKind.RETRY, error=error, retry_delay_seconds=delay)

    def _retry_policy(self, task: ClaimedTask) -> RetryPolicy:
        try:
            stage = self._jobs.get(task.job_type).stage(task.stage)
            policy = stage.retry_policy()
        except (UnknownJobType, ConfigurationError):
            policy = RetryPolicy()
        if policy.maximum_attempts != task.max_attempts:
            policy = RetryPolicy(
                policy.initial_interval, policy.backoff_coefficient, policy.maximum_interval,
                task.max_attempts, policy.jitter,
            )
        return policy


def _as_result(value: object, task_type: str) -> JSON:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PermanentError(f"handler {task_type!r} returned {type(value).__name__}; it must return a dict or None")
    result = dict(value)
    try:
        canonical_json(result)
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"handler {task_type!r} returned a result that is not JSON: {exc}") from exc
    return result


def _where(exc: BaseException, task_type: str) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return task_type
    last = frames[-1]
    return f"{task_type} at {last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"


def _now() -> str:
    return datetime.now(UTC).isoformat()
