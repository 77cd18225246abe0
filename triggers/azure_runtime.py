"""The Runtime of a Functions worker process: built lazily on the first invocation, then shared by all of them.

Nothing is built at import: the host imports `function_app` to index the functions, and a database or Service
Bus outage there would take every function down. Each worker process (`FUNCTIONS_WORKER_PROCESS_COUNT`) has its
own module globals, hence its own Runtime, connection pool and Service Bus client.
"""

from __future__ import annotations

import os
import threading

from infrastructure.settings import Settings
from triggers.runtime import Runtime, build_runtime

_lock = threading.Lock()
_runtime: Runtime | None = None


def settings_from_environment() -> Settings:
    """`Settings()` from the app settings; the host's `JOBS_QUEUE`/`TASKS_QUEUE` (the names the triggers bind
    to) name the queues unless `COREMACHINE_JOBS_QUEUE`/`COREMACHINE_TASKS_QUEUE` say otherwise."""
    overrides: dict[str, str] = {}
    for setting, field in (("JOBS_QUEUE", "jobs_queue"), ("TASKS_QUEUE", "tasks_queue")):
        value = os.environ.get(setting, "").strip()
        if value and f"COREMACHINE_{setting}" not in os.environ:
            overrides[field] = value
    return Settings(**overrides)  # type: ignore[arg-type]


def get_runtime() -> Runtime:
    """The process's Runtime, built (and the schema migrated) on first use."""
    global _runtime
    runtime = _runtime
    if runtime is not None:
        return runtime
    with _lock:
        if _runtime is None:
            _runtime = build_runtime(settings_from_environment())
        return _runtime


def set_runtime(runtime: Runtime | None) -> Runtime | None:
    """Install a Runtime (tests) or forget the current one; returns the previous one, which is not closed."""
    global _runtime
    with _lock:
        previous, _runtime = _runtime, runtime
    return previous
