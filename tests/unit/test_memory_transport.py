"""InMemoryTransport specifics beyond the transport contract: the clock, copies, wake-ups, bookkeeping."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.models import OutgoingMessage
from infrastructure.memory.transport import InMemoryTransport, ManualClock
from infrastructure.queue_config import QueueConfig

QUEUE = "tasks"


def message(message_id: str, delay: float = 0.0, body: dict[str, Any] | None = None) -> OutgoingMessage:
    return OutgoingMessage(QUEUE, message_id, body if body is not None else {"id": message_id}, delay_seconds=delay)


def in_thread(target: Any) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        outcome["got"] = target()
        outcome["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_manual_clock_moves_only_when_advanced() -> None:
    clock = ManualClock(start=100.0)
    assert clock() == 100.0
    clock.advance(2.5)
    assert clock() == 102.5


def test_times_come_from_the_injected_clock() -> None:
    clock = ManualClock(start=1_700_000_000.0)
    transport = InMemoryTransport(clock=clock)
    transport.send([message("m1")])
    [got] = transport.receive(QUEUE, 1, 0)
    assert got.enqueued_at == datetime.fromtimestamp(1_700_000_000.0, UTC)


def test_messages_are_private_json_copies() -> None:
    transport = InMemoryTransport(clock=ManualClock())
    body: dict[str, Any] = {"ids": [1, 2]}
    transport.send([message("m1", body=body)])
    body["ids"].append(3)
    [got] = transport.receive(QUEUE, 1, 0)
    assert got.body == {"ids": [1, 2]}
    got.body["ids"].clear()
    transport.abandon(got)
    [again] = transport.receive(QUEUE, 1, 0)
    assert again.body == {"ids": [1, 2]}


@pytest.mark.parametrize("body", [{"at": datetime(2024, 1, 1)}, {"x": float("nan")}, {"s": {1, 2}}])
def test_a_body_the_database_could_not_store_is_refused(body: dict[str, Any]) -> None:
    transport = InMemoryTransport(clock=ManualClock())
    with pytest.raises((TypeError, ValueError)):
        transport.send([message("m1", body=body)])
    assert transport.pending_count() == 0


def test_pending_count_and_purge_settled() -> None:
    clock = ManualClock()
    transport = InMemoryTransport(clock=clock)
    transport.send([message("a"), message("b", delay=5), OutgoingMessage("jobs", "j", {})])
    assert (transport.pending_count(), transport.pending_count(QUEUE)) == (3, 2)
    [a] = transport.receive(QUEUE, 10, 0)
    transport.complete([a])
    assert transport.pending_count(QUEUE) == 1
    assert transport.purge_settled(0) == 0
    clock.advance(1)
    assert transport.purge_settled(0) == 1


def test_settled_ids_are_forgotten_after_the_window() -> None:
    clock = ManualClock()
    transport = InMemoryTransport(QueueConfig(duplicate_window_seconds=60), clock=clock)
    transport.send([message("a")])
    transport.complete(transport.receive(QUEUE, 1, 0))
    clock.advance(61)
    transport.send([message("other")])
    assert transport.purge_settled(0) == 0
    transport.send([message("a")])
    assert sorted(m.message_id for m in transport.receive(QUEUE, 10, 0)) == ["a", "other"]


def test_wake_lets_a_waiting_receiver_see_the_clock_move() -> None:
    clock = ManualClock()
    transport = InMemoryTransport(clock=clock)
    transport.send([message("later", delay=30)])
    thread, outcome = in_thread(lambda: transport.receive(QUEUE, 1, 10.0))
    time.sleep(0.2)
    clock.advance(31)
    transport.wake()
    thread.join(timeout=15)
    assert [m.message_id for m in outcome["got"]] == ["later"]
    assert outcome["elapsed"] < 2.0


def test_send_never_waits_for_a_waiting_receiver() -> None:
    transport = InMemoryTransport(clock=ManualClock())
    thread, outcome = in_thread(lambda: transport.receive(QUEUE, 1, 10.0))
    time.sleep(0.2)
    started = time.monotonic()
    transport.send([message("m1")])
    assert time.monotonic() - started < 0.1
    thread.join(timeout=15)
    assert [m.message_id for m in outcome["got"]] == ["m1"]


def test_close_releases_waiting_receivers() -> None:
    transport = InMemoryTransport(clock=ManualClock())
    thread, outcome = in_thread(lambda: transport.receive(QUEUE, 1, 10.0))
    time.sleep(0.2)
    transport.close()
    thread.join(timeout=15)
    assert outcome["got"] == []
    assert outcome["elapsed"] < 2.0


def test_config_is_validated() -> None:
    for bad in ({"lock_seconds": 0}, {"max_deliveries": 0}, {"duplicate_window_seconds": -1}):
        with pytest.raises(ValueError):
            QueueConfig(**bad)


sends = st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "e"]), st.sampled_from([0.0, 1.0, 5.0])), max_size=20)


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(sends, max_size=4))
def test_each_distinct_id_is_delivered_once_in_due_order(batches: list[list[tuple[str, float]]]) -> None:
    clock = ManualClock()
    transport = InMemoryTransport(clock=clock)
    for batch in batches:
        transport.send([message(i, delay) for i, delay in batch])
    clock.advance(10)
    received = transport.receive(QUEUE, 100, 0)
    first_delay: dict[str, float] = {}
    for batch in batches:
        for i, delay in batch:
            first_delay.setdefault(i, delay)
    assert sorted(m.message_id for m in received) == sorted(first_delay)
    delays = [first_delay[m.message_id] for m in received]
    assert delays == sorted(delays)
