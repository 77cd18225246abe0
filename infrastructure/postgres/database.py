"""Database: the PostgreSQL connection pool, and the embedded server used when no `DATABASE_URL` is set.

The embedded server (pgserver) keeps running after this process exits, so several worker processes share one
cluster under `data_dir/pgdata`; a file lock makes concurrent first starts safe.

Every connection gets TCP keepalives (so a dead peer is noticed within about a minute, not hours) and an
application name, unless the URL says otherwise; behind PgBouncer in transaction mode it never prepares statements
on the server (`prepare_threshold=None`); with Entra ID auth its password is a fresh token of the managed identity.
The pool checks a connection that sat idle as it hands it out, and replaces connections older than
`pool_max_lifetime_seconds`.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from core.errors import ConfigurationError, StoreUnavailable
from infrastructure.identity import azure_credential, postgres_password
from infrastructure.settings import Settings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

Connection = psycopg.Connection[TupleRow]
CleanupMode = Literal["stop", "delete"] | None

APPLICATION_NAME = "coremachine"
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
"""libpq TCP keepalives: probe after 30 s idle, every 10 s, give up after 3 misses (ignored on Unix sockets)."""


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


class IdleCheck:
    """The pool's check, run only on a connection that sat in the pool `after_seconds` or longer: one that was just
    used is alive (keepalives watch the rest), and skipping it saves a round trip on every busy checkout."""

    def __init__(self, after_seconds: float) -> None:
        self._after = after_seconds
        self._returned: weakref.WeakKeyDictionary[Connection, float] = weakref.WeakKeyDictionary()

    def returned(self, conn: Connection) -> None:
        """The pool's `reset` callback: the connection is back in the pool, idle."""
        self._returned[conn] = time.monotonic()

    def check(self, conn: Connection) -> None:
        """The pool's `check` callback: raises if the connection no longer works."""
        returned = self._returned.get(conn)
        if returned is None or time.monotonic() - returned >= self._after:
            ConnectionPool.check_connection(conn)


def connection_defaults(conninfo: str) -> dict[str, Any]:
    """Keepalives and the application name, for each of them the URL does not set itself."""
    given = conninfo_to_dict(conninfo)
    defaults: dict[str, Any] = {**KEEPALIVES, "application_name": APPLICATION_NAME}
    return {key: value for key, value in defaults.items() if key not in given}


def _redacted(conninfo: str) -> str:
    """The connection URL (or key=value string) without its password, for error messages."""
    if "://" not in conninfo:
        try:
            fields = conninfo_to_dict(conninfo)
        except psycopg.Error:
            return "the configured connection string"
        return " ".join(f"{key}={value}" for key, value in fields.items() if key != "password")
    try:
        parts = urlsplit(conninfo)
    except ValueError:
        return "the configured URL"
    if parts.password is None:
        return conninfo
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class Database:
    """Owns the connection pool; resolves the connection URL (starting the embedded server) on first use.

    `credential` is the Azure identity for `database_auth='entra'`; by default one is built from `azure_client_id`
    when first needed."""

    def __init__(self, settings: Settings, *, credential: TokenCredential | None = None) -> None:
        self._settings = settings
        self._credential = credential
        self._conninfo: str | None = None
        self._pool: ConnectionPool[Connection] | None = None
        self._lock = threading.Lock()
        self._credential_lock = threading.Lock()

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
        if self._settings.on_azure_functions:
            raise ConfigurationError("DATABASE_URL is not set, and the embedded server never runs on Azure Functions")
        server = start_embedded_server(self._settings.data_dir / "pgdata")
        return str(server.get_uri())

    @property
    def listen_available(self) -> bool:
        """Whether `connect()` reaches PostgreSQL itself, so LISTEN works: not through PgBouncer, or a direct URL."""
        return not self._settings.pgbouncer or self._settings.database_direct_url is not None

    def connection_kwargs(self, *, direct: bool = False) -> dict[str, Any]:
        """Keyword arguments of a new connection (called once per connection): the defaults the URL leaves open,
        no server-side prepared statements through PgBouncer, and a fresh Entra ID token as the password.
        `direct` is for a connection on `database_direct_url` (when set), which bypasses PgBouncer."""
        direct_url = self._settings.database_direct_url if direct else None
        kwargs = connection_defaults(direct_url or self.conninfo)
        if self._settings.pgbouncer and direct_url is None:
            kwargs["prepare_threshold"] = None
        if self._settings.database_auth == "entra":
            kwargs["password"] = postgres_password(self._token_credential())
        return kwargs

    def _token_credential(self) -> TokenCredential:
        if self._credential is None:
            with self._credential_lock:
                if self._credential is None:
                    self._credential = azure_credential(self._settings.azure_client_id)
        return self._credential

    @property
    def pool(self) -> ConnectionPool[Connection]:
        """The pool, created and opened on first use (again after `close()`)."""
        pool = self._pool
        if pool is None:
            conninfo = self.conninfo
            with self._lock:
                if self._pool is None:
                    idle = IdleCheck(self._settings.pool_check_idle_seconds) if self._settings.pool_check else None
                    self._pool = ConnectionPool(
                        conninfo,
                        min_size=self._settings.pool_min_size,
                        max_size=self._settings.pool_max_size,
                        kwargs=lambda: {"autocommit": False, **self.connection_kwargs()},
                        check=idle.check if idle else None,
                        reset=idle.returned if idle else None,
                        max_lifetime=self._settings.pool_max_lifetime_seconds,
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
        """A dedicated connection outside the pool (LISTEN, migrations), on `database_direct_url` when set so it
        bypasses PgBouncer; the caller closes it."""
        conninfo = self._settings.database_direct_url or self.conninfo
        try:
            return psycopg.connect(conninfo, autocommit=autocommit, **self.connection_kwargs(direct=True))
        except psycopg.OperationalError as exc:
            reason = " ".join(str(exc).split())
            raise StoreUnavailable(f"cannot connect to the database ({_redacted(conninfo)}): {reason}") from exc

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
