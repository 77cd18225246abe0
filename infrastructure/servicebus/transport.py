"""ServiceBusTransport: the Transport on Azure Service Bus queues through the `azure-servicebus` sync SDK.

Every SDK call goes through a client seam (`ServiceBusClientLike`: the real `ServiceBusClient` or the test fake).
Senders and receivers are created once per queue and reused; the SDK's objects are not thread-safe, so each is
used under its own lock. Sends are split into `ServiceBusMessageBatch`es that fit the link's size limit, delayed
messages go through `schedule_messages`, every send has a timeout, and a send is retried (tenacity) on transient
SDK errors only. Every SDK exception leaves as `TransportError(transient=...)`; a message the link can never take
(too large, invalid) as `MessageRefused`.

A received message is settled through the very receiver that received it (Service Bus accepts nothing else).
After a transient receive error that receiver is closed and replaced; messages it still held cannot be settled
any more: their locks lapse and Service Bus redelivers them, so settling them is a logged no-op.

Dead letters come from two places, listed, replayed and purged together (see `servicebus.dlq`): the Service Bus
dead-letter subqueues, and PostgreSQL's `dead_letters` table, where messages the Functions triggers could not
dead-letter themselves are parked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from azure.servicebus import ServiceBusMessage, ServiceBusReceiveMode, ServiceBusSubQueue
from azure.servicebus import exceptions as sbx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from core.errors import TransportError
from core.models import DeadLetter, DeadLetterSelector, OutgoingMessage, ReceivedMessage
from infrastructure.servicebus.client import ServiceBusAccess, build_admin_client, build_client
from infrastructure.servicebus.dlq import DeadLetterBrowser, ParkedDeadLetters
from infrastructure.servicebus.mapping import (
    LOST_LOCK_ERRORS,
    TRANSIENT_ERRORS,
    decode_body,
    decode_properties,
    to_servicebus_message,
    translated,
)

log = logging.getLogger(__name__)

_SMALLEST_WAIT_SECONDS = 0.05

HOST_LOCK_PREFIX = "functions-host:"
"""Lock tokens of messages the Functions host received (and settles): `complete`/`abandon` leave them alone."""


class ServiceBusClientLike(Protocol):
    """The part of `azure.servicebus.ServiceBusClient` the transport uses."""

    def get_queue_sender(self, queue_name: str, **kwargs: Any) -> Any: ...

    def get_queue_receiver(self, queue_name: str, **kwargs: Any) -> Any: ...

    def close(self) -> None: ...


def client_for(access: ServiceBusAccess) -> ServiceBusClientLike:
    client: ServiceBusClientLike = build_client(access)
    return client


client_factory: Callable[[ServiceBusAccess], ServiceBusClientLike] = client_for
"""What the composition root builds its client with; tests replace it with the fake's constructor."""

admin_factory: Callable[[ServiceBusAccess], Any] = build_admin_client
"""The management client (queue depths); tests replace it with the fake."""


class _Guarded:
    """One SDK sender or receiver, created on first use, used under a lock, dropped after a connection error."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._handle: Any = None
        self.lock = threading.RLock()

    def get(self) -> Any:
        if self._handle is None:
            self._handle = self._factory()
        return self._handle

    def current(self, handle: Any) -> bool:
        """Whether `handle` is still the live one (not closed by a reset)."""
        return handle is not None and handle is self._handle

    def reset(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                handle.close()
            except Exception:
                log.debug("closing a service bus handle failed", exc_info=True)


class ServiceBusTransport:
    """Transport on Service Bus. `queues` maps our logical queue names ('jobs', 'tasks') to entity names."""

    def __init__(
        self,
        client: ServiceBusClientLike,
        queues: Mapping[str, str] | None = None,
        *,
        parked: ParkedDeadLetters | None = None,
        send_attempts: int = 4,
        retry_wait_seconds: float = 0.5,
        min_wait_seconds: float = 1.0,
        send_timeout_seconds: float = 30.0,
        dead_letter_scan_limit: int = 5000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._clock = clock
        self._physical = dict(queues or {})
        self._logical = {v: k for k, v in self._physical.items()}
        self._send_attempts = max(1, send_attempts)
        self._retry_wait = max(0.0, retry_wait_seconds)
        self._min_wait = max(0.0, min_wait_seconds)
        self._send_timeout = send_timeout_seconds if send_timeout_seconds > 0 else None
        self._lock = threading.Lock()
        self._senders: dict[str, _Guarded] = {}
        self._receivers: dict[tuple[str, str | None], _Guarded] = {}
        self._held: dict[str, tuple[_Guarded, Any, Any]] = {}
        self._parked = parked
        self._browser = DeadLetterBrowser(self, parked, scan_limit=dead_letter_scan_limit)

    def entity(self, queue: str) -> str:
        return self._physical.get(queue, queue)

    def logical(self, entity: str) -> str:
        return self._logical.get(entity, entity)

    @property
    def logical_queues(self) -> list[str]:
        return list(self._physical) or ["jobs", "tasks"]

    def sender(self, queue: str) -> _Guarded:
        entity = self.entity(queue)
        with self._lock:
            guarded = self._senders.get(entity)
            if guarded is None:
                guarded = _Guarded(lambda: self._client.get_queue_sender(entity))
                self._senders[entity] = guarded
            return guarded

    def receiver(self, queue: str, dead_letters: bool = False) -> _Guarded:
        entity = self.entity(queue)
        key = (entity, ServiceBusSubQueue.DEAD_LETTER.value if dead_letters else None)
        with self._lock:
            guarded = self._receivers.get(key)
            if guarded is None:
                options: dict[str, Any] = {"receive_mode": ServiceBusReceiveMode.PEEK_LOCK, "prefetch_count": 0}
                if dead_letters:
                    options["sub_queue"] = ServiceBusSubQueue.DEAD_LETTER
                guarded = _Guarded(lambda: self._client.get_queue_receiver(entity, **options))
                self._receivers[key] = guarded
            return guarded

    def send(self, messages: Sequence[OutgoingMessage]) -> None:
        by_queue: dict[str, list[OutgoingMessage]] = {}
        for message in messages:
            by_queue.setdefault(message.queue, []).append(message)
        for queue, batch in by_queue.items():
            now = datetime.fromtimestamp(self._clock(), UTC)
            immediate = [m for m in batch if m.delay_seconds <= 0]
            if immediate:
                self.send_now(queue, [to_servicebus_message(m) for m in immediate])
            for message in (m for m in batch if m.delay_seconds > 0):
                self._schedule(queue, to_servicebus_message(message), now + timedelta(seconds=message.delay_seconds))

    def _schedule(self, queue: str, message: ServiceBusMessage, at: datetime) -> None:
        """One scheduled message (invisible until `at`); Service Bus gives it a sequence number we do not keep."""
        self._with_retry(
            queue, "schedule", lambda sender: sender.schedule_messages(message, at, timeout=self._send_timeout)
        )

    def send_now(self, queue: str, messages: Sequence[ServiceBusMessage]) -> None:
        """Send in as few batches as the link's size limit allows."""
        pending = list(messages)
        while pending:
            taken = self._with_retry(queue, "send", lambda s: self._send_one_batch(s, pending))
            del pending[:taken]

    def _send_one_batch(self, sender: Any, pending: Sequence[ServiceBusMessage]) -> int:
        batch = sender.create_message_batch()
        taken = 0
        for message in pending:
            try:
                batch.add_message(message)
            except sbx.MessageSizeExceededError:
                if taken == 0:
                    raise
                break
            taken += 1
        sender.send_messages(batch, timeout=self._send_timeout)
        return taken

    def _with_retry(self, queue: str, action: str, call: Callable[[Any], Any]) -> Any:
        guarded = self.sender(queue)

        def attempt() -> Any:
            with guarded.lock:
                try:
                    return call(guarded.get())
                except TRANSIENT_ERRORS:
                    guarded.reset()
                    raise

        retrying = Retrying(
            retry=retry_if_exception_type(TRANSIENT_ERRORS),
            stop=stop_after_attempt(self._send_attempts),
            wait=wait_exponential(multiplier=self._retry_wait, max=max(self._retry_wait * 16, 0.0)),
            reraise=True,
        )
        with translated(f"{action} to {self.entity(queue)}"):
            return retrying(attempt)

    def receive(self, queue: str, max_messages: int, wait_seconds: float) -> list[ReceivedMessage]:
        if max_messages < 1:
            return []
        logical = self.logical(queue)
        guarded = self.receiver(logical)
        # The SDK refuses a wait of 0 (ValueError): "no wait" is the smallest positive one.
        wait = max(self._min_wait, wait_seconds) or _SMALLEST_WAIT_SECONDS
        with guarded.lock, translated(f"receive from {self.entity(logical)}"):
            handle = guarded.get()
            try:
                raw = handle.receive_messages(max_message_count=max_messages, max_wait_time=wait)
            except TRANSIENT_ERRORS:
                guarded.reset()
                raise
            except ValueError as exc:  # the receiver was shut down under us: replace it
                guarded.reset()
                raise TransportError(f"receive from {self.entity(logical)} failed: {exc}", transient=True) from exc
        received: list[ReceivedMessage] = []
        for message in raw:
            converted = self._convert(logical, message, guarded, handle)
            if converted is not None:
                received.append(converted)
        return received

    def _convert(self, queue: str, message: Any, guarded: _Guarded, handle: Any) -> ReceivedMessage | None:
        """Our message from the SDK's; a body that is not JSON is dead-lettered at once (poison)."""
        try:
            body = decode_body(message)
        except (ValueError, TypeError) as exc:
            with guarded.lock, translated("dead-letter undecodable message"):
                try:
                    handle.dead_letter_message(message, reason="MalformedMessage", error_description=str(exc))
                except LOST_LOCK_ERRORS as lost:
                    log.info("dead-lettering an undecodable message skipped: %s", type(lost).__name__)
            return None
        token = str(message.lock_token)
        with self._lock:
            self._held[token] = (guarded, handle, message)
        return ReceivedMessage(
            queue=queue,
            message_id=str(message.message_id),
            body=body if isinstance(body, dict) else {"value": body},
            properties=decode_properties(message.application_properties),
            delivery_count=int(message.delivery_count or 0) + 1,
            lock_token=token,
            enqueued_at=message.enqueued_time_utc,
        )

    def _take_held(self, message: ReceivedMessage) -> tuple[_Guarded, Any, Any] | None:
        with self._lock:
            return self._held.pop(message.lock_token, None)

    def _settle(self, message: ReceivedMessage, action: str, settle: Callable[[Any, Any], None]) -> None:
        """Settle through the receiver that received the message; a no-op if the lock is gone, held elsewhere,
        or that receiver has been closed since (the message comes back when its lock lapses)."""
        held = self._take_held(message)
        if held is None:
            return
        guarded, handle, raw = held
        with guarded.lock, translated(f"{action} {message.message_id}"):
            if not guarded.current(handle):
                log.info("%s of %s skipped: its receiver was replaced", action, message.message_id)
                return
            try:
                settle(handle, raw)
            except LOST_LOCK_ERRORS as exc:
                log.info("%s of %s skipped: %s", action, message.message_id, type(exc).__name__)

    def complete(self, messages: Sequence[ReceivedMessage]) -> None:
        """Messages this transport did not receive (the Functions host holds their lock) are left to the host."""
        for message in messages:
            self._settle(message, "complete", lambda r, m: r.complete_message(m))

    def abandon(self, message: ReceivedMessage, delay_seconds: float = 0.0) -> None:
        """Service Bus cannot abandon with a delay: with `delay_seconds > 0` the lock is kept and lapses, so the
        message comes back (delivery count incremented) when its lock expires."""
        if delay_seconds > 0:
            self._take_held(message)
            return
        self._settle(message, "abandon", lambda r, m: r.abandon_message(m))

    @property
    def releases_uncounted(self) -> bool:
        return False

    def release(self, messages: Sequence[ReceivedMessage]) -> None:
        """Refused: Service Bus has no uncounted release (an abandon counts the delivery, so fast messages
        handed back behind slow ones would be dead-lettered without ever failing). Receive only what you run."""
        if messages:
            raise TransportError(
                "Service Bus cannot hand back a message without counting its delivery; receive only what will run",
                transient=False,
            )

    def renew_locks(self, messages: Sequence[ReceivedMessage]) -> None:
        """`renew_message_lock` through the receiver holding each lock. Messages the Functions host holds are
        left to it (`maxAutoLockRenewalDuration`); a lost lock is skipped."""
        for message in messages:
            with self._lock:
                held = self._held.get(message.lock_token)
            if held is None:
                continue
            guarded, handle, raw = held
            with guarded.lock, translated(f"renew lock of {message.message_id}"):
                if not guarded.current(handle):
                    continue
                try:
                    handle.renew_message_lock(raw)
                except LOST_LOCK_ERRORS as exc:
                    log.info("lock renewal of %s skipped: %s", message.message_id, type(exc).__name__)

    def dead_letter(self, message: ReceivedMessage, reason: str, description: str) -> None:
        """To the queue's dead-letter subqueue if this transport holds the lock. A message the Functions host
        holds (lock token starting with `HOST_LOCK_PREFIX`) cannot be dead-lettered from Python: it is parked in
        PostgreSQL, where the dead-letter tooling finds it too, and the host completes it."""
        if message.lock_token.startswith(HOST_LOCK_PREFIX):
            if self._parked is None:
                raise TransportError(
                    f"cannot dead-letter {message.message_id}: held by the Functions host and no PostgreSQL parking",
                    transient=False,
                )
            self._parked.park(message, reason, description)
            return
        self._settle(
            message,
            "dead-letter",
            lambda r, m: r.dead_letter_message(m, reason=reason[:256], error_description=description[:4000]),
        )

    def ping(self) -> None:
        """Readiness: one peek of at most one message per queue. Never a dead-letter subqueue, never a lock."""
        for queue in self.logical_queues:
            guarded = self.receiver(queue)
            with guarded.lock, translated(f"peek {self.entity(queue)}"):
                try:
                    guarded.get().peek_messages(max_message_count=1)
                except TRANSIENT_ERRORS:
                    guarded.reset()
                    raise

    def list_dead_letters(
        self, selector: DeadLetterSelector, limit: int = 100, after: str | None = None
    ) -> list[DeadLetter]:
        return self._browser.listing(selector, limit, after)

    def get_dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        return self._browser.get(dead_letter_id)

    def replay_dead_letters(self, selector: DeadLetterSelector, dry_run: bool = False) -> list[DeadLetter]:
        return self._browser.replay(selector, dry_run)

    def purge_dead_letters(self, selector: DeadLetterSelector) -> int:
        return self._browser.purge(selector)

    def purge_settled(self, older_than_seconds: float) -> int:
        """Housekeeping of the PostgreSQL outbox rows the relay has sent (the janitor calls it)."""
        return 0 if self._parked is None else self._parked.purge_settled(older_than_seconds)

    def close(self) -> None:
        with self._lock:
            handles = [*self._senders.values(), *self._receivers.values()]
            self._senders.clear()
            self._receivers.clear()
            self._held.clear()
        for guarded in handles:
            with guarded.lock:
                guarded.reset()
        try:
            self._client.close()
        except Exception:
            log.debug("closing the service bus client failed", exc_info=True)
