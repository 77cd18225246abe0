"""Error classification and the exception tree: one root, and each class says how a failure is treated."""

from __future__ import annotations

import errno

import pytest
from pydantic import BaseModel, ValidationError

from core.errors import (
    ConfigurationError,
    CoreMachineError,
    InvalidParameters,
    InvalidTransition,
    MalformedMessage,
    PermanentError,
    PreviousResultsError,
    StoreUnavailable,
    TaskError,
    TransientError,
    TransportError,
    UnknownJobType,
    UnknownTaskType,
    classify,
)
from core.models import ErrorClass

T, P, U = ErrorClass.TRANSIENT, ErrorClass.PERMANENT, ErrorClass.UNKNOWN


class _Model(BaseModel):
    n: int


def _validation_error() -> ValidationError:
    try:
        _Model.model_validate({"n": "x"})
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a ValidationError")


CASES: list[tuple[BaseException, ErrorClass]] = [
    (TransientError("x"), T),
    (PermanentError("x"), P),
    (PreviousResultsError("x"), P),
    (TaskError("x"), U),
    (TimeoutError(), T),
    (OSError(errno.ETIMEDOUT, "timed out"), T),
    (ConnectionError(), T),
    (ConnectionResetError(), T),
    (ConnectionRefusedError(), T),
    (BrokenPipeError(), T),
    (StoreUnavailable("db down"), T),
    (TransportError("send", transient=True), T),
    (TransportError("send", transient=False), P),
    (OSError(errno.EIO, "io"), T),
    (OSError(errno.EAGAIN, "again"), T),
    (OSError("no errno"), T),
    (OSError(errno.ENOSPC, "disk full"), P),
    (FileNotFoundError(errno.ENOENT, "missing"), P),
    (PermissionError(errno.EACCES, "denied"), P),
    (IsADirectoryError(), P),
    (ValueError(), P),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), P),
    (TypeError(), P),
    (KeyError("k"), P),
    (IndexError(), P),
    (AttributeError(), P),
    (NotImplementedError(), P),
    (_validation_error(), P),
    (RuntimeError(), U),
    (ZeroDivisionError(), U),
    (Exception(), U),
    (MalformedMessage("x"), U),
]


@pytest.mark.parametrize(("exc", "expected"), CASES, ids=[f"{type(e).__name__}-{c.value}" for e, c in CASES])
def test_classification(exc: BaseException, expected: ErrorClass) -> None:
    assert classify(exc) is expected


def test_explicit_task_errors_win_over_their_bases() -> None:
    class NotFoundButRetry(TransientError, FileNotFoundError):
        pass

    assert classify(NotFoundButRetry()) is T


@pytest.mark.parametrize("cls", [
    ConfigurationError, InvalidTransition, UnknownJobType, UnknownTaskType, InvalidParameters, MalformedMessage,
    StoreUnavailable, TransportError, TaskError, TransientError, PermanentError, PreviousResultsError,
])
def test_one_exception_root(cls: type[Exception]) -> None:
    assert issubclass(cls, CoreMachineError)


def test_messages_name_what_went_wrong() -> None:
    assert str(UnknownJobType("x", ["b", "a"])) == "unknown job type 'x'; valid job types: a, b"
    assert str(UnknownJobType("x", [])).endswith("(none)")
    assert "'t.x'" in str(UnknownTaskType("t.x"))
    error = InvalidParameters("j", [{"field": "n", "message": "too small"}, {"field": "m", "message": "missing"}])
    assert str(error) == "invalid parameters for j: n: too small; m: missing"
    assert error.details[1]["field"] == "m"
    assert TransportError("x", transient=True).transient
