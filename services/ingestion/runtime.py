"""The ingestion runtime hook: the warehouse connection provider and settings, set by the composition root.

Nothing is created on import. The composition root calls `configure(factory, settings)` once; handlers then
borrow a connection with `with runtime.connection() as conn:` (switched to autocommit for the block: the
pipeline opens its own transactions) and write reports through `runtime.artifacts()` (the settings' store).
Until then, `connection()` and `artifacts()` raise a `PermanentError` saying so, and `settings()` answers the
defaults.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from core.artifacts import ArtifactStore
from core.errors import PermanentError

ConnectionFactory = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """Knobs of the ingestion pipeline. Relative paths are relative to the working directory; `artifacts` is
    where run reports go (a local folder or Blob Storage, chosen by the composition root)."""

    artifacts: ArtifactStore | None = None
    data_sources: Path | None = None
    data_root: Path | None = None
    staging_schema: str = "ingest_staging"
    keep_staging: bool = False


class RuntimeNotConfigured(PermanentError):
    """A handler needs the warehouse but the composition root never called `configure`."""


@dataclass(frozen=True, slots=True)
class _Runtime:
    factory: ConnectionFactory | None
    settings: IngestSettings


_lock = threading.Lock()
_current = _Runtime(None, IngestSettings())


def configure(connection_factory: ConnectionFactory | None, settings: IngestSettings | None = None) -> None:
    """Set the connection provider (a callable returning a context manager over a psycopg connection)."""
    global _current
    with _lock:
        _current = _Runtime(connection_factory, settings or IngestSettings())


def reset() -> None:
    """Back to unconfigured (tests)."""
    configure(None, None)


def settings() -> IngestSettings:
    return _current.settings


def artifacts() -> ArtifactStore:
    """Where run reports are written; `RuntimeNotConfigured` until the composition root gives one."""
    store = _current.settings.artifacts
    if store is None:
        raise RuntimeNotConfigured(
            "ingestion runtime has no artifact store: the composition root must pass IngestSettings(artifacts=...)"
        )
    return store


@contextmanager
def connection() -> Iterator[psycopg.Connection[Any]]:
    """A warehouse connection in autocommit mode (the pipeline opens its own transactions), released after."""
    factory = _current.factory
    if factory is None:
        raise RuntimeNotConfigured(
            "ingestion runtime not configured: the composition root must call "
            "services.ingestion.runtime.configure(connection_factory, settings)"
        )
    with factory() as conn:
        previous = conn.autocommit
        if not previous:
            if conn.info.transaction_status != TransactionStatus.IDLE:
                conn.rollback()
            conn.autocommit = True
        try:
            yield conn
        finally:
            if not previous and not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
                conn.autocommit = False
