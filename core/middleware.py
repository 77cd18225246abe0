"""Small wrappers around a handler call: log context and timing. Each is one function, composable."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from core import logcontext
from core.models import JSON, ClaimedTask

log = logging.getLogger("coremachine.task")

Call = Callable[[], JSON]
Middleware = Callable[[ClaimedTask, Call], JSON]


def with_log_context(task: ClaimedTask, call: Call) -> JSON:
    with logcontext.bind(
        job_id=task.job_id,
        job_type=task.job_type,
        stage=task.stage,
        task_id=task.task_id,
        task_type=task.task_type,
        attempt=task.attempt,
    ):
        return call()


def with_timing(task: ClaimedTask, call: Call) -> JSON:
    started = time.perf_counter()
    try:
        result = call()
    except BaseException:
        log.info("task raised", extra={"duration_ms": round((time.perf_counter() - started) * 1000, 2)})
        raise
    if log.isEnabledFor(logging.DEBUG):
        log.debug("task finished", extra={"duration_ms": round((time.perf_counter() - started) * 1000, 2)})
    return result


DEFAULT_MIDDLEWARE: tuple[Middleware, ...] = (with_log_context, with_timing)


def wrap(task: ClaimedTask, call: Call, middleware: Sequence[Middleware]) -> JSON:
    """Run `call` inside every middleware, the first one outermost."""
    wrapped = call
    for layer in reversed(middleware):
        wrapped = _bind(layer, task, wrapped)
    return wrapped()


def _bind(layer: Middleware, task: ClaimedTask, inner: Call) -> Call:
    return lambda: layer(task, inner)
