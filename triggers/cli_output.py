"""The CLI's shared plumbing: exit codes, one-line errors (text or JSON), the argument parser and its validators.

Every failure ends as ONE line on stderr: `coremachine: error: ...` or, when the command was given `--json`,
one JSON object in the HTTP API's error shape (`{"error": code, "message": ..., "details": [...]}`). Exit code 2
means the command line (or the input it names) is wrong, 1 that running it failed. `--debug` or
`COREMACHINE_DEBUG=1` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import ValidationError
from rich.console import Console

from core.errors import (
    ConfigurationError,
    CoreMachineError,
    InvalidParameters,
    StoreUnavailable,
    TransportError,
    UnknownJobType,
)

if TYPE_CHECKING:
    from infrastructure.settings import Settings
    from triggers.runtime import Registries, Runtime

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEBUG_ENV = "COREMACHINE_DEBUG"


class CliError(CoreMachineError):
    """A command cannot do what it was asked; `code` names the case, `exit_code` is 1 (runtime) or 2 (usage)."""

    def __init__(self, message: str, *, code: str = "failed", exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code
        self.exit_code = exit_code


class UsageError(CliError):
    """The command line is wrong: exit 2."""

    def __init__(self, message: str, *, code: str = "usage") -> None:
        super().__init__(message, code=code, exit_code=EXIT_USAGE)


class NotFound(CliError):
    """The job, dead letter or server named does not exist: exit 1."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="not_found", exit_code=EXIT_FAILED)


def settings_error(exc: ValidationError) -> ConfigurationError:
    """Pydantic's multi-line report as one line naming each bad setting."""
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())
    return ConfigurationError(f"invalid settings: {problems}")


def _classify(exc: BaseException) -> tuple[str, int, list[Any]]:
    if isinstance(exc, CliError):
        return exc.code, exc.exit_code, []
    if isinstance(exc, InvalidParameters):
        return "invalid_parameters", EXIT_USAGE, list(exc.details)
    if isinstance(exc, UnknownJobType):
        return "unknown_job_type", EXIT_USAGE, []
    if isinstance(exc, ConfigurationError):
        return "configuration", EXIT_USAGE, []
    if isinstance(exc, StoreUnavailable | TransportError):
        return "unavailable", EXIT_FAILED, []
    if isinstance(exc, CoreMachineError):
        return "failed", EXIT_FAILED, []
    return "internal", EXIT_FAILED, []


@dataclass
class Output:
    """Where a command writes: `console` (stdout, for people), `json()` (stdout, never wrapped), `fail()` (stderr)."""

    json_mode: bool = False
    debug: bool = False
    console: Console = field(default_factory=lambda: Console(highlight=False))

    @classmethod
    def for_argv(cls, argv: Sequence[str]) -> Output:
        debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")
        return cls(json_mode="--json" in argv, debug=debug)

    def json(self, data: Any, *, compact: bool = False) -> None:
        """`data` as JSON on stdout, straight to the stream: no console, so no wrapping and no markup."""
        text = json.dumps(data, default=str, ensure_ascii=False, indent=None if compact else 2)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def note(self, message: str) -> None:
        """A one-line remark for people on stderr (kept out of stdout so `--json` output stays clean)."""
        print(f"coremachine: {message}", file=sys.stderr, flush=True)

    def fail(self, exc: BaseException) -> int:
        """Report `exc` as one line on stderr; returns the exit code."""
        code, exit_code, details = _classify(exc)
        if self.debug:
            traceback.print_exception(exc, file=sys.stderr)
        message = " ".join(str(exc).split()) or type(exc).__name__
        if code == "internal":
            message = f"internal error: {type(exc).__name__}: {message}"
            if not self.debug:
                message += f" (run with --debug or {DEBUG_ENV}=1 for the traceback)"
        if self.json_mode:
            line = json.dumps({"error": code, "message": message, "details": details}, default=str)
        else:
            line = f"coremachine: error: {message}"
        print(line, file=sys.stderr, flush=True)
        return exit_code


@dataclass(frozen=True)
class Context:
    """What a command handler gets: settings, registries, where to write, and the runtime (None for `db`)."""

    settings: Settings
    registries: Registries
    out: Output
    maybe_runtime: Runtime | None = None

    @property
    def runtime(self) -> Runtime:
        if self.maybe_runtime is None:
            raise AssertionError("this command was registered with needs_runtime=False")
        return self.maybe_runtime


def guarded(out: Output, command: Callable[[], int]) -> int:
    """Run `command`; any exception becomes one line on stderr and an exit code (Ctrl-C: 130)."""
    try:
        return command()
    except KeyboardInterrupt:
        print("coremachine: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ValidationError as exc:
        return out.fail(settings_error(exc))
    except Exception as exc:
        return out.fail(exc)


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line raises `UsageError` (one line, exit 2) instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("coremachine").strip()
        raise UsageError(f"{command + ': ' if command else ''}{message} (see `{self.prog} --help`)")


def bounded_int(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse `type` accepting whole numbers from `minimum` to `maximum` (if given)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value

    return parse


def bounded_float(minimum: float) -> Callable[[str], float]:
    """An argparse `type` accepting finite numbers of at least `minimum` (seconds, usually)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not minimum <= value < float("inf"):
            raise argparse.ArgumentTypeError(f"must be a number of at least {minimum:g}, got {text}")
        return value

    return parse
