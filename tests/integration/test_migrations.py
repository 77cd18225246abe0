"""Migrations: the numbered files add up to the schema, apply once, and refuse edited or missing history."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import psycopg
import pytest

from core.models import JobStatus, StageStatus, TaskStatus
from infrastructure.postgres.database import Database
from infrastructure.postgres.migrations import (
    MIGRATIONS_DIR,
    MigrationError,
    load_migrations,
    migrate,
    pending,
    schema_version,
)
from infrastructure.settings import Settings

TABLES = {"jobs", "stages", "tasks", "job_events", "queue_messages", "dead_letters", "schema_migrations"}


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    """A private copy of the real migrations that a test may extend or edit."""
    return Path(shutil.copytree(MIGRATIONS_DIR, tmp_path / "migrations"))


def _enum_labels(conn: psycopg.Connection, name: str) -> list[str]:
    rows = conn.execute(
        "SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid WHERE t.typname = %s"
        " ORDER BY e.enumsortorder",
        (name,),
    ).fetchall()
    return [label for (label,) in rows]


def test_migrations_on_an_empty_database_give_the_schema(empty_database_url: str) -> None:
    expected = [migration.version for migration in load_migrations()]
    with psycopg.connect(empty_database_url) as conn:
        assert schema_version(conn) == 0
        assert migrate(conn) == expected
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        tables = {name for (name,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert tables >= TABLES
        assert _enum_labels(conn, "job_status") == [status.value for status in JobStatus]
        assert _enum_labels(conn, "task_status") == [status.value for status in TaskStatus]
        assert _enum_labels(conn, "stage_status") == [status.value for status in StageStatus]
        trigger = conn.execute(
            "SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname = 'queue_messages_notify'"
        ).fetchone()
        assert trigger == ("queue_messages",)
        rows = conn.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY version").fetchall()
        assert rows == [(m.version, m.name, m.checksum) for m in load_migrations()]
        assert schema_version(conn) == expected[-1]


def test_the_template_database_is_fully_migrated(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        assert schema_version(conn) == load_migrations()[-1].version
        assert pending(conn) == []


def test_running_again_applies_nothing(database: Database) -> None:
    assert migrate(database) == []
    assert migrate(database) == []
    assert schema_version(database) == load_migrations()[-1].version


def test_a_new_migration_is_applied_once(database_url: str, migrations_dir: Path) -> None:
    (migrations_dir / "0999_add_widgets.sql").write_text("CREATE TABLE widgets (id int PRIMARY KEY);\n")
    with psycopg.connect(database_url) as conn:
        assert pending(conn, migrations_dir) == [999]
        assert migrate(conn, migrations_dir) == [999]
        assert migrate(conn, migrations_dir) == []
        assert conn.execute("SELECT count(*) FROM widgets").fetchone() == (0,)
        assert schema_version(conn) == 999


def test_a_failing_migration_leaves_nothing_behind(database_url: str, migrations_dir: Path) -> None:
    (migrations_dir / "0999_broken.sql").write_text("CREATE TABLE half_done (id int);\nSELECT no_such_column;\n")
    with psycopg.connect(database_url) as conn:
        before = schema_version(conn)
        with pytest.raises(psycopg.errors.UndefinedColumn):
            migrate(conn, migrations_dir)
        assert schema_version(conn) == before
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)


def test_an_edited_migration_is_refused(database_url: str, migrations_dir: Path) -> None:
    first = sorted(migrations_dir.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- an innocent-looking edit\n")
    with psycopg.connect(database_url) as conn, pytest.raises(MigrationError, match="was changed after it was"):
        migrate(conn, migrations_dir)


def test_a_missing_migration_file_is_refused(database_url: str, migrations_dir: Path) -> None:
    extra = migrations_dir / "0999_later.sql"
    extra.write_text("SELECT 1;\n")
    with psycopg.connect(database_url) as conn:
        migrate(conn, migrations_dir)
        extra.unlink()
        with pytest.raises(MigrationError, match="0999_later is applied to the database but its file is missing"):
            migrate(conn, migrations_dir)


def test_badly_named_or_duplicate_files_are_refused(migrations_dir: Path) -> None:
    (migrations_dir / "0001_again.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match="share version 1"):
        load_migrations(migrations_dir)
    (migrations_dir / "0001_again.sql").unlink()
    (migrations_dir / "2-Bad Name.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match=r"must be named NNNN_lowercase_name\.sql"):
        load_migrations(migrations_dir)


def test_migrate_refuses_a_connection_inside_a_transaction(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(MigrationError, match="outside any transaction"):
            migrate(conn)


def test_concurrent_migrators_apply_each_migration_once(empty_database_url: str, migrations_dir: Path) -> None:
    (migrations_dir / "0998_slow.sql").write_text("SELECT pg_sleep(0.2);\nCREATE TABLE slow (id int);\n")
    (migrations_dir / "0999_after_slow.sql").write_text("CREATE TABLE after_slow (job_id text REFERENCES jobs);\n")
    expected = [migration.version for migration in load_migrations(migrations_dir)]
    migrators = 4
    barrier = threading.Barrier(migrators)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(empty_database_url) as conn:
                barrier.wait(timeout=10)
                results.append(migrate(conn, migrations_dir))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(migrators)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert len(results) == migrators
    assert sorted(version for applied in results for version in applied) == expected
    with psycopg.connect(empty_database_url) as conn:
        rows = conn.execute("SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY version")
        assert rows.fetchall() == [(version, 1) for version in expected]


def test_migrate_accepts_a_database(empty_database_url: str, tmp_path: Path) -> None:
    with Database(Settings.for_tests(database_url=empty_database_url, data_dir=tmp_path)) as database:
        assert migrate(database) == [migration.version for migration in load_migrations()]
        with database.connection() as conn:
            assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
