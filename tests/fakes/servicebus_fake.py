"""FakeServiceBus: an in-process stand-in for `azure.servicebus.ServiceBusClient` with Service Bus semantics.

Models peek-lock with lock expiry, abandon, complete, dead-letter into a `$DeadLetterQueue` subqueue, scheduled
delivery, delivery counts (exposed 0-based on received messages, as the Python SDK's raw AMQP header is), max
delivery count → DLQ with `MaxDeliveryCountExceeded`, and duplicate detection by message id within a window.
Sent messages are the real `ServiceBusMessage`; received ones are `FakeReceivedMessage`, with the SDK's attribute
names and its bytes-encoded application properties.

Where the SDK (azure-servicebus 7.15) is strict, the fake is as strict, so a test cannot pass on behaviour that
production would refuse:
- a message is settled only through the receiver that received it; another receiver gets `MessageLockLostError`
  (the service's "lock supplied is invalid ... received by a different receiver instance");
- peeked messages have no lock token and settling one raises `ValueError`, as the SDK does;
- a settled message has no lock token any more and settling it again raises `MessageAlreadySettled`;
- a closed sender or receiver raises `ValueError` ("handler has already been shutdown") on every call;
- sizes are the real ones: `ServiceBusMessageBatch` computes them, a single message larger than the link's
  maximum raises `MessageSizeExceededError` on send or schedule, a list that does not fit one batch too;
- `receive_messages` waits up to `max_wait_time` for the first message, 60 s when it is None (the SDK default),
  refuses a non-positive wait or count, and answers [] at once for `max_message_count=None` (prefetch 0);
- `timeout` on send/schedule must be positive;
- a deferred message is never received again except by `receive_deferred_messages` with its sequence number,
  and peeking shows its state as DEFERRED.
Sequence numbers are namespace-wide here (Service Bus numbers them per entity). A DLQ copy keeps the delivery
count it had when dead-lettered; whether receiving from a real DLQ increments it is unverified.
Time for locks, schedules and the duplicate window comes from an injectable clock; waits are real time.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusMessageBatch, ServiceBusMessageState, ServiceBusSubQueue
from azure.servicebus import exceptions as sbx

MAX_DELIVERY_REASON = "MaxDeliveryCountExceeded"
SDK_DEFAULT_WAIT_SECONDS = 60.0
LINK_MAX_MESSAGE_BYTES = 256 * 1024
"""Service Bus Standard's message size limit, which is also what a link advertises as its batch maximum."""
_INVALID_LOCK = (
    "The lock supplied is invalid. Either the lock expired, or the message has already been removed from the "
    "queue, or was received by a different receiver instance."
)


def _encode(value: Any) -> Any:
    return value.encode() if isinstance(value, str) else value


@dataclass
class _Stored:
    seq: int
    message_id: str
    body: bytes
    properties: dict[Any, Any]
    content_type: str | None
    subject: str | None
    correlation_id: str | None
    enqueued_at: float
    available_at: float
    deliveries: int = 0
    lock_token: str | None = None
    locked_until: float = 0.0
    holder: int | None = None
    deferred: bool = False
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None


@dataclass
class FakeReceivedMessage:
    """What `receive_messages`/`peek_messages` return: the attributes of `ServiceBusReceivedMessage` we use."""

    message_id: str
    data: bytes
    application_properties: dict[Any, Any]
    delivery_count: int
    sequence_number: int
    enqueued_time_utc: datetime
    received_lock_token: str | None
    locked_until_utc: datetime | None = None
    content_type: str | None = None
    subject: str | None = None
    correlation_id: str | None = None
    dead_letter_reason: str | None = None
    dead_letter_error_description: str | None = None
    entity: str = ""
    receiver_id: int | None = None
    settled: bool = False
    state: ServiceBusMessageState = ServiceBusMessageState.ACTIVE

    @property
    def body(self) -> Iterator[bytes]:
        return iter([self.data])

    @property
    def lock_token(self) -> str | None:
        """None for a peeked or an already settled message, as in the SDK."""
        return None if self.settled else self.received_lock_token


@dataclass
class _Entity:
    messages: dict[int, _Stored] = field(default_factory=dict)
    seen_ids: dict[str, float] = field(default_factory=dict)


class FakeServiceBus:
    """The namespace and the client in one. Thread-safe. `fail_next(n, exc)` makes the next n sends raise,
    `fail_next_receive(n, exc)` the next n receives."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        lock_seconds: float = 60.0,
        max_delivery_count: int = 10,
        duplicate_window_seconds: float = 600.0,
        max_batch_bytes: int = LINK_MAX_MESSAGE_BYTES,
    ) -> None:
        self.clock = clock
        self.lock_seconds = lock_seconds
        self.max_delivery_count = max_delivery_count
        self.duplicate_window_seconds = duplicate_window_seconds
        self.max_batch_bytes = max_batch_bytes
        self._cond = threading.Condition()
        self._entities: dict[str, _Entity] = {}
        self._seq = 0
        self._receivers = 0
        self._failures: list[BaseException] = []
        self._receive_failures: list[BaseException] = []
        self.sent_batches: list[tuple[str, int]] = []
        self.scheduled: list[tuple[str, str, datetime]] = []
        self.abandoned = 0
        """Abandon calls: each counted a delivery."""
        self.send_timeouts: list[float | None] = []
        self.peeked: list[str] = []
        self.peak_locked: dict[str, int] = {}
        """Per entity, the most messages locked at once (to show page-by-page settlement)."""
        self.closed = False

    def get_queue_sender(self, queue_name: str, **_: Any) -> FakeSender:
        return FakeSender(self, queue_name)

    def get_queue_receiver(
        self, queue_name: str, *, sub_queue: Any = None, max_wait_time: float | None = None, **_: Any
    ) -> FakeReceiver:
        if max_wait_time is not None and max_wait_time <= 0:
            raise ValueError("The max_wait_time must be greater than 0.")
        dead = sub_queue is not None and ServiceBusSubQueue(sub_queue) is ServiceBusSubQueue.DEAD_LETTER
        with self._cond:
            self._receivers += 1
            number = self._receivers
        entity = f"{queue_name}/$DeadLetterQueue" if dead else queue_name
        return FakeReceiver(self, entity, dead, number, max_wait_time)

    def close(self) -> None:
        self.closed = True

    def get_queue_runtime_properties(self, queue_name: str, **_: Any) -> Any:
        """What `ServiceBusAdministrationClient` answers (the fake is its own management client too)."""
        with self._cond:
            now = self.clock()
            messages = list(self._entity(queue_name).messages.values())
            dead = len(self._entity(f"{queue_name}/$DeadLetterQueue").messages)
        return SimpleNamespace(
            active_message_count=sum(1 for m in messages if m.available_at <= now or m.holder is not None),
            scheduled_message_count=sum(1 for m in messages if m.available_at > now and m.holder is None),
            dead_letter_message_count=dead,
        )

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def fail_next(self, count: int, error: BaseException) -> None:
        with self._cond:
            self._failures.extend([error] * count)

    def fail_next_receive(self, count: int, error: BaseException) -> None:
        with self._cond:
            self._receive_failures.extend([error] * count)

    def count(self, entity: str) -> int:
        with self._cond:
            return len(self._entity(entity).messages)

    def _entity(self, name: str) -> _Entity:
        return self._entities.setdefault(name, _Entity())

    def _maybe_fail(self, failures: list[BaseException]) -> None:
        if failures:
            raise failures.pop(0)

    def _check_size(self, message: ServiceBusMessage) -> None:
        """A single message must fit the link: the real batch arithmetic raises `MessageSizeExceededError`."""
        ServiceBusMessageBatch(max_size_in_bytes=self.max_batch_bytes).add_message(message)

    def _enqueue(self, entity: str, message: ServiceBusMessage, available_at: float | None = None) -> int:
        now = self.clock()
        target = self._entity(entity)
        seen = target.seen_ids.get(str(message.message_id))
        if seen is not None and seen > now - self.duplicate_window_seconds:
            return -1
        target.seen_ids[str(message.message_id)] = now
        self._seq += 1
        target.messages[self._seq] = _Stored(
            seq=self._seq,
            message_id=str(message.message_id),
            body=b"".join(message.body),
            properties={_encode(k): _encode(v) for k, v in (message.application_properties or {}).items()},
            content_type=message.content_type,
            subject=message.subject,
            correlation_id=message.correlation_id,
            enqueued_at=now,
            available_at=now if available_at is None else available_at,
        )
        self._cond.notify_all()
        return self._seq

    def _view(self, entity: str, stored: _Stored, receiver: int | None) -> FakeReceivedMessage:
        return FakeReceivedMessage(
            message_id=stored.message_id,
            data=stored.body,
            application_properties=dict(stored.properties),
            delivery_count=max(stored.deliveries - 1, 0),
            sequence_number=stored.seq,
            enqueued_time_utc=datetime.fromtimestamp(stored.enqueued_at, UTC),
            received_lock_token=stored.lock_token if receiver is not None else None,
            locked_until_utc=datetime.fromtimestamp(stored.locked_until, UTC) if receiver is not None else None,
            content_type=stored.content_type,
            subject=stored.subject,
            correlation_id=stored.correlation_id,
            dead_letter_reason=stored.dead_letter_reason,
            dead_letter_error_description=stored.dead_letter_description,
            entity=entity,
            receiver_id=receiver,
            state=ServiceBusMessageState.DEFERRED if stored.deferred else ServiceBusMessageState.ACTIVE,
        )

    def _to_dead_letters(self, entity: str, stored: _Stored, reason: str, description: str) -> None:
        del self._entity(entity).messages[stored.seq]
        stored.lock_token, stored.holder = None, None
        stored.enqueued_at = stored.available_at = self.clock()
        stored.dead_letter_reason, stored.dead_letter_description = reason, description
        stored.properties[b"DeadLetterReason"] = reason.encode()
        stored.properties[b"DeadLetterErrorDescription"] = description.encode()
        self._entity(f"{entity}/$DeadLetterQueue").messages[stored.seq] = stored

    def _claim(self, entity: str, dead: bool, max_count: int, receiver: int) -> list[FakeReceivedMessage]:
        now = self.clock()
        claimed: list[FakeReceivedMessage] = []
        due = sorted(
            (m for m in self._entity(entity).messages.values() if m.available_at <= now and not m.deferred),
            key=lambda m: (m.available_at, m.seq),
        )
        for stored in due:
            if len(claimed) >= max_count:
                break
            if not dead and stored.deliveries >= self.max_delivery_count:
                description = f"delivered {stored.deliveries} times, the maximum is {self.max_delivery_count}"
                self._to_dead_letters(entity, stored, MAX_DELIVERY_REASON, description)
                continue
            if not dead:
                stored.deliveries += 1
            stored.lock_token = str(uuid.uuid4())
            stored.holder = receiver
            stored.locked_until = stored.available_at = now + self.lock_seconds
            claimed.append(self._view(entity, stored, receiver))
        self._note_locks(entity)
        return claimed

    def _note_locks(self, entity: str) -> None:
        now = self.clock()
        held = sum(1 for m in self._entity(entity).messages.values() if m.holder is not None and m.locked_until > now)
        self.peak_locked[entity] = max(self.peak_locked.get(entity, 0), held)

    def _claim_deferred(self, entity: str, sequence_numbers: list[int], receiver: int) -> list[FakeReceivedMessage]:
        now = self.clock()
        claimed: list[FakeReceivedMessage] = []
        for seq in sequence_numbers:
            stored = self._entity(entity).messages.get(seq)
            if stored is None or not stored.deferred:
                raise sbx.MessageNotFoundError(message=f"deferred message {seq} not found")
            stored.lock_token, stored.holder = str(uuid.uuid4()), receiver
            stored.locked_until = now + self.lock_seconds
            claimed.append(self._view(entity, stored, receiver))
        self._note_locks(entity)
        return claimed

    def _locked(self, entity: str, message: FakeReceivedMessage, receiver: int) -> _Stored:
        """The stored message if `receiver` still holds its lock; else what the service or the SDK raises."""
        if message.received_lock_token is None:
            raise ValueError(
                "The operation is not supported for peeked messages. Only messages received using receive "
                "methods in PEEK_LOCK mode can be settled."
            )
        if message.settled:
            raise sbx.MessageAlreadySettled()
        if message.locked_until_utc is not None and message.locked_until_utc.timestamp() <= self.clock():
            raise sbx.MessageLockLostError(message="The lock on the message lock has expired.")
        stored = self._entity(entity).messages.get(message.sequence_number)
        if (
            stored is None
            or message.receiver_id != receiver
            or stored.holder != receiver
            or stored.lock_token != message.received_lock_token
            or stored.locked_until <= self.clock()
        ):
            raise sbx.MessageLockLostError(message=_INVALID_LOCK)
        return stored


def _shut_down() -> ValueError:
    return ValueError("The handler has already been shutdown. Please use ServiceBusClient to create a new instance.")


class FakeSender:
    def __init__(self, bus: FakeServiceBus, entity: str) -> None:
        self._bus = bus
        self._entity = entity
        self.closed = False

    def _check(self, timeout: float | None) -> None:
        if self.closed:
            raise _shut_down()
        if timeout is not None and timeout <= 0:
            raise ValueError("The timeout must be greater than 0.")

    def create_message_batch(self, max_size_in_bytes: int | None = None) -> ServiceBusMessageBatch:
        if max_size_in_bytes and max_size_in_bytes > self._bus.max_batch_bytes:
            raise ValueError(
                f"Max message size: {max_size_in_bytes} is too large, "
                f"acceptable max batch size is: {self._bus.max_batch_bytes} bytes."
            )
        return ServiceBusMessageBatch(max_size_in_bytes=max_size_in_bytes or self._bus.max_batch_bytes)

    def send_messages(self, messages: Any, *, timeout: float | None = None, **_: Any) -> None:
        self._check(timeout)
        if isinstance(messages, ServiceBusMessageBatch):
            batch = list(messages._messages)
        elif isinstance(messages, ServiceBusMessage):
            self._bus._check_size(messages)
            batch = [messages]
        else:
            batch = list(messages)
            self.create_message_batch()._from_list(batch)  # the SDK's own check: one batch or an error
        with self._bus._cond:
            self._bus._maybe_fail(self._bus._failures)
            self._bus.send_timeouts.append(timeout)
            self._bus.sent_batches.append((self._entity, len(batch)))
            for message in batch:
                self._bus._enqueue(self._entity, message)

    def schedule_messages(
        self, messages: Any, schedule_time_utc: datetime, *, timeout: float | None = None, **_: Any
    ) -> list[int]:
        self._check(timeout)
        batch = [messages] if isinstance(messages, ServiceBusMessage) else list(messages)
        for message in batch:
            self._bus._check_size(message)
        with self._bus._cond:
            self._bus._maybe_fail(self._bus._failures)
            self._bus.send_timeouts.append(timeout)
            due = schedule_time_utc.timestamp()
            for message in batch:
                self._bus.scheduled.append((self._entity, str(message.message_id), schedule_time_utc))
            return [self._bus._enqueue(self._entity, m, available_at=due) for m in batch]

    def close(self) -> None:
        self.closed = True


class FakeReceiver:
    def __init__(self, bus: FakeServiceBus, entity: str, dead: bool, number: int, max_wait: float | None) -> None:
        self._bus = bus
        self._entity = entity
        self._dead = dead
        self._number = number
        self._max_wait = max_wait
        self.closed = False

    def _check_live(self) -> None:
        if self.closed:
            raise _shut_down()

    def receive_messages(
        self, max_message_count: int | None = 1, max_wait_time: float | None = None
    ) -> list[FakeReceivedMessage]:
        self._check_live()
        if max_wait_time is not None and max_wait_time <= 0:
            raise ValueError("The max_wait_time must be greater than 0.")
        if max_message_count is not None and max_message_count <= 0:
            raise ValueError("The max_message_count must be greater than 0")
        if max_message_count is None:
            return []  # the bound is prefetch_count, which is 0
        wait = max_wait_time if max_wait_time is not None else (self._max_wait or SDK_DEFAULT_WAIT_SECONDS)
        deadline = time.monotonic() + wait
        with self._bus._cond:
            self._bus._maybe_fail(self._bus._receive_failures)
            while True:
                got = self._bus._claim(self._entity, self._dead, max_message_count, self._number)
                remaining = deadline - time.monotonic()
                if got or remaining <= 0 or self.closed:
                    return got
                self._bus._cond.wait(min(remaining, 0.05))

    def peek_messages(self, max_message_count: int = 1, *, sequence_number: int = 0, **_: Any) -> list[Any]:
        self._check_live()
        with self._bus._cond:
            self._bus.peeked.append(self._entity)
            found = sorted(
                (m for m in self._bus._entity(self._entity).messages.values() if m.seq >= sequence_number),
                key=lambda m: m.seq,
            )
            return [self._bus._view(self._entity, m, None) for m in found[:max_message_count]]

    def _settle(self, message: FakeReceivedMessage) -> _Stored:
        self._check_live()
        stored = self._bus._locked(self._entity, message, self._number)
        message.settled = True
        return stored

    def complete_message(self, message: FakeReceivedMessage) -> None:
        with self._bus._cond:
            stored = self._settle(message)
            del self._bus._entity(self._entity).messages[stored.seq]

    def abandon_message(self, message: FakeReceivedMessage) -> None:
        with self._bus._cond:
            stored = self._settle(message)
            self._bus.abandoned += 1
            stored.lock_token, stored.holder = None, None
            stored.available_at = self._bus.clock()
            self._bus._cond.notify_all()

    def defer_message(self, message: FakeReceivedMessage) -> None:
        """Set aside in the entity: only `receive_deferred_messages` by sequence number returns it again."""
        with self._bus._cond:
            stored = self._settle(message)
            stored.lock_token, stored.holder, stored.deferred = None, None, True

    def receive_deferred_messages(self, sequence_numbers: int | list[int], **_: Any) -> list[FakeReceivedMessage]:
        self._check_live()
        numbers = [sequence_numbers] if isinstance(sequence_numbers, int) else list(sequence_numbers)
        with self._bus._cond:
            return self._bus._claim_deferred(self._entity, numbers, self._number)

    def dead_letter_message(
        self, message: FakeReceivedMessage, reason: str | None = None, error_description: str | None = None
    ) -> None:
        if self._dead:
            raise sbx.ServiceBusError("cannot dead-letter a message of a dead-letter queue")
        with self._bus._cond:
            stored = self._settle(message)
            self._bus._to_dead_letters(self._entity, stored, reason or "", error_description or "")

    def renew_message_lock(self, message: FakeReceivedMessage, **_: Any) -> datetime:
        with self._bus._cond:
            self._check_live()
            stored = self._bus._locked(self._entity, message, self._number)
            stored.locked_until = stored.available_at = self._bus.clock() + self._bus.lock_seconds
            message.locked_until_utc = datetime.fromtimestamp(stored.locked_until, UTC)
            return message.locked_until_utc

    def close(self) -> None:
        self.closed = True
