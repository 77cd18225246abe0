"""Runs claimed tasks' handlers and turns what happened into outcomes: completed, retry at T, or failed.

Handlers run through `TimeLimits` (each attempt under its stage's time limit, on a replaceable thread) and the
middleware chain. An attempt past its limit is a transient `TaskTimeout`, retried per the stage's policy. A task
whose stop signal is already set when its turn comes (its job was cancelled while the batch ran) is not started.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from core import logcontext
from core.attempts import Call, Raised, Result, Returned, TimedOut, TimeLimits
from core.errors import ConfigurationError, PermanentError, UnknownJobType, classify
from core.ids import canonical_json
from core.jobs import JobRegistry
from core.middleware import Middleware, wrap
from core.models import JSON, ClaimedTask, ErrorClass, ErrorInfo, OutcomeKind, TaskOutcome
from core.registry import TaskContext, TaskRegistry
from core.retry import RetryPolicy
from core.services import Services

log = logging.getLogger("coremachine.tasks")


class NotStarted(Exception):
    """The task's stop signal was set before its handler started (its job was cancelled): it never ran."""


@dataclass
class Executed:
    outcomes: list[TaskOutcome] = field(default_factory=list)
    not_started: list[ClaimedTask] = field(default_factory=list)


class TaskExecution:
    def __init__(
        self, jobs: JobRegistry, tasks: TaskRegistry, middleware: Sequence[Middleware], limits: TimeLimits,
        services: Services,
    ) -> None:
        self._services = services
        self._jobs = jobs
        self._tasks = tasks
        self._middleware = tuple(middleware)
        self._limits = limits

    def run(
        self, claimed: Sequence[ClaimedTask], stops: Mapping[str, threading.Event],
        resume: Callable[[Executed], None] | None = None,
    ) -> Executed:
        """What became of each claimed task. With `resume` the handlers may run on this thread (see
        `core/attempts.py`): if one hangs, this thread is abandoned and `resume` gets the batch on another."""
        early: list[TaskOutcome] = []
        runnable: list[ClaimedTask] = []
        for task in claimed:
            if task.attempt > task.max_attempts:
                early.append(_out_of_attempts(task))
            else:
                runnable.append(task)
        calls = [self._call(task, stops.get(task.task_id) or threading.Event()) for task in runnable]

        def executed(results: list[Result[JSON]]) -> Executed:
            return self._executed(early, runnable, results)

        taken_over = None if resume is None else (lambda results: resume(executed(results)))
        return executed(self._limits.run(calls, taken_over))

    def _executed(
        self, early: list[TaskOutcome], runnable: list[ClaimedTask], results: list[Result[JSON]]
    ) -> Executed:
        done = Executed(list(early))
        for task, result in zip(runnable, results, strict=True):
            if isinstance(result, Returned):
                done.outcomes.append(TaskOutcome(task, OutcomeKind.COMPLETED, result=result.value))
            elif isinstance(result, Raised) and isinstance(result.error, NotStarted):
                done.not_started.append(task)
            elif isinstance(result, Raised):
                done.outcomes.append(self._failure(task, result.error))
            else:
                done.outcomes.append(self._timeout(task, result))
        return done

    def _call(self, task: ClaimedTask, stop: threading.Event) -> Call[JSON]:
        handler = self._tasks.get(task.task_type)
        context = TaskContext(
            task.job_id, task.job_type, task.stage, task.task_id, task.index, task.attempt, task.max_attempts,
            services=self._services, stop=stop,
        )

        def handle() -> JSON:
            return _as_result(handler(dict(task.parameters), context), task.task_type)

        def attempt() -> JSON:
            if stop.is_set():
                raise NotStarted(task.task_id)
            return wrap(task, handle, self._middleware)

        return Call(attempt, task.timeout_seconds, stop, task.task_type)

    def _timeout(self, task: ClaimedTask, timed_out: TimedOut) -> TaskOutcome:
        message = (f"attempt {task.attempt} ran past its time limit of {timed_out.limit_seconds:g}s and was "
                   f"abandoned")
        return self._classified(task, ErrorInfo(
            "TaskTimeout", ErrorClass.TRANSIENT, message, attempt=task.attempt, where=task.task_type, at=_now(),
        ))

    def _failure(self, task: ClaimedTask, exc: Exception) -> TaskOutcome:
        return self._classified(task, ErrorInfo(
            type(exc).__name__,
            classify(exc),
            str(exc)[:2000] or type(exc).__name__,
            attempt=task.attempt,
            where=_where(exc, task.task_type),
            at=_now(),
        ))

    def _classified(self, task: ClaimedTask, error: ErrorInfo) -> TaskOutcome:
        delay = self._retry_policy(task).next_delay(task.attempt, error.error_class)
        with logcontext.bind(job_id=task.job_id, job_type=task.job_type, stage=task.stage,
                             task_id=task.task_id, attempt=task.attempt):
            log.warning(
                "task failed",
                extra={"error_type": error.error_type, "error_class": error.error_class.value,
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


def _out_of_attempts(task: ClaimedTask) -> TaskOutcome:
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
