"""What other sessions are doing, seen from a connection of the test's own (e.g. while a transport sends)."""

from __future__ import annotations

from infrastructure.postgres.database import Database


def open_transactions(database: Database) -> int:
    """Sessions of this database, other than the asking one, sitting idle inside an open transaction."""
    with database.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state LIKE 'idle in transaction%%' AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])
