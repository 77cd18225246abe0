"""The PostgreSQL queue's LISTEN wake-ups under concurrency, on a real server with real NOTIFY: none is lost, one
message wakes one waiting thread, a burst spreads over all of them, a lost connection is re-opened."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from core.models import OutgoingMessage, ReceivedMessage
from infrastructure.postgres.database import Database
from infrastructure.postgres.listener import QueueListener
from infrastructure.postgres.queue import PostgresQueue
from infrastructure.queue_config import QueueConfig

QUEUE = "tasks"
MakeQueue = Callable[[], PostgresQueue]
Claim = Callable[[str, int], tuple[list[ReceivedMessage], int, float | None]]


def message(message_id: str) -> OutgoingMessage:
    return OutgoingMessage(QUEUE, message_id, {"id": message_id})


@pytest.fixture
def make_queue(database: Database) -> Iterator[MakeQueue]:
    made: list[PostgresQueue] = []

    def make() -> PostgresQueue:
        queue = PostgresQueue(database, lambda: database.connect(autocommit=True), QueueConfig(lock_seconds=60.0))
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.close()


class CountedClaims:
    """Wraps a queue's claim (its one round trip to look at the queue) to count the claims and run a hook."""

    def __init__(self, queue: PostgresQueue, after: Callable[[int], None] = lambda n: None) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._claim: Claim = queue._claim
        self._after = after
        queue._claim = self  # type: ignore[method-assign]

    def __call__(self, queue: str, max_messages: int) -> tuple[list[ReceivedMessage], int, float | None]:
        result = self._claim(queue, max_messages)
        with self._lock:
            self.count += 1
            number = self.count
        self._after(number)
        return result


def receivers(queue: PostgresQueue, count: int, max_messages: int, wait_seconds: float) -> list[dict[str, Any]]:
    """Start `count` threads that each receive once; each outcome gets "got" and "elapsed" when it returns."""
    outcomes: list[dict[str, Any]] = [{} for _ in range(count)]

    def run(outcome: dict[str, Any]) -> None:
        started = time.monotonic()
        outcome["got"] = queue.receive(QUEUE, max_messages, wait_seconds)
        outcome["elapsed"] = time.monotonic() - started

    for outcome in outcomes:
        outcome["thread"] = threading.Thread(target=run, args=(outcome,), daemon=True)
        outcome["thread"].start()
    return outcomes


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_notification_between_mark_and_wait_wakes_the_waiter(database: Database) -> None:
    listener = QueueListener(lambda: database.connect(autocommit=True))
    try:
        mark = listener.mark(QUEUE)
        assert listener.wait(QUEUE, mark, 0.2) is False
        with database.connection() as conn:
            conn.execute("SELECT pg_notify('coremachine_queue', %s)", (QUEUE,))
        time.sleep(0.3)  # delivered and counted before the waiter starts to wait
        started = time.monotonic()
        assert listener.wait(QUEUE, mark, 10.0) is True
        assert time.monotonic() - started < 0.5
        assert listener.wait(QUEUE, mark, 0.2) is False, "one notification is one wake-up"
    finally:
        listener.close()


def test_a_message_sent_between_the_empty_claim_and_the_wait_is_received_at_once(make_queue: MakeQueue) -> None:
    queue, sender = make_queue(), make_queue()

    def send_after_the_first_claim(number: int) -> None:
        if number == 1:
            sender.send([message("late")])
            time.sleep(0.3)  # its notification is read before the receiver waits

    CountedClaims(queue, send_after_the_first_claim)
    started = time.monotonic()
    [got] = queue.receive(QUEUE, 8, 10.0)
    assert got.message_id == "late"
    assert time.monotonic() - started < 2.0


def test_one_message_wakes_one_of_the_waiting_threads(make_queue: MakeQueue) -> None:
    queue, sender = make_queue(), make_queue()
    claims = CountedClaims(queue)
    outcomes = receivers(queue, 4, max_messages=8, wait_seconds=10.0)
    wait_until(lambda: claims.count == 4)
    time.sleep(0.3)
    sender.send([message("only")])
    wait_until(lambda: any("got" in outcome for outcome in outcomes))
    time.sleep(0.5)
    assert claims.count == 5, "only one waiting thread looked at the queue"
    [woken] = [outcome for outcome in outcomes if "got" in outcome]
    assert [m.message_id for m in woken["got"]] == ["only"]
    assert woken["elapsed"] < 3.0
    queue.close()
    for outcome in outcomes:
        outcome["thread"].join(timeout=5)
        assert not outcome["thread"].is_alive()


def test_one_message_wakes_one_thread_per_listening_process(make_queue: MakeQueue) -> None:
    first, second, sender = make_queue(), make_queue(), make_queue()
    claims = [CountedClaims(first), CountedClaims(second)]
    outcomes = receivers(first, 3, 8, 10.0) + receivers(second, 3, 8, 10.0)
    wait_until(lambda: [c.count for c in claims] == [3, 3])
    time.sleep(0.3)
    sender.send([message("only")])
    wait_until(lambda: all(c.count >= 4 for c in claims))
    time.sleep(0.5)
    woken = [c.count - 3 for c in claims]
    assert woken == [1, 1], f"each listener woke exactly one of its three threads: {woken}"
    received = [m.message_id for outcome in outcomes for m in outcome.get("got", [])]
    assert received == ["only"]


def test_a_burst_spreads_over_every_waiting_thread(make_queue: MakeQueue) -> None:
    queue, sender = make_queue(), make_queue()
    claims = CountedClaims(queue)
    outcomes = receivers(queue, 4, max_messages=2, wait_seconds=10.0)
    wait_until(lambda: claims.count == 4)
    time.sleep(0.3)
    sender.send([message(f"m{i}") for i in range(8)])  # one transaction: one notification
    for outcome in outcomes:
        outcome["thread"].join(timeout=15)
    assert [len(outcome["got"]) for outcome in outcomes] == [2, 2, 2, 2]
    received = sorted(m.message_id for outcome in outcomes for m in outcome["got"])
    assert received == [f"m{i}" for i in range(8)]
    assert max(outcome["elapsed"] for outcome in outcomes) < 3.0


def test_no_message_waits_for_a_timeout_under_concurrent_receivers(make_queue: MakeQueue) -> None:
    """Receivers loop while messages arrive one by one at random moments: whatever instant a message lands
    (during a claim, between a claim and a wait, during a hand-over of a wake-up), it is taken long before the
    receivers' 5 s wait would have run out."""
    queue, sender = make_queue(), make_queue()
    total = 60
    sent_at: dict[str, float] = {}
    latency: dict[str, float] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def receive_loop() -> None:
        while not stop.is_set():
            for got in queue.receive(QUEUE, random.choice([1, 2]), 5.0):
                with lock:
                    latency[got.message_id] = time.monotonic() - sent_at[got.message_id]
                queue.complete([got])

    threads = [threading.Thread(target=receive_loop, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    rng = random.Random(7)
    for i in range(total):
        with lock:
            sent_at[f"m{i}"] = time.monotonic()
        sender.send([message(f"m{i}")])
        time.sleep(rng.uniform(0.0, 0.03))
    wait_until(lambda: len(latency) == total, timeout=20)
    stop.set()
    queue.close()
    for thread in threads:
        thread.join(timeout=10)
    assert max(latency.values()) < 2.0


def test_a_lost_listen_connection_is_reopened_and_waiters_look_again(
    make_queue: MakeQueue, database: Database
) -> None:
    queue, sender = make_queue(), make_queue()
    assert queue.receive(QUEUE, 1, 0.1) == []
    with database.connection() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
        )
    outcomes = receivers(queue, 1, 1, 10.0)
    time.sleep(0.5)
    sender.send([message("after")])
    outcomes[0]["thread"].join(timeout=15)
    assert [m.message_id for m in outcomes[0]["got"]] == ["after"]
    assert outcomes[0]["elapsed"] < 3.0


def test_a_message_another_claim_holds_does_not_make_a_receiver_poll(
    make_queue: MakeQueue, database: Database
) -> None:
    """The loser of a race for a message skips its locked row and sleeps on LISTEN: the winner takes it, and a
    release would notify."""
    queue, sender = make_queue(), make_queue()
    sender.send([message("contested")])
    claims = CountedClaims(queue)
    with database.connection() as conn:
        conn.execute("SELECT id FROM queue_messages WHERE message_id = 'contested' FOR UPDATE")
        started = time.monotonic()
        assert queue.receive(QUEUE, 1, 0.6) == []
        assert time.monotonic() - started >= 0.5
        assert claims.count == 2, "one look before the wait, one when it ran out"
    [got] = queue.receive(QUEUE, 1, 0)
    assert got.message_id == "contested"
