"""Database: the PostgreSQL connection pool, and the embedded server used when no `DATABASE_URL` is set.

The embedded server (pgserver) keeps running after this process exits, so several worker processes share one
cluster under `data_dir/pgdata`; a file lock makes concurrent first starts safe.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from infrastructure.settings import Settings

Connection = psycopg.Connection[TupleRow]
CleanupMode = Literal["stop", "delete"] | None


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) across processes; a no-op without `fcntl`."""
    try:
        import fcntl
    except ImportError:  # Windows: pgserver's own inter-process lock still serialises the start
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def start_embedded_server(pgdata: Path, cleanup_mode: CleanupMode = None) -> Any:
    """Start (or attach to) the embedded PostgreSQL cluster in `pgdata` and return pgserver's handle.

    `cleanup_mode=None` leaves the server running when this process exits, so other processes keep using it;
    tests pass "stop" or "delete". The handle's `get_uri(database)` gives a connection URL (Unix socket).
    """
    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(pgdata.parent / ".pgserver.lock"):
        # pgserver checks-then-creates pgdata without a lock; creating it here under ours closes that race.
        pgdata.mkdir(exist_ok=True)
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset; its fallback directory is fine.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            from pgserver.postgres_server import get_server

            return get_server(pgdata, cleanup_mode=cleanup_mode)


class Database:
    """Owns the connection pool; resolves the connection URL (starting the embedded server) on first use."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._conninfo: str | None = None
        self._pool: ConnectionPool[Connection] | None = None
        self._lock = threading.Lock()

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def conninfo(self) -> str:
        """`settings.database_url`, or the URL of the embedded server under `settings.data_dir`."""
        if self._conninfo is None:
            with self._lock:
                if self._conninfo is None:
                    self._conninfo = self._resolve_conninfo()
        return self._conninfo

    def _resolve_conninfo(self) -> str:
        if self._settings.database_url:
            return self._settings.database_url
        server = start_embedded_server(self._settings.data_dir / "pgdata")
        return str(server.get_uri())

    @property
    def pool(self) -> ConnectionPool[Connection]:
        """The pool, created and opened on first use (again after `close()`)."""
        pool = self._pool
        if pool is None:
            conninfo = self.conninfo
            with self._lock:
                if self._pool is None:
                    self._pool = ConnectionPool(
                        conninfo,
                        min_size=self._settings.pool_min_size,
                        max_size=self._settings.pool_max_size,
                        kwargs={"autocommit": False},
                        name=f"coremachine-{os.getpid()}",
                        open=False,
                    )
                    self._pool.open(wait=False)
                pool = self._pool
        return pool

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A pooled connection (autocommit off): committed when the block ends, rolled back if it raises."""
        with self.pool.connection() as conn:
            yield conn

    def connect(self, *, autocommit: bool = False) -> Connection:
        """A dedicated connection outside the pool (e.g. for LISTEN, use `autocommit=True`); the caller closes it."""
        return psycopg.connect(self.conninfo, autocommit=autocommit)

    def close(self) -> None:
        """Close the pool's connections. The embedded server, if any, keeps running for other processes."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        source = "DATABASE_URL" if self._settings.database_url else f"embedded at {self._settings.data_dir}"
        return f"Database({source}, pool={'open' if self._pool is not None else 'closed'})"
