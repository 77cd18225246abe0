"""The engine's invariants through PgBouncer in transaction mode (Azure's port 6432), with Entra-style token auth.

The invariant tests below are the ones of `test_engine_invariants`, collected again here, where the `settings`
fixture (see conftest) sends every connection through PgBouncer: fan-out and fan-in, duplicate deliveries,
scheduled retries, fail-fast with finalize, and finalize that raises.
"""

from __future__ import annotations

import psycopg
import pytest

from infrastructure.postgres.database import Database
from infrastructure.postgres.listener import PollingWait, QueueListener
from infrastructure.postgres.queue import PostgresQueue
from infrastructure.settings import Settings
from tests.fakes.azure_identity import FakeCredential
from tests.integration.engine_helpers import run_to_end
from tests.integration.test_engine_invariants import (  # collected again, through PgBouncer
    test_every_message_delivered_twice_gives_the_same_final_state,
    test_finalize_raising_still_ends_the_job,
    test_hello_world_and_sum_squares_complete,
    test_permanent_error_fails_fast_without_retry_and_finalizes,
    test_transient_twice_then_success_keeps_both_errors,
)
from tests.pgbouncer import PgBouncer
from triggers.runtime import Runtime, build_runtime

__all__ = [
    "test_every_message_delivered_twice_gives_the_same_final_state",
    "test_finalize_raising_still_ends_the_job",
    "test_hello_world_and_sum_squares_complete",
    "test_permanent_error_fails_fast_without_retry_and_finalizes",
    "test_transient_twice_then_success_keeps_both_errors",
]


def _server_port(runtime: Runtime) -> object:
    with runtime.database.connection() as conn:
        row = conn.execute("SELECT inet_server_port()").fetchone()
    assert row is not None
    return row[0]


def test_connections_go_through_pgbouncer_without_prepared_statements(
    runtime: Runtime, pgbouncer: PgBouncer, credential: FakeCredential
) -> None:
    assert f":{pgbouncer.port}/" in runtime.database.conninfo
    assert _server_port(runtime) is None, "the server side of the pooled connection is PgBouncer's Unix socket"
    with runtime.database.connection() as conn:
        assert conn.prepare_threshold is None
        assert conn.info.password == pgbouncer.password
    assert credential.requests and set(credential.requests) == {("https://ossrdbms-aad.database.windows.net/.default",)}


def test_without_the_setting_psycopg_prepares_and_pgbouncer_breaks_it(
    bouncer_url: str, pgbouncer: PgBouncer
) -> None:
    """Why the setting exists: two clients sharing one server connection both prepare `_pg3_0` there."""
    query = "SELECT count(*) FROM jobs WHERE job_type = %s"
    with (
        psycopg.connect(bouncer_url, password=pgbouncer.password, autocommit=True) as first,
        psycopg.connect(bouncer_url, password=pgbouncer.password, autocommit=True) as second,
        pytest.raises(psycopg.errors.DuplicatePreparedStatement),
    ):
        for _ in range(6):  # psycopg prepares on the 5th execution (prepare_threshold=5)
            first.execute(query, ("hello_world",))
            second.execute(query, ("hello_world",))


def test_a_job_runs_under_many_workers_through_pgbouncer(runtime: Runtime) -> None:
    job_id = runtime.engine.submit("hello_world", {"n": 60, "fail_attempts": 1}).job.job_id
    assert run_to_end(runtime, job_id, concurrency=4).status.value == "completed"


def test_behind_pgbouncer_workers_poll_unless_a_direct_url_is_given(settings: Settings, database_url: str) -> None:
    with build_runtime(settings, migrate_schema=False) as polling:
        assert isinstance(polling.transport, PostgresQueue)
        assert isinstance(polling.transport._listener, PollingWait)
    direct = settings.model_copy(update={"database_direct_url": database_url})
    with build_runtime(direct, migrate_schema=False) as listening:
        assert isinstance(listening.transport, PostgresQueue)
        assert isinstance(listening.transport._listener, QueueListener)
        job_id = listening.engine.submit("hello_world", {"n": 3}).job.job_id
        assert run_to_end(listening, job_id).status.value == "completed"
        assert listening.transport._listener.opened, "LISTEN ran on the direct connection"


def test_migrations_run_through_pgbouncer(empty_database_url: str, pgbouncer: PgBouncer, settings: Settings) -> None:
    from infrastructure.postgres.migrations import load_migrations, migrate, schema_version

    dbname = psycopg.conninfo.conninfo_to_dict(empty_database_url)["dbname"]
    target = settings.model_copy(update={"database_url": pgbouncer.url(str(dbname))})
    with Database(target) as database:
        applied = migrate(database)
        assert applied == [m.version for m in load_migrations()]
        assert migrate(database) == []
        assert schema_version(database) == applied[-1]
