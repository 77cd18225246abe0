"""InMemoryTransport: the Transport in pure Python for unit tests, with the PostgreSQL queue's semantics.

Peek-lock with lock expiry, delivery counts, max deliveries → dead letters, scheduled delivery, duplicate
detection within a window, and dead-letter replay under new message ids. Time comes from an injectable
clock, so tests move it (`ManualClock.advance`) instead of sleeping; `wait_seconds` is still real time.
"""

from __future__ import annotations

import heapq
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from core.ids import replay_message_id
from core.models import DeadLetter, DeadLetterSelector, OutgoingMessage, ReceivedMessage
from infrastructure.queue_config import MAX_DELIVERY_REASON, QueueConfig

Clock = Callable[[], float]
_Key = tuple[str, str]


class ManualClock:
    """A clock for tests: stands still until `advance` moves it."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@dataclass(slots=True)
class _Entry:
    seq: int
    message: OutgoingMessage
    enqueued_at: float
    available_at: float
    delivery_count: int = 0
    lock_token: str | None = None
    done_at: float | None = None
    version: int = 0
    due_at: float = 0.0  # when it was due before its current delivery (a release puts it back there)


def _matches(dead: DeadLetter, selector: DeadLetterSelector) -> bool:
    return (
        (selector.queue is None or dead.queue == selector.queue)
        and (not selector.ids or dead.id in selector.ids)
        and (selector.job_id is None or dead.properties.get("job_id") == selector.job_id)
        and (selector.task_type is None or dead.properties.get("task_type") == selector.task_type)
        and (selector.reason is None or dead.reason == selector.reason)
    )


def _json_copy(message: OutgoingMessage) -> OutgoingMessage:
    """A private copy that went through JSON, as it would through the database: no shared dicts, and a
    body that PostgreSQL could not store fails here too."""
    body, properties = json.loads(json.dumps([message.body, message.properties], allow_nan=False))
    return replace(message, body=body, properties=properties)


def _replay_count(properties: dict[str, str | int]) -> int:
    value = properties.get("replay_count", 0)
    if isinstance(value, int):
        return value
    return int(value) if value.isdecimal() else 0


class InMemoryTransport:
    """Thread-safe; `send` only takes a short lock, so a store may call it while holding its own lock."""

    def __init__(self, config: QueueConfig | None = None, clock: Clock = time.time) -> None:
        self._config = config or QueueConfig()
        self._clock = clock
        self._cond = threading.Condition()
        self._entries: dict[_Key, _Entry] = {}
        self._ready: dict[str, list[tuple[float, int, int, _Key]]] = {}
        self._settled: deque[tuple[float, _Key, int]] = deque()
        self._dead: dict[int, DeadLetter] = {}
        self._seq = 0
        self._dead_seq = 0
        self._closed = False

    @property
    def config(self) -> QueueConfig:
        return self._config

    def send(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        copies = [_json_copy(m) for m in messages]
        with self._cond:
            now = self._clock()
            self._forget_settled(now)
            for message in copies:
                self._enqueue(message, now)
            self._cond.notify_all()

    def receive(self, queue: str, max_messages: int, wait_seconds: float) -> list[ReceivedMessage]:
        if max_messages < 1:
            return []
        deadline = time.monotonic() + max(0.0, wait_seconds)
        with self._cond:
            while not self._closed:
                received = self._claim(queue, max_messages)
                if received:
                    return received
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                due_in = self._next_due_in(queue)
                self._cond.wait(remaining if due_in is None else min(remaining, max(due_in, 0.001)))
        return []

    def complete(self, messages: Sequence[ReceivedMessage]) -> None:
        with self._cond:
            now = self._clock()
            for message in messages:
                entry = self._locked_entry(message)
                if entry is not None:
                    self._settle(entry, now)

    def abandon(self, message: ReceivedMessage, delay_seconds: float = 0.0) -> None:
        with self._cond:
            entry = self._locked_entry(message)
            if entry is None:
                return
            entry.lock_token = None
            self._schedule(entry, self._clock() + max(0.0, delay_seconds))
            self._cond.notify_all()

    def release(self, messages: Sequence[ReceivedMessage]) -> None:
        with self._cond:
            for message in messages:
                entry = self._locked_entry(message)
                if entry is None:
                    continue
                entry.lock_token = None
                entry.delivery_count = max(0, entry.delivery_count - 1)
                self._schedule(entry, min(self._clock(), entry.due_at))
            self._cond.notify_all()

    @property
    def releases_uncounted(self) -> bool:
        return True

    def renew_locks(self, messages: Sequence[ReceivedMessage]) -> None:
        with self._cond:
            until = self._clock() + self._config.lock_seconds
            for message in messages:
                entry = self._locked_entry(message)
                if entry is not None:
                    self._schedule(entry, until)

    def dead_letter(self, message: ReceivedMessage, reason: str, description: str) -> None:
        with self._cond:
            entry = self._locked_entry(message)
            if entry is not None:
                self._to_dead_letters(entry, reason, description, self._clock())

    def purge_settled(self, older_than_seconds: float) -> int:
        with self._cond:
            cutoff = self._clock() - older_than_seconds
            old = [k for k, e in self._entries.items() if e.done_at is not None and e.done_at < cutoff]
            for key in old:
                del self._entries[key]
            return len(old)

    def pending_count(self, queue: str | None = None) -> int:
        """Messages not settled yet (scheduled, due or locked), in one queue or all."""
        with self._cond:
            return sum(
                1 for e in self._entries.values() if e.done_at is None and (queue is None or e.message.queue == queue)
            )

    def wake(self) -> None:
        """Make waiting receivers look again (after a test moved its clock)."""
        with self._cond:
            self._cond.notify_all()

    def list_dead_letters(
        self, selector: DeadLetterSelector, limit: int = 100, after: str | None = None
    ) -> list[DeadLetter]:
        start = int(after) if after and after.isdecimal() else 0
        with self._cond:
            selected = [d for i, d in self._dead.items() if i > start and _matches(d, selector)]
        return selected[: max(0, limit)]

    def get_dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        if not dead_letter_id.isdecimal():
            return None
        with self._cond:
            return self._dead.get(int(dead_letter_id))

    def replay_dead_letters(self, selector: DeadLetterSelector, dry_run: bool = False) -> list[DeadLetter]:
        with self._cond:
            selected = [d for d in self._dead.values() if _matches(d, selector)]
            if dry_run or not selected:
                return selected
            now = self._clock()
            for dead in selected:
                count = dead.replay_count + 1
                message = OutgoingMessage(
                    queue=dead.queue,
                    message_id=replay_message_id(dead.message_id, count),
                    body=dead.body,
                    properties={**dead.properties, "replay_count": count},
                )
                self._enqueue(message, now)
                del self._dead[int(dead.id)]
            self._cond.notify_all()
            return selected

    def purge_dead_letters(self, selector: DeadLetterSelector) -> int:
        with self._cond:
            doomed = [i for i, d in self._dead.items() if _matches(d, selector)]
            for dead_id in doomed:
                del self._dead[dead_id]
            return len(doomed)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _enqueue(self, message: OutgoingMessage, now: float) -> None:
        key = (message.queue, message.message_id)
        existing = self._entries.get(key)
        window = self._config.duplicate_window_seconds
        if existing is not None and (existing.done_at is None or existing.enqueued_at >= now - window):
            return
        self._seq += 1
        entry = _Entry(seq=self._seq, message=message, enqueued_at=now, available_at=now)
        self._entries[key] = entry
        self._schedule(entry, now + message.due_offset_seconds)

    def _schedule(self, entry: _Entry, available_at: float) -> None:
        entry.available_at = available_at
        entry.version += 1
        key = (entry.message.queue, entry.message.message_id)
        heapq.heappush(self._ready.setdefault(entry.message.queue, []), (available_at, entry.seq, entry.version, key))

    def _head(self, queue: str) -> _Entry | None:
        """The queue's earliest ready entry, dropping heap items made stale by settlement or rescheduling."""
        heap = self._ready.get(queue)
        while heap:
            _, seq, version, key = heap[0]
            entry = self._entries.get(key)
            if entry is not None and entry.seq == seq and entry.version == version and entry.done_at is None:
                return entry
            heapq.heappop(heap)
        return None

    def _claim(self, queue: str, max_messages: int) -> list[ReceivedMessage]:
        now = self._clock()
        received: list[ReceivedMessage] = []
        while len(received) < max_messages:
            entry = self._head(queue)
            if entry is None or entry.available_at > now:
                break
            heapq.heappop(self._ready[queue])
            if entry.delivery_count >= self._config.max_deliveries:
                description = f"delivered {entry.delivery_count} times, the maximum is {self._config.max_deliveries}"
                self._to_dead_letters(entry, MAX_DELIVERY_REASON, description, now)
                continue
            entry.delivery_count += 1
            entry.lock_token = str(uuid.uuid4())
            entry.due_at = entry.available_at
            self._schedule(entry, now + self._config.lock_seconds)
            message = _json_copy(entry.message)
            received.append(
                ReceivedMessage(
                    queue=message.queue,
                    message_id=message.message_id,
                    body=message.body,
                    properties=message.properties,
                    delivery_count=entry.delivery_count,
                    lock_token=entry.lock_token,
                    enqueued_at=datetime.fromtimestamp(entry.enqueued_at, UTC),
                    due_at=datetime.fromtimestamp(entry.due_at, UTC),
                )
            )
        return received

    def _next_due_in(self, queue: str) -> float | None:
        entry = self._head(queue)
        return None if entry is None else entry.available_at - self._clock()

    def _locked_entry(self, message: ReceivedMessage) -> _Entry | None:
        entry = self._entries.get((message.queue, message.message_id))
        if entry is None or entry.done_at is not None or entry.lock_token != message.lock_token:
            return None
        return entry

    def _settle(self, entry: _Entry, now: float) -> None:
        entry.done_at = now
        entry.lock_token = None
        entry.version += 1
        self._settled.append((now, (entry.message.queue, entry.message.message_id), entry.seq))

    def _forget_settled(self, now: float) -> None:
        """Drop settled entries older than the duplicate window: their ids may be sent again."""
        cutoff = now - self._config.duplicate_window_seconds
        while self._settled and self._settled[0][0] < cutoff:
            _, key, seq = self._settled.popleft()
            entry = self._entries.get(key)
            if entry is not None and entry.seq == seq:
                del self._entries[key]

    def _to_dead_letters(self, entry: _Entry, reason: str, description: str, now: float) -> None:
        self._settle(entry, now)
        self._dead_seq += 1
        message = entry.message
        self._dead[self._dead_seq] = DeadLetter(
            id=str(self._dead_seq),
            queue=message.queue,
            message_id=message.message_id,
            body=message.body,
            properties=dict(message.properties),
            reason=reason,
            description=description,
            delivery_count=entry.delivery_count,
            dead_lettered_at=datetime.fromtimestamp(now, UTC),
            replay_count=_replay_count(message.properties),
        )
