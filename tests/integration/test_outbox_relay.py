"""OutboxRelay against real PostgreSQL: rows written to `queue_messages` reach another transport exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence

import pytest

from core.errors import MessageRefused, TransportError
from core.models import OutgoingMessage
from infrastructure.memory.transport import InMemoryTransport, ManualClock
from infrastructure.outbox_relay import OutboxRelay
from infrastructure.postgres.database import Database
from infrastructure.postgres.queue import PostgresQueue
from infrastructure.queue_config import QueueConfig
from tests.integration.pg_activity import open_transactions

QUEUE = "tasks"


class RecordingTransport(InMemoryTransport):
    """Counts every message handed to `send` (before duplicate detection), optionally slowly."""

    def __init__(self, clock: ManualClock | None = None, send_seconds: float = 0.0) -> None:
        super().__init__(QueueConfig(lock_seconds=60.0), clock=clock or ManualClock())
        self.sent: list[str] = []
        self._send_seconds = send_seconds
        self._record_lock = threading.Lock()

    def send(self, messages: Sequence[OutgoingMessage]) -> None:
        time.sleep(self._send_seconds)
        with self._record_lock:
            self.sent.extend(m.message_id for m in messages)
        super().send(messages)


class FailingTransport(InMemoryTransport):
    def send(self, messages: Sequence[OutgoingMessage]) -> None:
        raise TransportError("service bus is busy", transient=True)


def write_outbox(database: Database, messages: list[OutgoingMessage]) -> None:
    """Commit rows into `queue_messages`, as the state store's transactions do."""
    PostgresQueue(database, lambda: database.connect(autocommit=True)).send(messages)


def ready_rows(database: Database) -> int:
    with database.connection() as conn:
        row = conn.execute("SELECT count(*) FROM queue_messages WHERE state = 'ready'").fetchone()
    assert row is not None
    return int(row[0])


def message(message_id: str, delay: float = 0.0) -> OutgoingMessage:
    return OutgoingMessage(QUEUE, message_id, {"id": message_id}, {"job_id": "J1"}, delay_seconds=delay)


def test_flush_relays_every_ready_row_once(database: Database) -> None:
    write_outbox(database, [message("a"), message("b"), OutgoingMessage("jobs", "j", {"stage": 1})])
    target = RecordingTransport()
    relay = OutboxRelay(database, target, batch_size=2)

    assert relay.flush() == 3
    assert relay.flush() == 0
    assert sorted(target.sent) == ["a", "b", "j"]
    assert ready_rows(database) == 0
    assert relay.purge_settled(3600) == 0
    assert relay.purge_settled(0) == 3
    received = target.receive(QUEUE, 10, 0)
    assert [(m.message_id, m.body, m.properties) for m in received] == [
        ("a", {"id": "a"}, {"job_id": "J1"}),
        ("b", {"id": "b"}, {"job_id": "J1"}),
    ]
    assert [m.message_id for m in target.receive("jobs", 10, 0)] == ["j"]


def test_racing_relays_send_each_row_exactly_once(database: Database) -> None:
    sent = [f"m{i}" for i in range(300)]
    write_outbox(database, [message(i) for i in sent])
    target = RecordingTransport(send_seconds=0.005)
    relays = [OutboxRelay(database, target, batch_size=20) for _ in range(2)]
    barrier = threading.Barrier(len(relays))
    counts: list[int] = []

    def run(relay: OutboxRelay) -> None:
        barrier.wait()
        counts.append(relay.flush())

    threads = [threading.Thread(target=run, args=(relay,)) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sum(counts) == 300
    assert Counter(target.sent) == Counter(sent)
    assert ready_rows(database) == 0


def test_delayed_rows_arrive_with_their_remaining_delay(database: Database) -> None:
    write_outbox(database, [message("later", delay=30.0), message("now")])
    clock = ManualClock()
    target = RecordingTransport(clock=clock)

    assert OutboxRelay(database, target).flush() == 2
    assert [m.message_id for m in target.receive(QUEUE, 10, 0)] == ["now"]
    clock.advance(25.0)
    assert target.receive(QUEUE, 10, 0) == []
    clock.advance(6.0)
    assert [m.message_id for m in target.receive(QUEUE, 10, 0)] == ["later"]


def test_relay_stranded_only_touches_old_rows(database: Database) -> None:
    write_outbox(database, [message("old"), message("new")])
    with database.connection() as conn:
        conn.execute("UPDATE queue_messages SET enqueued_at = now() - interval '1 hour' WHERE message_id = 'old'")
    target = RecordingTransport()
    relay = OutboxRelay(database, target)

    assert relay.relay_stranded(60.0) == 1
    assert target.sent == ["old"]
    assert relay.relay_stranded(60.0) == 0
    assert relay.flush() == 1
    assert target.sent == ["old", "new"]


def test_a_failed_send_leaves_the_rows_ready(database: Database) -> None:
    write_outbox(database, [message("a"), message("b")])
    with pytest.raises(TransportError):
        OutboxRelay(database, FailingTransport()).flush()
    assert ready_rows(database) == 2

    target = RecordingTransport()
    assert OutboxRelay(database, target).flush() == 2
    assert sorted(target.sent) == ["a", "b"]


class ObservingTransport(RecordingTransport):
    """While sending, looks at the database from outside: open transactions and row locks on the outbox."""

    def __init__(self, database: Database) -> None:
        super().__init__()
        self.database = database
        self.seen: list[tuple[int, int]] = []

    def send(self, messages: Sequence[OutgoingMessage]) -> None:
        others = open_transactions(self.database)
        with self.database.connection() as conn:
            lockable = conn.execute(
                "SELECT count(*) FROM (SELECT id FROM queue_messages WHERE state = 'ready' FOR UPDATE NOWAIT) t"
            ).fetchone()
            conn.rollback()
        assert lockable is not None
        self.seen.append((others, int(lockable[0])))
        super().send(messages)


def test_no_transaction_is_open_and_no_row_locked_while_sending(database: Database) -> None:
    write_outbox(database, [message("a"), message("b"), message("c")])
    target = ObservingTransport(database)
    assert OutboxRelay(database, target, batch_size=2).flush() == 3
    assert target.seen == [(0, 3), (0, 1)], "rows are leased, not locked, while the transport is called"
    assert ready_rows(database) == 0


class RefusingTransport(RecordingTransport):
    """Refuses, for good, any send that contains a message whose id starts with 'big'."""

    def send(self, messages: Sequence[OutgoingMessage]) -> None:
        for m in messages:
            if m.message_id.startswith("big"):
                raise MessageRefused(f"{m.message_id} is larger than the link allows")
        super().send(messages)


def test_a_refused_row_is_set_aside_with_its_reason_and_later_rows_flow(database: Database) -> None:
    write_outbox(database, [message("a"), message("big-1"), message("c")])
    target = RefusingTransport()
    relay = OutboxRelay(database, target)
    assert relay.flush() == 3
    assert sorted(target.sent) == ["a", "c"]
    assert ready_rows(database) == 0
    write_outbox(database, [message("d")])
    assert relay.flush() == 1 and target.sent[-1] == "d", "the outbox is not blocked"
    with database.connection() as conn:
        dead = conn.execute("SELECT queue, message_id, reason, description, body FROM dead_letters").fetchall()
    assert dead == [(QUEUE, "big-1", "MessageRefused", "big-1 is larger than the link allows", {"id": "big-1"})]


def test_rows_of_a_relay_that_died_after_claiming_are_relayed_once_its_lease_lapses(database: Database) -> None:
    write_outbox(database, [message("a"), message("b")])
    with database.connection() as conn:  # what a relay that died between claim and send leaves behind
        conn.execute("UPDATE queue_messages SET relay_token = gen_random_uuid(), relay_until = now() + interval '1 h'")
    target = RecordingTransport()
    relay = OutboxRelay(database, target)
    assert relay.flush() == 0 and target.sent == [], "a live lease keeps other relays off"
    with database.connection() as conn:
        conn.execute("UPDATE queue_messages SET relay_until = now() - interval '1 s'")
    assert relay.relay_stranded(0.0) == 2
    assert sorted(target.sent) == ["a", "b"]
    assert ready_rows(database) == 0


def test_a_row_too_large_for_service_bus_shows_in_the_dead_letter_tooling(database: Database) -> None:
    from core.models import DeadLetterSelector
    from infrastructure.servicebus.dlq import ParkedDeadLetters
    from infrastructure.servicebus.transport import ServiceBusTransport
    from tests.fakes.servicebus_fake import FakeServiceBus

    bus = FakeServiceBus(max_batch_bytes=4096)
    transport = ServiceBusTransport(bus, parked=ParkedDeadLetters(database), min_wait_seconds=0.0)
    big = OutgoingMessage(QUEUE, "huge", {"pad": "x" * 10_000}, {"job_id": "J7"})
    write_outbox(database, [message("a"), big, message("b")])
    assert OutboxRelay(database, transport).flush() == 3
    assert sorted(m.message_id for m in transport.receive(QUEUE, 10, 0)) == ["a", "b"]
    [dead] = transport.list_dead_letters(DeadLetterSelector(job_id="J7"))
    assert (dead.id.startswith("pg:"), dead.message_id, dead.reason) == (True, "huge", "MessageRefused")
    assert "MessageSizeExceededError" in dead.description
    transport.close()
