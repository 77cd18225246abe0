"""OutboxRelay: moves committed `queue_messages` rows to a transport whose queue is not that table.

Each batch is one transaction: claim ready rows `FOR UPDATE SKIP LOCKED` (so racing relays never take the
same row), send them to the target while the rows stay locked, mark them done, commit. A crash after the
send and before the commit sends the batch again later; duplicate detection (the message ids are
deterministic) and idempotent handlers absorb that. A failed send rolls back: the rows stay ready.
"""

from __future__ import annotations

from psycopg.rows import dict_row

from core.models import OutgoingMessage
from core.ports import Transport
from infrastructure.postgres.queue import ConnectionSource, translated
from infrastructure.postgres.sql_queries import query


class OutboxRelay:
    """The Relay for Service Bus (and for the in-memory transport in tests)."""

    def __init__(self, pool: ConnectionSource, target: Transport, batch_size: int = 500) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._pool = pool
        self._target = target
        self._batch_size = batch_size

    def flush(self) -> int:
        """Relay every ready row, whatever its `available_at` (a scheduled row keeps its remaining delay)."""
        return self._relay(None)

    def relay_stranded(self, older_than_seconds: float) -> int:
        """Relay only rows enqueued longer ago than that: ones whose writer died before flushing."""
        return self._relay(max(0.0, older_than_seconds))

    def purge_settled(self, older_than_seconds: float) -> int:
        """Delete relayed rows done longer ago than that (the janitor passes the duplicate window)."""
        with translated("purge_settled"), self._pool.connection() as conn, conn.transaction():
            cur = conn.execute(query("queue_purge_settled"), {"older_than_seconds": older_than_seconds})
        return cur.rowcount

    def _relay(self, older_than_seconds: float | None) -> int:
        params = {"older_than_seconds": older_than_seconds, "limit": self._batch_size}
        total = 0
        while True:
            with translated("relay"), self._pool.connection() as conn, conn.transaction():
                rows = conn.cursor(row_factory=dict_row).execute(query("relay_claim"), params).fetchall()
                if rows:
                    self._target.send(
                        [
                            OutgoingMessage(
                                queue=row["queue"],
                                message_id=row["message_id"],
                                body=row["body"],
                                properties=row["properties"],
                                delay_seconds=float(row["delay_seconds"]),
                            )
                            for row in rows
                        ]
                    )
                    conn.execute(query("relay_mark_done"), {"ids": [row["id"] for row in rows]})
            total += len(rows)
            if len(rows) < self._batch_size:
                return total
