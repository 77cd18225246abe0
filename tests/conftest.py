"""Database fixtures: one throwaway PostgreSQL server per session, a migrated template, a fresh clone per test.

The server is pgserver's embedded PostgreSQL in a temporary directory (tmpfs if any; never `.coremachine/`), or the
server named by `COREMACHINE_TEST_DATABASE_URL` (a URL whose user may create databases), e.g. in CI.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from infrastructure.postgres.database import Database, start_embedded_server
from infrastructure.postgres.migrations import migrate
from infrastructure.settings import Settings

TEMPLATE = "cm_template"
_SHM = Path("/dev/shm")
_SPEED_OVER_SAFETY = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def with_dbname(url: str, dbname: str) -> str:
    """`url` pointing at database `dbname` instead (works for pgserver's socket URLs too)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


class PostgresServer:
    """The session's server: an autocommit admin connection and the URL of any of its databases."""

    def __init__(self, admin_url: str, *, shared: bool) -> None:
        self.admin_url = admin_url
        self.admin = psycopg.connect(admin_url, autocommit=True)
        self._run_id = uuid.uuid4().hex[:8]
        self._count = 0
        # A server other sessions may use at the same time gets a template of this run's own.
        self.template = f"{TEMPLATE}_{self._run_id}" if shared else TEMPLATE

    def url(self, dbname: str) -> str:
        return with_dbname(self.admin_url, dbname)

    def create_database(self, template: str | None = None, prefix: str = "cm_test") -> str:
        """Create a database cloned from `template` (default: the migrated template); returns its name."""
        template = template or self.template
        self._count += 1
        name = f"{prefix}_{self._run_id}_{self._count}"
        self.admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
        return name

    def drop_database(self, name: str) -> None:
        self.admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def close(self) -> None:
        self.admin.close()


def _tune_for_tests(admin_url: str) -> None:
    """Durability off: a crash loses nothing a test needs, and commits no longer wait for the disk."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name, value in _SPEED_OVER_SAFETY.items():
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        conn.execute("SELECT pg_reload_conf()")


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """The session's PostgreSQL server with a migrated template database (`cm_template` when embedded)."""
    external = os.environ.get("COREMACHINE_TEST_DATABASE_URL")
    embedded = None
    parent: Path | None = None
    if external:
        admin_url = external
    else:
        parent = _pgdata_parent(tmp_path_factory)
        embedded = start_embedded_server(parent / "pgdata", cleanup_mode="delete")
        admin_url = str(embedded.get_uri())
        _tune_for_tests(admin_url)
    server = PostgresServer(admin_url, shared=bool(external))
    try:
        _create_template(server)
        yield server
    finally:
        if external:
            _drop_template(server)
        server.close()
        if embedded is not None:
            embedded.cleanup()
        if parent is not None and parent.is_relative_to(_SHM):
            shutil.rmtree(parent, ignore_errors=True)


def _pgdata_parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session's cluster lives: tmpfs when there is one, else pytest's temporary directory.

    CREATE DATABASE copies a few hundred files; on tmpfs that takes ~10 ms, on a slow virtual disk ~350 ms.
    """
    if _SHM.is_dir() and os.access(_SHM, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="coremachine-test-", dir=_SHM))
    return tmp_path_factory.mktemp("postgres")


def _create_template(server: PostgresServer) -> None:
    template = sql.Identifier(server.template)
    _drop_template(server)
    server.admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(template))
    with psycopg.connect(server.url(server.template)) as conn:
        migrate(conn)
    # No connections from now on: CREATE DATABASE ... TEMPLATE fails while anyone is connected to the template.
    server.admin.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(template))


def _drop_template(server: PostgresServer) -> None:
    name = server.template
    exists = server.admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if exists:
        server.admin.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(sql.Identifier(name)))
        server.drop_database(name)


@contextmanager
def _fresh_database(server: PostgresServer, template: str | None = None) -> Iterator[str]:
    name = server.create_database(template)
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def database_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh, migrated database for this test alone; dropped afterwards."""
    with _fresh_database(postgres_server) as url:
        yield url


@pytest.fixture(scope="module")
def module_database_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh, migrated database shared by one module's tests (for slow modules); dropped afterwards."""
    with _fresh_database(postgres_server) as url:
        yield url


@pytest.fixture
def empty_database_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh database with no schema at all (not migrated); dropped afterwards."""
    with _fresh_database(postgres_server, template="template0") as url:
        yield url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Test settings on this test's database: short locks (2 s), environment variables ignored."""
    return Settings.for_tests(database_url=database_url, data_dir=tmp_path, lock_seconds=2.0)


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    """A `Database` (connection pool) on this test's database, closed afterwards."""
    db = Database(settings)
    try:
        yield db
    finally:
        db.close()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The connection string of an Azurite blob service running for this test session."""
    from tests.azurite import running_azurite

    try:
        with running_azurite(tmp_path_factory.mktemp("azurite")) as connection:
            yield connection
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
