"""Translating psycopg errors into the engine's transient/permanent vocabulary at the warehouse boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import errors

from core.errors import PermanentError, TransientError

_TRANSIENT = (
    psycopg.OperationalError,
    errors.SerializationFailure,
    errors.DeadlockDetected,
    errors.LockNotAvailable,
    errors.QueryCanceled,
)


@contextmanager
def warehouse_errors(what: str) -> Iterator[None]:
    """Connection trouble, deadlocks and timeouts are transient; bad data and bad SQL are permanent."""
    try:
        yield
    except _TRANSIENT as exc:
        raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except psycopg.DatabaseError as exc:
        raise PermanentError(f"{what}: {type(exc).__name__}: {exc}") from exc
