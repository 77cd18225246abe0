"""The transport contract run against each adapter that can run here: in-memory, the PostgreSQL queue, and the
Service Bus adapter over `tests.fakes.servicebus_fake`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from core.ports import Transport
from infrastructure.memory.transport import InMemoryTransport, ManualClock
from infrastructure.postgres.database import Database
from infrastructure.postgres.queue import PostgresQueue
from infrastructure.queue_config import QueueConfig
from infrastructure.servicebus.transport import ServiceBusTransport
from tests.contract.transport_contract import QUEUE, Advance, MakeTransport, TransportContract, ids, message
from tests.fakes.servicebus_fake import FakeServiceBus

LONG_LOCK = 60.0


class TestInMemoryTransport(TransportContract):
    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    def tick(self) -> float:
        return 10.0

    @pytest.fixture
    def made(self) -> list[InMemoryTransport]:
        return []

    @pytest.fixture
    def make_transport(self, clock: ManualClock, made: list[InMemoryTransport]) -> Iterator[MakeTransport]:
        def make(**overrides: Any) -> Transport:
            transport = InMemoryTransport(QueueConfig(**{"lock_seconds": LONG_LOCK, **overrides}), clock=clock)
            made.append(transport)
            return transport

        yield make
        for transport in made:
            transport.close()

    @pytest.fixture
    def advance(self, clock: ManualClock, made: list[InMemoryTransport]) -> Advance:
        def advance(seconds: float) -> None:
            clock.advance(seconds)
            for transport in made:
                transport.wake()

        return advance


class TestPostgresQueue(TransportContract):
    @pytest.fixture
    def tick(self) -> float:
        return 0.5

    @pytest.fixture
    def make_transport(self, database: Database) -> Iterator[MakeTransport]:
        made: list[PostgresQueue] = []

        def make(**overrides: Any) -> Transport:
            config = QueueConfig(**{"lock_seconds": LONG_LOCK, **overrides})
            queue = PostgresQueue(database, lambda: database.connect(autocommit=True), config)
            made.append(queue)
            return queue

        yield make
        for queue in made:
            queue.close()

    @pytest.fixture
    def advance(self) -> Advance:
        return time.sleep


class TestServiceBusTransport(TransportContract):
    """The Service Bus adapter over the SDK fake, its clock moved by hand like the in-memory transport's."""

    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    def tick(self) -> float:
        return 10.0

    @pytest.fixture
    def buses(self) -> list[FakeServiceBus]:
        return []

    @pytest.fixture
    def make_transport(self, clock: ManualClock, buses: list[FakeServiceBus]) -> Iterator[MakeTransport]:
        made: list[ServiceBusTransport] = []

        def make(**overrides: Any) -> Transport:
            config = QueueConfig(**{"lock_seconds": LONG_LOCK, **overrides})
            bus = FakeServiceBus(
                clock=clock,
                lock_seconds=config.lock_seconds,
                max_delivery_count=config.max_deliveries,
                duplicate_window_seconds=config.duplicate_window_seconds,
            )
            buses.append(bus)
            transport = ServiceBusTransport(
                bus, {"jobs": "jobs", "tasks": "tasks"}, min_wait_seconds=0.0, retry_wait_seconds=0.0, clock=clock
            )
            made.append(transport)
            return transport

        yield make
        for transport in made:
            transport.close()

    @pytest.fixture
    def advance(self, clock: ManualClock, buses: list[FakeServiceBus]) -> Advance:
        def advance(seconds: float) -> None:
            clock.advance(seconds)
            for bus in buses:
                bus.wake()

        return advance

    def test_continuations_come_before_earlier_messages(
        self, make_transport: MakeTransport, tick: float, advance: Advance
    ) -> None:
        """A Service Bus queue has no priorities: a continuation takes its place in line. Replaces the base test."""
        transport = make_transport()
        transport.send([message("start-1"), message("start-2")])
        transport.send([replace(message("next-stage"), continues_job=True)])
        assert ids(transport.receive(QUEUE, 10, 0)) == ["start-1", "start-2", "next-stage"]

    def test_abandon_with_delay(self, make_transport: MakeTransport, tick: float, advance: Advance) -> None:
        """Service Bus has no delayed abandon: the adapter keeps the lock, so the message returns (delivery count
        incremented) when the lock expires, not after the delay. Replaces the base test for this adapter."""
        transport = make_transport(lock_seconds=tick * 3)
        transport.send([message("m1")])
        [first] = transport.receive(QUEUE, 1, 0)
        transport.abandon(first, delay_seconds=tick)
        advance(tick * 2)
        assert transport.receive(QUEUE, 1, 0) == []
        advance(tick * 1.5)
        [again] = transport.receive(QUEUE, 1, 0)
        assert again.delivery_count == 2
