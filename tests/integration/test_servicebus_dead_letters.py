"""Dead-letter replay and purge on the Service Bus transport settle page by page, never the whole DLQ locked."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage

from core.models import DeadLetterSelector, OutgoingMessage, ReceivedMessage
from infrastructure.postgres.database import Database
from infrastructure.servicebus.dlq import ParkedDeadLetters
from infrastructure.servicebus.transport import ServiceBusTransport
from tests.fakes.servicebus_fake import FakeServiceBus
from tests.integration.pg_activity import open_transactions

DLQ = "tasks/$DeadLetterQueue"


def fill_dead_letters(bus: FakeServiceBus, count: int, job_of: dict[int, str]) -> None:
    """`count` messages dead-lettered on `tasks`; message i belongs to job `job_of.get(i, 'other')`."""
    sender = bus.get_queue_sender("tasks")
    for i in range(count):
        properties: dict[str | bytes, Any] = {"job_id": job_of.get(i, "other"), "kind": "task"}
        sender.send_messages(ServiceBusMessage(b'{"i": %d}' % i, message_id=f"m{i}", application_properties=properties))
    receiver = bus.get_queue_receiver("tasks")
    while got := receiver.receive_messages(max_message_count=100, max_wait_time=0.05):
        for message in got:
            receiver.dead_letter_message(message, reason="Boom", error_description="drill")


@pytest.fixture
def bus() -> FakeServiceBus:
    return FakeServiceBus(lock_seconds=300.0)


@pytest.fixture
def transport(bus: FakeServiceBus, database: Database) -> Iterator[ServiceBusTransport]:
    t = ServiceBusTransport(bus, parked=ParkedDeadLetters(database), min_wait_seconds=0.0, retry_wait_seconds=0.0)
    yield t
    t.close()


def test_replay_of_the_last_dead_letter_locks_one_page_at_a_time(
    bus: FakeServiceBus, transport: ServiceBusTransport
) -> None:
    fill_dead_letters(bus, 600, {599: "J-last", 3: "J-first"})
    bus.peak_locked.clear()
    [replayed] = transport.replay_dead_letters(DeadLetterSelector(job_id="J-last"))
    assert replayed.message_id == "m599"
    assert bus.peak_locked[DLQ] <= 250, "one page of the DLQ locked at a time, not all 600"
    assert bus.count(DLQ) == 599
    [back] = transport.receive("tasks", 10, 0)
    assert (back.message_id, back.properties["replay_count"]) == ("m599:r1", 1)

    # The messages deferred on the way are still listed, and a later replay finds them by sequence number.
    assert len(transport.list_dead_letters(DeadLetterSelector(), limit=1000)) == 599
    [first] = transport.replay_dead_letters(DeadLetterSelector(job_id="J-first"))
    assert first.message_id == "m3"
    assert transport.purge_dead_letters(DeadLetterSelector(queue="tasks")) == 598
    assert bus.peak_locked[DLQ] <= 250
    assert bus.count(DLQ) == 0


class ObservingSends(ServiceBusTransport):
    """Records, at each send, how many PostgreSQL sessions sit in an open transaction."""

    database: Database
    open_transactions: list[int]

    def send(self, messages: Sequence[OutgoingMessage]) -> None:
        self.open_transactions.append(open_transactions(self.database))
        super().send(messages)


def test_parked_dead_letters_are_replayed_page_by_page_with_no_transaction_open(
    bus: FakeServiceBus, database: Database
) -> None:
    parked = ParkedDeadLetters(database)
    for i in range(300):
        message = ReceivedMessage("tasks", f"p{i}", {"i": i}, {"job_id": "J1"}, 1, f"host-{i}")
        parked.park(message, "MalformedMessage", "drill")
    transport = ObservingSends(bus, parked=parked, min_wait_seconds=0.0)
    transport.database, transport.open_transactions = database, []
    assert len(transport.replay_dead_letters(DeadLetterSelector(job_id="J1"))) == 300
    assert transport.open_transactions == [0, 0], "two pages, each sent with no transaction open"
    assert bus.count("tasks") == 300
    assert transport.list_dead_letters(DeadLetterSelector()) == []
    transport.close()
