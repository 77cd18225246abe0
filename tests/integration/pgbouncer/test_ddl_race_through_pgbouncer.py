"""Workers creating the same ingest schema at once, through PgBouncer: exactly one creates it, nobody fails.

Before the check was repeated under the lock, most rounds here failed with a unique violation on
`pg_namespace` (PgBouncer's reused server connections make the workers truly concurrent).
"""

from __future__ import annotations

import threading

import psycopg

from infrastructure.postgres.sql_queries import SqlQueries
from services.ingestion import staging
from services.ingestion.warehouse import SQL_DIR, Warehouse
from tests.pgbouncer import PgBouncer

WORKERS = 3
ROUNDS = 15


def test_concurrent_ensure_schema_never_collides(bouncer_url: str, pgbouncer: PgBouncer) -> None:
    queries = SqlQueries.load(SQL_DIR)
    failures: list[str] = []
    for round_ in range(ROUNDS):
        schema = f"race_{round_}"
        start = threading.Barrier(WORKERS)

        def work(schema: str = schema, start: threading.Barrier = start) -> None:
            with psycopg.connect(bouncer_url, password=pgbouncer.password, prepare_threshold=None) as conn:
                start.wait()
                try:
                    staging.ensure_schema(Warehouse(conn, queries), schema)
                    conn.commit()
                except psycopg.Error as exc:
                    failures.append(f"{schema}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=work) for _ in range(WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not failures, failures[:3]
    with psycopg.connect(bouncer_url, password=pgbouncer.password) as conn:
        row = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'race\\_%'").fetchone()
    assert row == (ROUNDS,)

