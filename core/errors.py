"""One exception root for CoreMachine, and the classification of handler failures."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable

from core.models import ErrorClass


class CoreMachineError(Exception):
    """Root of every error the engine raises on purpose."""


class ConfigurationError(CoreMachineError):
    """Start-up cannot go on: a registry, a job definition or a setting is wrong."""


class InvalidTransition(CoreMachineError):
    """A state change the state machine does not allow."""


class UnknownJobType(CoreMachineError):
    def __init__(self, job_type: str, valid: Iterable[str]) -> None:
        self.job_type = job_type
        self.valid = sorted(valid)
        super().__init__(f"unknown job type {job_type!r}; valid job types: {', '.join(self.valid) or '(none)'}")


class UnknownTaskType(CoreMachineError):
    def __init__(self, task_type: str) -> None:
        self.task_type = task_type
        super().__init__(f"no handler registered for task type {task_type!r}")


class InvalidParameters(CoreMachineError):
    """Job parameters failed validation; `details` names each bad field."""

    def __init__(self, job_type: str, details: list[dict[str, str]]) -> None:
        self.job_type = job_type
        self.details = details
        fields = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        super().__init__(f"invalid parameters for {job_type}: {fields}")


class MalformedMessage(CoreMachineError):
    """A queue message whose body is not one the engine understands (poison)."""


class StoreUnavailable(CoreMachineError):
    """The state store cannot be reached; transient by nature."""


class TransportError(CoreMachineError):
    """The message transport failed; `transient` says whether trying again may help."""

    def __init__(self, message: str, *, transient: bool) -> None:
        self.transient = transient
        super().__init__(message)


class MessageRefused(TransportError):
    """The transport refuses this message itself (too large, invalid id): sending it again can never succeed,
    but other messages still can."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


class TaskError(CoreMachineError):
    """Base for errors raised by task handlers that say how they should be treated."""

    error_class = ErrorClass.UNKNOWN


class TransientError(TaskError):
    """Worth retrying: the same call may succeed later."""

    error_class = ErrorClass.TRANSIENT


class PermanentError(TaskError):
    """Retrying cannot help: bad input, a missing file, a broken rule."""

    error_class = ErrorClass.PERMANENT


class PreviousResultsError(PermanentError):
    """Results of the previous stage do not have the shape a stage expects."""


_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    TimeoutError,
    ConnectionError,
    socket.timeout,
    StoreUnavailable,
)
_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.EIO}
_PERMANENT_TYPES: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    KeyError,
    LookupError,
    AttributeError,
    NotImplementedError,
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    UnicodeError,
)


def classify(exc: BaseException) -> ErrorClass:
    """Transient for timeouts, connection and I/O trouble; permanent for bad input; unknown otherwise.

    Explicit `TaskError` subclasses win; then a few standard families; pydantic's ValidationError is a
    ValueError and so permanent.
    """
    if isinstance(exc, TaskError):
        return exc.error_class
    if isinstance(exc, TransportError):
        return ErrorClass.TRANSIENT if exc.transient else ErrorClass.PERMANENT
    if isinstance(exc, _TRANSIENT_TYPES):
        return ErrorClass.TRANSIENT
    if isinstance(exc, _PERMANENT_TYPES):
        return ErrorClass.PERMANENT
    if isinstance(exc, OSError):
        return ErrorClass.TRANSIENT if exc.errno in _TRANSIENT_ERRNOS or exc.errno is None else ErrorClass.PERMANENT
    return ErrorClass.UNKNOWN
