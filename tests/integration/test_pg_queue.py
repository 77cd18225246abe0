"""PostgresQueue behaviour beyond the transport contract: LISTEN/NOTIFY wake-ups, purging, batching, errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from core.errors import TransportError
from core.ids import replay_message_id
from core.models import DeadLetterSelector, OutgoingMessage, ReceivedMessage
from infrastructure.postgres.database import Database
from infrastructure.postgres.queue import PostgresQueue
from infrastructure.queue_config import QueueConfig

QUEUE = "tasks"
MakeQueue = Callable[..., PostgresQueue]


def message(message_id: str, delay: float = 0.0) -> OutgoingMessage:
    return OutgoingMessage(QUEUE, message_id, {"id": message_id}, delay_seconds=delay)


@pytest.fixture
def make_queue(database: Database) -> Iterator[MakeQueue]:
    made: list[PostgresQueue] = []

    def make(**overrides: Any) -> PostgresQueue:
        config = QueueConfig(**{"lock_seconds": 60.0, **overrides})
        queue = PostgresQueue(database, lambda: database.connect(autocommit=True), config)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.close()


def timed_receive(queue: PostgresQueue, wait_seconds: float, outcome: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        started = time.monotonic()
        outcome["got"] = queue.receive(QUEUE, 1, wait_seconds)
        outcome["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def listening_backends(database: Database) -> int:
    with database.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_waiting_receiver_wakes_when_a_scheduled_message_falls_due(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.send([message("later", delay=0.6)])
    started = time.monotonic()
    [got] = queue.receive(QUEUE, 1, 10.0)
    assert got.message_id == "later"
    assert 0.5 <= time.monotonic() - started < 2.5


def test_waiting_receiver_wakes_when_a_lock_expires(make_queue: MakeQueue) -> None:
    queue = make_queue(lock_seconds=0.5)
    queue.send([message("m1")])
    [first] = queue.receive(QUEUE, 1, 0)
    started = time.monotonic()
    [second] = queue.receive(QUEUE, 1, 10.0)
    assert (second.message_id, second.delivery_count) == ("m1", 2)
    assert 0.4 <= time.monotonic() - started < 2.5
    assert second.lock_token != first.lock_token


def test_notifications_reach_other_instances_on_send_and_abandon(make_queue: MakeQueue) -> None:
    receiver, sender = make_queue(), make_queue()
    outcome: dict[str, Any] = {}
    thread = timed_receive(receiver, 10.0, outcome)
    time.sleep(0.3)
    sender.send([message("m1")])
    thread.join(timeout=15)
    assert [m.message_id for m in outcome["got"]] == ["m1"]
    assert outcome["elapsed"] < 2.0

    thread = timed_receive(receiver, 10.0, outcome)
    time.sleep(0.3)
    sender.abandon(outcome["got"][0])
    thread.join(timeout=15)
    assert [(m.message_id, m.delivery_count) for m in outcome["got"]] == [("m1", 2)]
    assert outcome["elapsed"] < 2.0


def test_an_exhausted_message_does_not_hide_the_next_one(make_queue: MakeQueue) -> None:
    queue = make_queue(max_deliveries=1)
    queue.send([message("a")])
    [a] = queue.receive(QUEUE, 1, 0)
    queue.abandon(a)
    queue.send([message("b")])
    assert [m.message_id for m in queue.receive(QUEUE, 1, 0)] == ["b"]
    [dead] = queue.list_dead_letters(DeadLetterSelector())
    assert (dead.message_id, dead.reason) == ("a", "MaxDeliveryCountExceeded")


def test_purge_settled_deletes_only_settled_rows_and_frees_their_ids(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.send([message("a"), message("b")])
    received = queue.receive(QUEUE, 2, 0)
    queue.complete([m for m in received if m.message_id == "a"])
    assert queue.purge_settled(3600) == 0
    assert queue.purge_settled(0) == 1
    queue.send([message("a")])
    [again] = queue.receive(QUEUE, 10, 0)
    assert (again.message_id, again.delivery_count) == ("a", 1)


def test_replay_many_dead_letters_in_batches(make_queue: MakeQueue, database: Database) -> None:
    queue = make_queue()
    with database.connection() as conn:
        conn.execute(
            "INSERT INTO dead_letters (queue, message_id, body, properties, reason) "
            "SELECT 'tasks', 'm' || i, jsonb_build_object('i', i), jsonb_build_object('job_id', 'J' || (i % 2)), "
            "'Boom' FROM generate_series(1, 1203) AS i"
        )
    assert len(queue.replay_dead_letters(DeadLetterSelector(), dry_run=True)) == 1203
    replayed = queue.replay_dead_letters(DeadLetterSelector(job_id="J1"))
    assert len(replayed) == 602
    assert len(queue.list_dead_letters(DeadLetterSelector(), limit=5000)) == 601

    received: list[ReceivedMessage] = []
    while batch := queue.receive(QUEUE, 500, 0):
        received.extend(batch)
    assert sorted(m.message_id for m in received) == sorted(replay_message_id(d.message_id, 1) for d in replayed)
    assert {m.properties["replay_count"] for m in received} == {1}


def test_close_releases_the_listen_connection(make_queue: MakeQueue, database: Database) -> None:
    queue = make_queue()
    assert queue.receive(QUEUE, 1, 0.1) == []
    assert listening_backends(database) == 1
    queue.close()
    deadline = time.monotonic() + 5
    while listening_backends(database) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listening_backends(database) == 0


def test_bad_input_is_a_permanent_transport_error(make_queue: MakeQueue) -> None:
    queue = make_queue()
    with pytest.raises(TransportError) as caught:
        queue.send([message("x" * 129)])
    assert caught.value.transient is False
    assert isinstance(caught.value.__cause__, psycopg.IntegrityError)


def test_connection_trouble_is_a_transient_transport_error(database_url: str) -> None:
    pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(database_url, min_size=1, open=True)
    pool.close()

    def refuse() -> psycopg.Connection[Any]:
        raise psycopg.OperationalError("connection refused")

    queue = PostgresQueue(pool, refuse, QueueConfig())
    with pytest.raises(TransportError) as caught:
        queue.send([message("m1")])
    assert caught.value.transient is True
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)

    with ConnectionPool(database_url, min_size=1, open=True) as live:
        queue = PostgresQueue(live, refuse, QueueConfig())
        with pytest.raises(TransportError) as caught:
            queue.receive(QUEUE, 1, 1.0)
        assert caught.value.transient is True
        assert queue.receive(QUEUE, 1, 0) == []


def test_a_claim_leaves_the_connections_commit_durability_as_it_was(database_url: str) -> None:
    """The claim turns synchronous_commit off for its own transaction only; the pooled connection keeps its
    setting for whatever it runs next."""

    def durable(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SET synchronous_commit = on")
        conn.commit()

    with ConnectionPool(database_url, min_size=1, max_size=1, configure=durable, open=True) as pool:
        queue = PostgresQueue(pool, None, QueueConfig())
        queue.send([message("m1")])
        [got] = queue.receive(QUEUE, 1, 0)
        assert got.message_id == "m1"
        with pool.connection() as conn:
            row = conn.execute("SHOW synchronous_commit").fetchone()
        assert row == ("on",)
        queue.close()
