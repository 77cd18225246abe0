"""OutboxRelay: moves committed `queue_messages` rows to a transport whose queue is not that table.

No database transaction is open while the relay talks to the transport. Each batch is:
1. claim: one short transaction leases ready rows to this relay (`relay_token`, `relay_until`), skipping rows
   locked or leased by a racing relay;
2. send, outside any transaction (the transport's sends have their own timeouts);
3. mark sent: one short transaction, only for rows this relay still holds the lease on.
A crash after the claim leaves a lease that expires, and the rows are claimed again; a crash after the send
sends the batch again later, which duplicate detection (message ids are deterministic) and idempotent handlers
absorb. A send that fails for a reason that may pass gives the rows back at once. A row the transport refuses
for good (`MessageRefused`: too large, invalid) is set aside into the dead letters with its reason, and the rows
behind it flow on: one bad row never blocks the outbox.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from psycopg.rows import dict_row

from core.errors import MessageRefused
from core.models import OutgoingMessage
from core.ports import Transport
from infrastructure.postgres.queue import ConnectionSource, translated
from infrastructure.postgres.sql_queries import query

log = logging.getLogger(__name__)

REFUSED_REASON = "MessageRefused"


class OutboxRelay:
    """The Relay for Service Bus (and for the in-memory transport in tests)."""

    def __init__(
        self, pool: ConnectionSource, target: Transport, batch_size: int = 500, lease_seconds: float = 300.0
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be greater than 0, got {lease_seconds}")
        self._pool = pool
        self._target = target
        self._batch_size = batch_size
        self._lease_seconds = lease_seconds

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
        total = 0
        while True:
            token = uuid.uuid4()
            rows = self._claim(token, older_than_seconds)
            if rows:
                self._send_claimed(token, rows)
            total += len(rows)
            if len(rows) < self._batch_size:
                return total

    def _claim(self, token: uuid.UUID, older_than_seconds: float | None) -> list[dict[str, Any]]:
        params = {
            "older_than_seconds": older_than_seconds,
            "limit": self._batch_size,
            "token": token,
            "lease_seconds": self._lease_seconds,
        }
        with translated("relay claim"), self._pool.connection() as conn, conn.transaction():
            rows = conn.cursor(row_factory=dict_row).execute(query("relay_claim"), params).fetchall()
        return sorted(rows, key=lambda row: int(row["id"]))

    def _send_claimed(self, token: uuid.UUID, rows: Sequence[dict[str, Any]]) -> None:
        try:
            self._target.send([_message(row) for row in rows])
        except MessageRefused:
            self._one_by_one(token, rows)
        except BaseException:
            self._execute("relay_release", {"ids": [row["id"] for row in rows], "token": token})
            raise
        else:
            self._mark_done(token, [row["id"] for row in rows])

    def _one_by_one(self, token: uuid.UUID, rows: Sequence[dict[str, Any]]) -> None:
        """A batch with a refused row: each row alone, so only the refused ones are set aside. Rows already sent
        by the batch are sent again; duplicate detection drops the repeats."""
        for index, row in enumerate(rows):
            try:
                self._target.send([_message(row)])
            except MessageRefused as exc:
                self._set_aside(token, row, exc)
            except BaseException:
                self._execute("relay_release", {"ids": [r["id"] for r in rows[index:]], "token": token})
                raise
            else:
                self._mark_done(token, [row["id"]])

    def _mark_done(self, token: uuid.UUID, ids: list[int]) -> None:
        marked = self._execute("relay_mark_done", {"ids": ids, "token": token})
        if marked < len(ids):
            # Our lease lapsed during the send and another relay took the rows: it marks them, and the repeat
            # send is dropped by duplicate detection.
            log.warning("relay lease lapsed while sending", extra={"rows": len(ids), "marked": marked})

    def _set_aside(self, token: uuid.UUID, row: dict[str, Any], exc: MessageRefused) -> None:
        params = {"id": row["id"], "token": token, "reason": REFUSED_REASON, "description": str(exc)[:4000]}
        self._execute("relay_set_aside", params)
        log.error(
            "outbox row refused by the transport, set aside as a dead letter",
            extra={"queue": row["queue"], "message_id": row["message_id"], "error": str(exc)[:500],
                   "job_id": row["properties"].get("job_id")},
        )

    def _execute(self, name: str, params: dict[str, Any]) -> int:
        with translated(name), self._pool.connection() as conn, conn.transaction():
            return conn.execute(query(name), params).rowcount


def _message(row: dict[str, Any]) -> OutgoingMessage:
    return OutgoingMessage(
        queue=row["queue"],
        message_id=row["message_id"],
        body=row["body"],
        properties=row["properties"],
        delay_seconds=float(row["delay_seconds"]),
    )
