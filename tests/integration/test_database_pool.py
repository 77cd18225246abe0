"""The connection pool on the real PostgreSQL: each connection is checked as it leaves the pool (a connection the
server dropped is replaced, not handed to the caller) and carries keepalives and the application name."""

from __future__ import annotations

import time

import psycopg
import pytest

from infrastructure.postgres.database import KEEPALIVES, Database
from infrastructure.settings import Settings


def _backend_pid(database: Database) -> int:
    with database.connection() as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def test_a_connection_the_server_dropped_is_replaced_before_use(settings: Settings, database_url: str) -> None:
    one = settings.model_copy(update={"pool_min_size": 1, "pool_max_size": 1, "pool_check_idle_seconds": 0.2})
    with Database(one) as database:
        pid = _backend_pid(database)
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.3)  # idle past the threshold: checked as it leaves the pool
        assert _backend_pid(database) != pid, "a new connection was handed out, and the caller saw no error"
        assert database.pool.get_stats().get("connections_lost", 0) >= 1


@pytest.mark.parametrize("overrides", [{"pool_check": False}, {"pool_check_idle_seconds": 60.0}])
def test_unchecked_the_caller_gets_the_dead_connection(
    settings: Settings, database_url: str, overrides: dict[str, object]
) -> None:
    """With the check off, or for a connection used a moment ago (no round trip spent on it), the caller sees it."""
    unchecked = settings.model_copy(update={"pool_min_size": 1, "pool_max_size": 1, **overrides})
    with Database(unchecked) as database:
        pid = _backend_pid(database)
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        try:
            _backend_pid(database)
        except psycopg.OperationalError:
            return
        raise AssertionError("expected the terminated connection to fail its caller")


def test_pooled_connections_carry_keepalives_and_the_application_name(database: Database) -> None:
    with database.connection() as conn:
        parameters = conn.info.get_parameters()
        row = conn.execute("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()").fetchone()
    assert row == ("coremachine",)
    for name, value in KEEPALIVES.items():
        assert parameters.get(name) == str(value), name
    assert database.pool.max_lifetime == database.settings.pool_max_lifetime_seconds
