"""QueueListener: wakes threads waiting for a queue when PostgreSQL notifies `coremachine_queue`.

One dedicated autocommit connection per listener runs `LISTEN`, and one reader thread reads it. Each
notification (payload = queue name, one per queue and sending transaction) is a wake-up for ONE waiter of that
queue, not for all of them: a receiver that then claims a full batch passes a wake-up on, so a burst still
spreads over every idle thread while a single message wakes one. Wake-ups are numbered per queue; a waiter takes
the oldest unanswered one, and a claim that finds nothing due answers every wake-up numbered before the mark
taken ahead of it (it saw everything committed by then). So a notification that arrives between a waiter's
look at the queue and its wait is never lost: it stays unanswered until some thread claims after it.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from core.errors import TransportError
from infrastructure.postgres.sql_queries import query

if TYPE_CHECKING:
    from infrastructure.postgres.queue import ConnectionSource

Connect = Callable[[], psycopg.Connection[Any]]
POLL_SECONDS = 0.5
"""How often an idle receiver looks again when it cannot listen (behind PgBouncer in transaction mode)."""
_JOIN_SECONDS = 5.0

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Mark:
    """Where a queue's wake-ups stood when a receiver last looked at it."""

    epoch: int
    seen: int


@dataclass(slots=True)
class _Wakeups:
    """One queue's wake-ups: numbered 1..`sent`; those up to `answered` need no waiter any more."""

    cond: threading.Condition
    sent: int = 0
    answered: int = 0


class QueueListener:
    """Thread-safe notification wait on one lazily opened LISTEN connection, read by its own thread."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        self._conn: psycopg.Connection[Any] | None = None
        self._conn_lock = threading.Lock()
        self._lock = threading.Lock()
        self._queues: dict[str, _Wakeups] = {}
        self._epoch = 0
        self._closed = False
        self._reader: threading.Thread | None = None
        self._stop_reader, self._stop_signal = socket.socketpair()

    @property
    def opened(self) -> bool:
        return self._conn is not None

    def mark(self, queue: str) -> Mark:
        """Make sure LISTEN is active, then note the queue's wake-ups; any sent after this wakes a `wait`."""
        if self._closed:
            raise TransportError("the queue listener is closed", transient=False)
        if self._conn is None:
            with self._conn_lock:
                if self._conn is None and not self._closed:
                    self._open()
        with self._lock:
            return Mark(self._epoch, self._wakeups(queue).sent)

    def wait(self, queue: str, mark: Mark, timeout: float) -> bool:
        """Block until this thread takes an unanswered wake-up of `queue` (or the connection was re-opened or
        lost since `mark`), or `timeout` seconds pass. True if woken."""
        with self._lock:
            wakeups = self._wakeups(queue)
            return wakeups.cond.wait_for(lambda: self._take(wakeups, mark), timeout)

    def claimed(self, queue: str, mark: Mark | None, taken: int, asked: int) -> None:
        """A receiver claimed `taken` of the `asked` messages of `queue` after taking `mark`. Nothing due at all
        answers every wake-up sent before the mark; a full batch may have left messages behind, so it passes a
        wake-up on to the next waiter."""
        with self._lock:
            wakeups = self._wakeups(queue)
            if taken == 0 and mark is not None and mark.epoch == self._epoch:
                wakeups.answered = max(wakeups.answered, mark.seen)
            elif taken >= asked:
                wakeups.sent += 1
                wakeups.cond.notify()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._stop_signal.send(b"x")
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(_JOIN_SECONDS)
        with self._conn_lock:
            self._discard()
        self._wake_all()
        self._stop_reader.close()
        self._stop_signal.close()

    def _take(self, wakeups: _Wakeups, mark: Mark) -> bool:
        """Under the lock: whether the waiter may go; takes the oldest unanswered wake-up if there is one."""
        if self._closed or self._epoch != mark.epoch:
            return True
        if wakeups.sent > wakeups.answered:
            wakeups.answered += 1
            return True
        return False

    def _wakeups(self, queue: str) -> _Wakeups:
        """Under the lock."""
        found = self._queues.get(queue)
        if found is None:
            found = self._queues[queue] = _Wakeups(threading.Condition(self._lock))
        return found

    def _wake_all(self) -> None:
        with self._lock:
            for wakeups in self._queues.values():
                wakeups.cond.notify_all()

    def _new_epoch(self) -> None:
        """Wake-ups may have been missed (no connection was listening): every waiter looks again."""
        with self._lock:
            self._epoch += 1
            for wakeups in self._queues.values():
                wakeups.answered = wakeups.sent
                wakeups.cond.notify_all()

    def _open(self) -> None:
        """Open the connection, LISTEN, start the reader. Caller holds the connection lock."""
        try:
            conn = self._connect()
        except psycopg.Error as exc:
            raise TransportError(f"queue listener failed: {exc}", transient=True) from exc
        try:
            if not conn.autocommit:
                conn.rollback()
                conn.autocommit = True
            conn.execute(query("queue_listen"))
        except psycopg.Error as exc:
            conn.close()
            raise TransportError(f"queue listener failed: {exc}", transient=True) from exc
        except BaseException:
            conn.close()
            raise
        # The new epoch before the connection is published: a mark that sees the connection is a mark of it.
        self._new_epoch()
        self._conn = conn
        self._reader = threading.Thread(
            target=self._read, args=(conn,), name="coremachine-queue-listener", daemon=True
        )
        self._reader.start()

    def _read(self, conn: psycopg.Connection[Any]) -> None:
        """The reader thread: turn each notification into a wake-up until the listener closes or the
        connection fails (then every waiter looks again, and the next `mark` re-opens it)."""
        try:
            while not self._closed:
                # First what psycopg already read (a notification can arrive with the LISTEN's own result),
                # then sleep until the socket has more or the listener closes.
                self._deliver([n.payload for n in conn.notifies(timeout=0.0)])
                stop = self._stop_reader.fileno()
                ready, _, _ = select.select([conn.fileno(), stop], [], [])
                if stop in ready:
                    return
        except (psycopg.Error, OSError, ValueError) as exc:
            if not self._closed:
                _log.warning("queue listener connection lost: %s", exc)
            with self._conn_lock:
                if self._conn is conn:
                    self._discard()
            self._new_epoch()

    def _deliver(self, payloads: Sequence[str]) -> None:
        if not payloads:
            return
        with self._lock:
            for queue in payloads:
                wakeups = self._wakeups(queue)
                wakeups.sent += 1
                wakeups.cond.notify()

    def _discard(self) -> None:
        """Caller holds the connection lock."""
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

    def claimed(self, queue: str, mark: Mark | None, taken: int, asked: int) -> None:
        """Nobody to wake: every idle receiver polls."""

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
