"""The Runtime of a Functions worker process: built lazily on the first invocation, then shared by all of them.

Nothing is built at import: the host imports `function_app` to index the functions, and a database or Service
Bus outage there would take every function down. Each worker process (`FUNCTIONS_WORKER_PROCESS_COUNT`) has its
own module globals, hence its own Runtime, connection pool and Service Bus client.

Under the Functions host some settings that are fine on a laptop are fatal: no `DATABASE_URL` would start an
embedded server inside a read-only, short-lived sandbox, and the PostgreSQL queue has no consumer there (the
triggers listen to Service Bus), so jobs would stall without a word. `check_environment()` turns each of these
into a `StartupError` that names the setting to change; every invocation fails with it, it is logged, and the
readiness probe reports it (`startup_problems()`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path

from pydantic import ValidationError

from core.errors import ConfigurationError
from infrastructure.settings import Settings
from triggers.http_base import ApiContext
from triggers.runtime import Runtime, build_runtime

log = logging.getLogger("coremachine.startup")

_lock = threading.Lock()
_runtime: Runtime | None = None
_reported_lock = threading.Lock()
_reported: set[str] = set()


class StartupError(ConfigurationError):
    """The app settings cannot run CoreMachine under the Functions host; `problems` says what to set."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("CoreMachine cannot start: " + "; ".join(problems))
        self.problems = problems


def settings_from_environment() -> Settings:
    """`Settings()` from the app settings; the host's `JOBS_QUEUE`/`TASKS_QUEUE` (the names the triggers bind
    to) name the queues unless `COREMACHINE_JOBS_QUEUE`/`COREMACHINE_TASKS_QUEUE` say otherwise. Under the
    Functions host, reports default to a folder under the temporary directory: the package directory is
    read-only there."""
    overrides: dict[str, str] = {}
    for setting, field in (("JOBS_QUEUE", "jobs_queue"), ("TASKS_QUEUE", "tasks_queue")):
        value = os.environ.get(setting, "").strip()
        if value and f"COREMACHINE_{setting}" not in os.environ:
            overrides[field] = value
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if settings.on_azure_functions and "COREMACHINE_REPORTS_DIR" not in os.environ:
        settings = settings.model_copy(update={"reports_dir": Path(tempfile.gettempdir()) / "coremachine" / "reports"})
    return settings


def azure_problems(settings: Settings) -> list[str]:
    """What in `settings` cannot work under the Functions host (nothing when not under it)."""
    if not settings.on_azure_functions:
        return []
    problems: list[str] = []
    if not settings.database_url:
        problems.append(
            "DATABASE_URL is not set: there is no embedded PostgreSQL under the Functions host; set it to the "
            "Azure Database for PostgreSQL URL (port 6432 for its PgBouncer)"
        )
    if settings.transport != "servicebus":
        problems.append(
            f"COREMACHINE_TRANSPORT is {settings.transport!r}: under the Functions host only Service Bus messages "
            "are consumed (by the queue triggers), so jobs would never run; set COREMACHINE_TRANSPORT=servicebus"
        )
    return problems


def check_environment() -> Settings:
    """The settings of this process, or `StartupError` listing every reason they cannot run here."""
    try:
        settings = settings_from_environment()
    except ValidationError as exc:
        raise StartupError([_describe(error) for error in exc.errors()]) from exc
    problems = azure_problems(settings)
    if problems:
        raise StartupError(problems)
    return settings


def _describe(error: object) -> str:
    if not isinstance(error, dict):
        return str(error)
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {error.get('msg')}" if where else str(error.get("msg"))


def startup_problems() -> list[str]:
    """For readiness probes: why this process cannot start, [] when it can. Reads settings only, no I/O."""
    try:
        check_environment()
    except StartupError as exc:
        return exc.problems
    return []


def log_startup_problems() -> None:
    """Log each start-up problem once per process, as an error (called at import of the app and on failure)."""
    for problem in startup_problems():
        with _reported_lock:
            if problem in _reported:
                continue
            _reported.add(problem)
        log.error("start-up check failed: %s", problem, extra={"problem": problem})


def get_runtime() -> Runtime:
    """The process's Runtime, built (and the schema migrated) on first use; `StartupError` if it cannot be."""
    global _runtime
    runtime = _runtime
    if runtime is not None:
        return runtime
    try:
        settings = check_environment()
    except StartupError:
        log_startup_problems()
        raise
    with _lock:
        if _runtime is None:
            _runtime = build_runtime(settings)
        return _runtime


def outage_budget_seconds() -> float:
    """The running runtime's `outage_budget_seconds`; before one is built (it may be the outage that stops it
    being built), the setting's default."""
    runtime = _runtime
    if runtime is not None:
        return runtime.settings.outage_budget_seconds
    return float(Settings.model_fields["outage_budget_seconds"].default)


def set_runtime(runtime: Runtime | None) -> Runtime | None:
    """Install a Runtime (tests) or forget the current one; returns the previous one, which is not closed."""
    global _runtime
    with _lock:
        previous, _runtime = _runtime, runtime
    return previous


def http_settings() -> Settings:
    """Settings for building the HTTP app at import (job packages, body limit). Invalid settings fall back to
    the defaults here: the app must still index, and every invocation reports the start-up problem."""
    try:
        return settings_from_environment()
    except ValidationError:
        return Settings.model_construct()


_context: tuple[Runtime, ApiContext] | None = None


def api_context() -> ApiContext:
    """The HTTP routes' context over the process's Runtime (built on the first request, not at import);
    raises `StartupError` like `get_runtime`."""
    global _context
    runtime = get_runtime()
    with _lock:
        if _context is None or _context[0] is not runtime:
            _context = (runtime, ApiContext.from_runtime(runtime))
        return _context[1]
