"""One transaction on a pooled connection, with driver outages translated into `StoreUnavailable`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from core.errors import StoreUnavailable

ConnectionFactory = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]
R = TypeVar("R")

RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
"""What the database asks a unit of work to run again from the start for."""


@retry(
    retry=retry_if_exception_type(RETRYABLE),
    stop=stop_after_attempt(5),
    wait=wait_random_exponential(multiplier=0.02, max=0.5),
    reraise=True,
)
def retried(attempt: Callable[[], R]) -> R:
    """Run `attempt`, again from the start on a deadlock or serialization failure (up to 5 times, with jitter)."""
    return attempt()


@contextmanager
def translated(passthrough: tuple[type[psycopg.OperationalError], ...] = ()) -> Iterator[None]:
    """A driver outage (`OperationalError`) raised as `StoreUnavailable`, except the `passthrough` kinds (deadlock,
    serialization failure) that the caller retries itself."""
    try:
        yield
    except psycopg.OperationalError as exc:
        if isinstance(exc, passthrough):
            raise
        raise StoreUnavailable(f"state store unavailable: {exc}") from exc


@contextmanager
def transaction(
    connection: ConnectionFactory, passthrough: tuple[type[psycopg.OperationalError], ...] = ()
) -> Iterator[psycopg.Cursor[Any]]:
    """A cursor inside one transaction; errors as `translated` says."""
    with translated(passthrough), connection() as conn, conn.transaction(), conn.cursor() as cur:
        yield cur


@contextmanager
def statement(
    connection: ConnectionFactory, passthrough: tuple[type[psycopg.OperationalError], ...] = ()
) -> Iterator[psycopg.Cursor[Any]]:
    """A cursor for ONE statement in autocommit (atomic on its own, one round trip, no BEGIN or COMMIT); errors as
    in `transaction`."""
    with translated(passthrough), autocommit(connection) as conn, conn.cursor() as cur:
        yield cur


@contextmanager
def autocommit(connection: ConnectionFactory) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection in autocommit for work that is ONE statement (atomic on its own): one round trip
    instead of three (BEGIN, the statement, COMMIT). Several statements that must see one snapshot or commit
    together use `transaction` instead."""
    with connection() as conn:
        conn.autocommit = True
        try:
            yield conn
        finally:
            if not conn.closed:
                conn.autocommit = False


@contextmanager
def single_read(connection: ConnectionFactory) -> Iterator[psycopg.Connection[Any]]:
    """`autocommit` for a read of the store, a driver outage raised as `StoreUnavailable`."""
    with translated(), autocommit(connection) as conn:
        yield conn
