"""PostgresQueue: the Transport on the `queue_messages` and `dead_letters` tables, with Service Bus semantics.

Peek-lock by `FOR UPDATE SKIP LOCKED` claims that move `available_at` to the lock expiry, so an expired lock
is a redelivery with the delivery count incremented; settlement is guarded on the lock token, so settling a
message whose lock was lost changes nothing. Idle receivers wait on LISTEN/NOTIFY (see `QueueListener`): a
notification wakes one receiver of its queue, and a receiver that claimed a full batch wakes the next.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from core.errors import TransportError
from core.ids import replay_message_id
from core.models import DeadLetter, DeadLetterSelector, OutgoingMessage, ReceivedMessage
from infrastructure.postgres.listener import Connect, PollingWait, QueueListener
from infrastructure.postgres.sql_queries import query
from infrastructure.postgres.transactions import autocommit
from infrastructure.queue_config import QueueConfig

_log = logging.getLogger(__name__)
_MIN_WAIT_SECONDS = 0.02
_REPLAY_BATCH = 500


class ConnectionSource(Protocol):
    """Anything that lends a pooled connection as a context manager (`psycopg_pool.ConnectionPool`, `Database`)."""

    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]: ...


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Re-raise psycopg errors as `TransportError`: connection trouble is transient, anything else is not."""
    try:
        yield
    except psycopg.Error as exc:
        transient = isinstance(exc, psycopg.OperationalError)
        raise TransportError(f"{action} failed: {type(exc).__name__}: {exc}", transient=transient) from exc


def single_statement(pool: ConnectionSource) -> AbstractContextManager[psycopg.Connection[Any]]:
    """A pooled connection in autocommit: claims and settlements are one statement each, and the hot path."""
    return autocommit(pool.connection)


def send_params(messages: Sequence[OutgoingMessage], window_seconds: float) -> dict[str, Any]:
    """Parameters of `queue_send`; the first of several messages with one (queue, id) wins, as on Service Bus."""
    unique: dict[tuple[str, str], OutgoingMessage] = {}
    for message in messages:
        unique.setdefault((message.queue, message.message_id), message)
    batch = list(unique.values())
    return {
        "queues": [m.queue for m in batch],
        "message_ids": [m.message_id for m in batch],
        "bodies": [Jsonb(m.body) for m in batch],
        "properties": [Jsonb(m.properties) for m in batch],
        "due_offsets": [m.due_offset_seconds for m in batch],
        "window_seconds": window_seconds,
    }


def acknowledge_params(messages: Sequence[ReceivedMessage]) -> dict[str, list[Any]]:
    """Parameters of `queue_acknowledge` (settled by id and lock token). A message this queue did not deliver (no
    row id, a lock token that is no UUID) matches no row: it is left to its lock's lapse and redelivery."""
    held = [(m.sequence_number, token) for m in messages
            if m.sequence_number is not None and (token := _lock_uuid(m)) is not None]
    return {"ids": [i for i, _ in held], "lock_tokens": [t for _, t in held]}


def lost_locks(asked: int, settled: int) -> None:
    """Settling changes nothing for a message whose lock lapsed: it is redelivered (or was), and the handler sees
    the duplicate it is. Said, not ignored."""
    if settled < asked:
        _log.info("complete: %d of %d message(s) had lost their lock", asked - settled, asked)


def dead_letter_from_row(row: DictRow) -> DeadLetter:
    return DeadLetter(
        id=str(row["id"]),
        queue=row["queue"],
        message_id=row["message_id"],
        body=row["body"],
        properties=row["properties"],
        reason=row["reason"],
        description=row["description"],
        delivery_count=row["delivery_count"],
        dead_lettered_at=row["dead_lettered_at"],
        replay_count=row["replay_count"],
    )


def _row_id(text: str) -> int | None:
    """A dead letter id (a bigint) from its text form; None when no row could have it."""
    if not text.isdecimal():
        return None
    value = int(text)
    return value if value < 2**63 else None


def _selector_params(selector: DeadLetterSelector) -> dict[str, Any] | None:
    """Query parameters for a selector; None when it names ids and none of them can exist."""
    ids: list[int] | None = None
    if selector.ids:
        ids = [i for i in map(_row_id, selector.ids) if i is not None]
        if not ids:
            return None
    return {
        "queue": selector.queue,
        "ids": ids,
        "job_id": selector.job_id,
        "task_type": selector.task_type,
        "reason": selector.reason,
    }


def _lock_uuid(message: ReceivedMessage) -> uuid.UUID | None:
    try:
        return uuid.UUID(message.lock_token)
    except ValueError:
        return None


class PostgresQueue:
    """Transport on PostgreSQL. Thread-safe: claims and settlements use pooled connections; waits share one
    dedicated LISTEN connection, opened on the first wait."""

    def __init__(
        self, pool: ConnectionSource, listen_connect: Connect | None, config: QueueConfig | None = None
    ) -> None:
        """`listen_connect` opens the LISTEN connection; None (behind PgBouncer) makes idle receivers poll."""
        self._pool = pool
        self._config = config or QueueConfig()
        self._listener: QueueListener | PollingWait = (
            QueueListener(listen_connect) if listen_connect is not None else PollingWait()
        )
        self._closed = False

    @property
    def config(self) -> QueueConfig:
        return self._config

    def send(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        params = send_params(messages, self._config.duplicate_window_seconds)
        with translated("send"), single_statement(self._pool) as conn:
            conn.execute(query("queue_send"), params)

    def receive(self, queue: str, max_messages: int, wait_seconds: float) -> list[ReceivedMessage]:
        if max_messages < 1:
            return []
        deadline = time.monotonic() + max(0.0, wait_seconds)
        while not self._closed:
            # LISTEN is active from the mark on, and the claim sees every message committed before it; when it
            # finds nothing due it also says when the next one will be (one round trip for an idle receiver).
            mark = self._listener.mark(queue) if wait_seconds > 0 else None
            messages, dead, due_in = self._claim(queue, max_messages)
            self._listener.claimed(queue, mark, taken=len(messages) + dead, asked=max_messages)
            if messages:
                return messages
            if dead:
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0 or mark is None:
                return []
            timeout = remaining if due_in is None else min(remaining, max(due_in, _MIN_WAIT_SECONDS))
            self._listener.wait(queue, mark, timeout)
        return []

    def _claim(self, queue: str, max_messages: int) -> tuple[list[ReceivedMessage], int, float | None]:
        params = {
            "queue": queue,
            "limit": max_messages,
            "lock_seconds": self._config.lock_seconds,
            "max_deliveries": self._config.max_deliveries,
        }
        with translated("receive"), single_statement(self._pool) as conn:
            rows = conn.cursor(row_factory=dict_row).execute(query("queue_claim"), params).fetchall()
        messages = [
            ReceivedMessage(
                queue=row["queue"],
                message_id=row["message_id"],
                body=row["body"],
                properties=row["properties"],
                delivery_count=row["delivery_count"],
                lock_token=str(row["lock_token"]),
                enqueued_at=row["enqueued_at"],
                sequence_number=row["id"],
                due_at=row["due_at"],
            )
            for row in rows
            if row["kind"] == "message"
        ]
        dead = sum(1 for row in rows if row["kind"] == "dead")
        if dead:
            _log.warning("dead-lettered %d message(s) of queue %s: MaxDeliveryCountExceeded", dead, queue)
        idle = [row["due_in"] for row in rows if row["kind"] == "idle"]
        due_in = float(idle[0]) if idle and idle[0] is not None else None
        return messages, dead, due_in

    def complete(self, messages: Sequence[ReceivedMessage]) -> None:
        settled = [(m, token) for m in messages if (token := _lock_uuid(m)) is not None]
        if not settled:
            return
        by_id = [(m, t) for m, t in settled if m.sequence_number is not None]
        by_name = [(m, t) for m, t in settled if m.sequence_number is None]
        changed = 0
        with translated("complete"), single_statement(self._pool) as conn:
            if by_id:
                changed += conn.execute(query("queue_complete_by_id"), {
                    "ids": [m.sequence_number for m, _ in by_id], "lock_tokens": [t for _, t in by_id],
                }).rowcount
            if by_name:
                changed += conn.execute(query("queue_complete"), {
                    "queues": [m.queue for m, _ in by_name],
                    "message_ids": [m.message_id for m, _ in by_name],
                    "lock_tokens": [t for _, t in by_name],
                }).rowcount
        lost_locks(len(settled), changed)

    def abandon(self, message: ReceivedMessage, delay_seconds: float = 0.0) -> None:
        token = _lock_uuid(message)
        if token is None:
            return
        params = {
            "queue": message.queue,
            "message_id": message.message_id,
            "lock_token": token,
            "delay_seconds": max(0.0, float(delay_seconds)),
        }
        with translated("abandon"), single_statement(self._pool) as conn:
            conn.execute(query("queue_abandon"), params)

    def release(self, messages: Sequence[ReceivedMessage]) -> None:
        held = [(m, t) for m in messages if (t := _lock_uuid(m)) is not None]
        unnumbered = [m for m, _ in held if m.sequence_number is None]
        for message in unnumbered:
            self.abandon(message)
        numbered = [(m, t) for m, t in held if m.sequence_number is not None]
        if numbered:
            params = {"ids": [m.sequence_number for m, _ in numbered], "lock_tokens": [t for _, t in numbered],
                      "due_ats": [m.due_at for m, _ in numbered]}
            with translated("release"), single_statement(self._pool) as conn:
                conn.execute(query("queue_release"), params)

    @property
    def releases_uncounted(self) -> bool:
        return True

    def renew_locks(self, messages: Sequence[ReceivedMessage]) -> None:
        held = [(m, t) for m in messages if (t := _lock_uuid(m)) is not None and m.sequence_number is not None]
        if not held:
            return
        params = {
            "ids": [m.sequence_number for m, _ in held], "lock_tokens": [t for _, t in held],
            "lock_seconds": self._config.lock_seconds,
        }
        with translated("renew_locks"), self._pool.connection() as conn, conn.transaction():
            conn.execute(query("queue_renew_locks"), params)

    def dead_letter(self, message: ReceivedMessage, reason: str, description: str) -> None:
        token = _lock_uuid(message)
        if token is None:
            return
        params = {
            "queue": message.queue,
            "message_id": message.message_id,
            "lock_token": token,
            "reason": reason,
            "description": description,
        }
        with translated("dead_letter"), self._pool.connection() as conn, conn.transaction():
            conn.execute(query("queue_dead_letter"), params)

    def purge_settled(self, older_than_seconds: float) -> int:
        """Delete settled rows done longer ago than that (the janitor passes the duplicate window)."""
        with translated("purge_settled"), self._pool.connection() as conn, conn.transaction():
            cur = conn.execute(query("queue_purge_settled"), {"older_than_seconds": older_than_seconds})
        return cur.rowcount

    def list_dead_letters(
        self, selector: DeadLetterSelector, limit: int = 100, after: str | None = None
    ) -> list[DeadLetter]:
        params = _selector_params(selector)
        if params is None or limit < 1:
            return []
        start = (_row_id(after) if after else None) or 0
        params.update(after=start, upto=None, limit=limit)
        with translated("list_dead_letters"), self._pool.connection() as conn, conn.transaction():
            rows = conn.cursor(row_factory=dict_row).execute(query("queue_list_dead_letters"), params).fetchall()
        return [dead_letter_from_row(row) for row in rows]

    def get_dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        row_id = _row_id(dead_letter_id)
        if row_id is None:
            return None
        with translated("get_dead_letter"), self._pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            row = cur.execute(query("queue_get_dead_letter"), {"id": row_id}).fetchone()
        return None if row is None else dead_letter_from_row(row)

    def replay_dead_letters(self, selector: DeadLetterSelector, dry_run: bool = False) -> list[DeadLetter]:
        """Replay in batches, each one transaction: send under `replay_message_id` and delete the dead letters.

        Only dead letters that exist when the call starts are considered, so a message that fails again
        during a replay is not replayed twice by it. A replay id the queue still holds (the same dead letter
        replayed before and not yet settled) is dropped by duplicate detection, as on Service Bus.
        """
        params = _selector_params(selector)
        if params is None:
            return []
        replayed: list[DeadLetter] = []
        with translated("replay_dead_letters"):
            with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor(row_factory=dict_row)
                high_water = cur.execute(query("queue_dead_letters_high_water")).fetchone()
            params.update(after=0, upto=high_water["upto"] if high_water else 0, limit=_REPLAY_BATCH)
            name = "queue_list_dead_letters" if dry_run else "queue_lock_dead_letters"
            while True:
                with self._pool.connection() as conn, conn.transaction():
                    rows = conn.cursor(row_factory=dict_row).execute(query(name), params).fetchall()
                    batch = [dead_letter_from_row(row) for row in rows]
                    if batch and not dry_run:
                        self._resend(conn, batch)
                replayed.extend(batch)
                if len(batch) < _REPLAY_BATCH:
                    return replayed
                params["after"] = int(batch[-1].id)

    def _resend(self, conn: psycopg.Connection[Any], batch: Sequence[DeadLetter]) -> None:
        messages = [
            OutgoingMessage(
                queue=d.queue,
                message_id=replay_message_id(d.message_id, d.replay_count + 1),
                body=d.body,
                properties={**d.properties, "replay_count": d.replay_count + 1},
            )
            for d in batch
        ]
        conn.execute(query("queue_send"), send_params(messages, self._config.duplicate_window_seconds))
        conn.execute(query("queue_delete_dead_letters"), {"ids": [int(d.id) for d in batch]})

    def purge_dead_letters(self, selector: DeadLetterSelector) -> int:
        params = _selector_params(selector)
        if params is None:
            return 0
        with translated("purge_dead_letters"), self._pool.connection() as conn, conn.transaction():
            cur = conn.execute(query("queue_purge_dead_letters"), params)
        return cur.rowcount

    def close(self) -> None:
        self._closed = True
        self._listener.close()
