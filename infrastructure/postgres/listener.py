"""QueueListener: wakes threads waiting for a queue when PostgreSQL notifies `coremachine_queue`.

One dedicated autocommit connection per listener runs `LISTEN`. Waiting threads take turns reading it: the
thread holding the connection lock polls it for notifications (payload = queue name) and counts them per
queue under a condition; the others sleep on that condition. A waiter compares the counts with the mark it
took before looking at the queue, so a notification that arrives in between is never missed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from core.errors import TransportError
from infrastructure.postgres.sql_queries import query

if TYPE_CHECKING:
    from infrastructure.postgres.queue import ConnectionSource

Connect = Callable[[], psycopg.Connection[Any]]
_SLICE_SECONDS = 1.0
POLL_SECONDS = 0.5
"""How often an idle receiver looks again when it cannot listen (behind PgBouncer in transaction mode)."""


@dataclass(frozen=True, slots=True)
class Mark:
    """Where the notification counts stood when a waiter last looked at its queue."""

    epoch: int
    seen: int


class QueueListener:
    """Thread-safe notification wait on one lazily opened LISTEN connection."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        self._conn: psycopg.Connection[Any] | None = None
        self._conn_lock = threading.Lock()
        self._cond = threading.Condition()
        self._seen: dict[str, int] = {}
        self._epoch = 0
        self._closed = False

    @property
    def opened(self) -> bool:
        return self._conn is not None

    def mark(self, queue: str) -> Mark:
        """Make sure LISTEN is active, then note the counts; notifications after this wake `wait`."""
        if self._closed:
            raise TransportError("the queue listener is closed", transient=False)
        if self._conn_lock.acquire(blocking=self._conn is None):
            try:
                self._poll(0.0)
            finally:
                self._conn_lock.release()
        with self._cond:
            return Mark(self._epoch, self._seen.get(queue, 0))

    def wait(self, queue: str, mark: Mark, timeout: float) -> bool:
        """Block until `queue` was notified (or the connection was re-opened) since `mark`, or `timeout`
        seconds pass. True if woken by a notification."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                if self._changed(queue, mark):
                    return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed:
                return False
            if self._conn_lock.acquire(blocking=False):
                try:
                    self._poll(min(remaining, _SLICE_SECONDS))
                finally:
                    self._conn_lock.release()
                    with self._cond:
                        self._cond.notify_all()
            else:
                with self._cond:
                    if not self._changed(queue, mark):
                        self._cond.wait(min(remaining, _SLICE_SECONDS))

    def drain(self) -> None:
        """Read pending notifications without waiting, if nobody else is reading, so they never pile up."""
        if self._conn is not None and self._conn_lock.acquire(blocking=False):
            try:
                self._poll(0.0)
            finally:
                self._conn_lock.release()

    def close(self) -> None:
        self._closed = True
        with self._cond:
            self._cond.notify_all()
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _changed(self, queue: str, mark: Mark) -> bool:
        return self._epoch != mark.epoch or self._seen.get(queue, 0) != mark.seen

    def _poll(self, timeout: float) -> None:
        """Read notifications for up to `timeout` seconds (at least one poll). Caller holds the connection lock."""
        try:
            if self._conn is None:
                self._open()
                return
            assert self._conn is not None
            payloads = [n.payload for n in self._conn.notifies(timeout=timeout, stop_after=1)]
        except psycopg.Error as exc:
            self._discard()
            raise TransportError(f"queue listener failed: {exc}", transient=True) from exc
        if payloads:
            with self._cond:
                for queue in payloads:
                    self._seen[queue] = self._seen.get(queue, 0) + 1
                self._cond.notify_all()

    def _open(self) -> None:
        conn = self._connect()
        try:
            if not conn.autocommit:
                conn.rollback()
                conn.autocommit = True
            conn.execute(query("queue_listen"))
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        with self._cond:
            # Anything sent while no connection was listening went unseen: wake every waiter to look again.
            self._epoch += 1
            self._cond.notify_all()

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


class PollingWait:
    """The listener's interface without LISTEN, for connections through PgBouncer in transaction mode (where a
    LISTEN would be lost with the server connection): an idle receiver sleeps `poll_seconds` and looks again."""

    def __init__(self, poll_seconds: float = POLL_SECONDS) -> None:
        self._poll_seconds = poll_seconds
        self._closed = threading.Event()

    @property
    def opened(self) -> bool:
        return False

    def mark(self, queue: str) -> Mark:
        if self._closed.is_set():
            raise TransportError("the queue listener is closed", transient=False)
        return Mark(0, 0)

    def wait(self, queue: str, mark: Mark, timeout: float) -> bool:
        self._closed.wait(max(0.0, min(timeout, self._poll_seconds)))
        return False

    def drain(self) -> None:
        """Nothing to read."""

    def close(self) -> None:
        self._closed.set()


def set_queue_notify(pool: ConnectionSource, enabled: bool) -> None:
    """Turn NOTIFY on queue inserts on (the PostgreSQL queue's workers listen) or off (nobody listens)."""
    with pool.connection() as conn, conn.transaction():
        conn.execute(query("queue_notify_set"), {"enabled": enabled})


def queue_depths(pool: ConnectionSource, queues: Sequence[str] = ()) -> dict[str, int]:
    """Ready (waiting or in-flight) messages per queue; `queues` are reported even when empty."""
    with pool.connection() as conn, conn.transaction():
        found = {str(queue): int(depth) for queue, depth in conn.execute(query("queue_depths")).fetchall()}
    return {**dict.fromkeys(queues, 0), **found}
