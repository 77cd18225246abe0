"""Migrations: apply `sql/migrations/NNNN_name.sql` in order, once each, recorded in `schema_migrations`.

Each migration runs in its own transaction holding a fixed advisory lock, so concurrent migrators (several
workers starting at once) serialise and each file is applied exactly once. An applied migration whose file
has changed or disappeared stops everything: the database no longer matches the code.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from core.errors import ConfigurationError
from infrastructure.postgres.database import Database

MIGRATIONS_DIR = Path(__file__).parent / "sql" / "migrations"
LOCK_KEY = 0x436F72654D616368  # "CoreMach": the advisory lock every migrator takes
_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

_log = logging.getLogger(__name__)

_CREATE_TABLE = sql.SQL(
    """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        version    int PRIMARY KEY,
        name       text NOT NULL,
        checksum   text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
    )
    """
)
_LOCK = sql.SQL("SELECT pg_advisory_xact_lock(%s)")
_APPLIED = sql.SQL("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
_RECORD = sql.SQL("INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)")
_TABLE_EXISTS = sql.SQL("SELECT to_regclass('schema_migrations') IS NOT NULL")
_VERSIONS = sql.SQL("SELECT version FROM schema_migrations")
_MAX_VERSION = sql.SQL("SELECT coalesce(max(version), 0) FROM schema_migrations")


class MigrationError(ConfigurationError):
    """The migration files and the database's record of applied migrations disagree."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    checksum: str

    @classmethod
    def from_path(cls, path: Path) -> Migration:
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files must be named NNNN_lowercase_name.sql")
        return cls(
            version=int(match["version"]),
            name=match["name"],
            path=path,
            # Line endings normalised, so a Windows checkout (CRLF) matches what Linux applied.
            checksum=hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest(),
        )

    def sql(self) -> sql.SQL:
        return sql.SQL(self.path.read_text(encoding="utf-8"))


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every `NNNN_name.sql` under `directory`, by version; duplicate versions are refused."""
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        migration = Migration.from_path(path)
        if migration.version in migrations:
            other = migrations[migration.version].path.name
            raise MigrationError(f"{path.name} and {other} share version {migration.version}")
        migrations[migration.version] = migration
    if not migrations:
        raise MigrationError(f"no migrations found under {directory}")
    return [migrations[version] for version in sorted(migrations)]


@contextmanager
def _connection(
    target: Database | psycopg.Connection[TupleRow], *, idle: bool
) -> Iterator[psycopg.Connection[TupleRow]]:
    if isinstance(target, Database):
        with target.connect(autocommit=True) as conn:
            yield conn
        return
    if idle and target.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise MigrationError("migrate() needs a connection outside any transaction (commit or roll back first)")
    yield target


def _verify(applied: list[tuple[int, str, str]], migrations: list[Migration]) -> None:
    by_version = {migration.version: migration for migration in migrations}
    for version, name, checksum in applied:
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(
                f"migration {version:04d}_{name} is applied to the database but its file is missing "
                f"from {MIGRATIONS_DIR.name}/; the database is newer than this code"
            )
        if migration.checksum != checksum:
            raise MigrationError(
                f"migration {migration.path.name} was changed after it was applied (checksum {checksum[:12]}… "
                f"in the database, {migration.checksum[:12]}… on disk); add a new migration instead of editing it"
            )


def migrate(target: Database | psycopg.Connection[TupleRow], directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply every pending migration, each in its own transaction; returns the versions applied by this call.

    `target` is a `Database` (a dedicated connection is used) or an idle connection (left idle afterwards).
    """
    migrations = load_migrations(directory)
    applied_now: list[int] = []
    with _connection(target, idle=True) as conn:
        with conn.transaction():
            conn.execute(_LOCK, (LOCK_KEY,))
            conn.execute(_CREATE_TABLE)
            _verify(conn.execute(_APPLIED).fetchall(), migrations)
        for migration in migrations:
            with conn.transaction():
                conn.execute(_LOCK, (LOCK_KEY,))
                done = {version for version, _, _ in conn.execute(_APPLIED).fetchall()}
                if migration.version in done:
                    continue
                conn.execute(migration.sql())
                conn.execute(_RECORD, (migration.version, migration.name, migration.checksum))
            applied_now.append(migration.version)
            _log.info("applied migration %s", migration.path.name, extra={"migration": migration.version})
    return applied_now


def schema_version(target: Database | psycopg.Connection[TupleRow]) -> int:
    """The highest applied migration version; 0 for a database never migrated.

    With a connection inside a transaction, reads within it (a savepoint) and leaves it open.
    """
    with _connection(target, idle=False) as conn, conn.transaction():
        exists = conn.execute(_TABLE_EXISTS).fetchone()
        if not exists or not exists[0]:
            return 0
        row = conn.execute(_MAX_VERSION).fetchone()
        return int(row[0]) if row else 0


def pending(target: Database | psycopg.Connection[TupleRow], directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Versions on disk not yet applied (without applying them or checking checksums)."""
    with _connection(target, idle=False) as conn, conn.transaction():
        exists = conn.execute(_TABLE_EXISTS).fetchone()
        done = {version for (version,) in conn.execute(_VERSIONS)} if exists and exists[0] else set()
    return [migration.version for migration in load_migrations(directory) if migration.version not in done]
