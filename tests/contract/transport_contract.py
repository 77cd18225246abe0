"""TransportContract: the Service Bus semantics every Transport adapter must show, subclassed per adapter.

A subclass provides three fixtures:
- `make_transport(**overrides)`: a new transport on a fresh queue store; overrides are `QueueConfig` fields
  (lock_seconds, max_deliveries, duplicate_window_seconds). Without overrides the lock must outlast any test.
- `tick`: a short time unit the adapter can afford to wait for (real seconds, or a fake clock's).
- `advance(seconds)`: let that much time pass for the transports (sleep, or move a fake clock).
`wait_seconds` is always real time.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from core.errors import TransportError
from core.ids import replay_message_id
from core.models import DeadLetter, DeadLetterSelector, OutgoingMessage, ReceivedMessage
from core.ports import Transport

QUEUE = "tasks"
OTHER_QUEUE = "jobs"
MakeTransport = Callable[..., Transport]
Advance = Callable[[float], None]


def message(message_id: str, queue: str = QUEUE, delay: float = 0.0, **properties: str | int) -> OutgoingMessage:
    return OutgoingMessage(
        queue=queue, message_id=message_id, body={"id": message_id}, properties=properties, delay_seconds=delay
    )


def ids(messages: list[ReceivedMessage] | list[DeadLetter]) -> list[str]:
    return [m.message_id for m in messages]


def dead_letter_one(transport: Transport, outgoing: OutgoingMessage, reason: str = "Boom") -> DeadLetter:
    transport.send([outgoing])
    [received] = transport.receive(outgoing.queue, 1, 0)
    assert received.message_id == outgoing.message_id
    transport.dead_letter(received, reason, f"{outgoing.message_id} broke")
    dead = transport.list_dead_letters(DeadLetterSelector(), limit=1000)[-1]
    assert dead.message_id == outgoing.message_id
    return dead


class TransportContract:
    def test_send_receive_complete(self, make_transport: MakeTransport, tick: float, advance: Advance) -> None:
        transport = make_transport(lock_seconds=tick)
        transport.send([message("m1", job_id="j1", attempt=1), message("other", queue=OTHER_QUEUE)])

        [got] = transport.receive(QUEUE, 10, 0)
        assert (got.queue, got.message_id, got.body) == (QUEUE, "m1", {"id": "m1"})
        assert got.properties == {"job_id": "j1", "attempt": 1}
        assert got.delivery_count == 1
        assert got.lock_token
        assert got.enqueued_at is not None
        transport.complete([got])

        advance(tick * 1.5)
        assert transport.receive(QUEUE, 10, 0) == []
        assert ids(transport.receive(OTHER_QUEUE, 10, 0)) == ["other"]

    def test_send_nothing_and_complete_nothing(self, make_transport: MakeTransport) -> None:
        transport = make_transport()
        transport.send([])
        transport.complete([])
        assert transport.receive(QUEUE, 10, 0) == []

    def test_empty_receive_honours_wait_seconds(self, make_transport: MakeTransport) -> None:
        transport = make_transport()
        started = time.monotonic()
        assert transport.receive(QUEUE, 10, 0) == []
        assert time.monotonic() - started < 0.5
        started = time.monotonic()
        assert transport.receive(QUEUE, 10, 0.4) == []
        elapsed = time.monotonic() - started
        assert 0.35 <= elapsed < 2.0

    def test_receive_returns_at_most_max_messages_oldest_first(self, make_transport: MakeTransport) -> None:
        transport = make_transport()
        transport.send([message(f"m{i}") for i in range(5)])
        assert ids(transport.receive(QUEUE, 3, 0)) == ["m0", "m1", "m2"]
        assert ids(transport.receive(QUEUE, 10, 0)) == ["m3", "m4"]
        assert transport.receive(QUEUE, 10, 0) == []

    def test_abandon_redelivers_with_delivery_count_incremented(self, make_transport: MakeTransport) -> None:
        transport = make_transport()
        transport.send([message("m1")])
        [first] = transport.receive(QUEUE, 1, 0)
        assert transport.receive(QUEUE, 1, 0) == []
        transport.abandon(first)
        [second] = transport.receive(QUEUE, 1, 0)
        assert second.message_id == "m1"
        assert second.delivery_count == 2
        assert second.lock_token != first.lock_token

    def test_release_hands_back_unstarted_messages_at_once_uncounted(self, make_transport: MakeTransport) -> None:
        transport = make_transport(max_deliveries=2)
        transport.send([message("m1"), message("m2")])
        held = transport.receive(QUEUE, 2, 0)
        assert transport.receive(QUEUE, 2, 0) == []
        if not transport.releases_uncounted:
            with pytest.raises(TransportError) as refused:
                transport.release(held)
            assert not refused.value.transient
            assert transport.receive(QUEUE, 2, 0) == []  # refused: still held, nothing counted
            transport.complete(held)
            return
        for _ in range(3):  # past max_deliveries if releases counted
            transport.release(held)
            held = transport.receive(QUEUE, 2, 0)
            assert sorted(ids(held)) == ["m1", "m2"]
        assert {m.delivery_count for m in held} == {1}
        transport.complete(held)
        assert transport.receive(QUEUE, 2, 0) == []

    def test_renewing_a_lock_keeps_the_message_held(
        self, make_transport: MakeTransport, tick: float, advance: Advance
    ) -> None:
        transport = make_transport(lock_seconds=tick * 2)
        transport.send([message("m1")])
        [held] = transport.receive(QUEUE, 1, 0)
        for _ in range(3):  # held three times longer than one lock, renewed every half lock
            advance(tick)
            transport.renew_locks([held])
            assert transport.receive(QUEUE, 1, 0) == []
        transport.complete([held])
        advance(tick * 3)
        assert transport.receive(QUEUE, 1, 0) == []

    def test_abandon_with_delay(self, make_transport: MakeTransport, tick: float, advance: Advance) -> None:
        transport = make_transport()
        transport.send([message("m1")])
        [first] = transport.receive(QUEUE, 1, 0)
        transport.abandon(first, delay_seconds=tick * 2)
        assert transport.receive(QUEUE, 1, 0) == []
        advance(tick * 2.5)
        [again] = transport.receive(QUEUE, 1, 0)
        assert again.delivery_count == 2

    def test_lock_expiry_redelivers(self, make_transport: MakeTransport, tick: float, advance: Advance) -> None:
        transport = make_transport(lock_seconds=tick)
        transport.send([message("m1")])
        [first] = transport.receive(QUEUE, 1, 0)
        assert transport.receive(QUEUE, 1, 0) == []
        advance(tick * 1.5)
        [second] = transport.receive(QUEUE, 1, 0)
        assert (second.message_id, second.delivery_count) == ("m1", 2)
        assert second.lock_token != first.lock_token

    def test_settling_after_the_lock_was_lost_is_a_no_op(
        self, make_transport: MakeTransport, tick: float, advance: Advance
    ) -> None:
        transport = make_transport(lock_seconds=tick)
        transport.send([message("m1")])
        [stale] = transport.receive(QUEUE, 1, 0)
        advance(tick * 1.5)
        [current] = transport.receive(QUEUE, 1, 0)

        transport.renew_locks([stale])
        transport.complete([stale])
        transport.dead_letter(stale, "Late", "the lock had moved on")
        transport.abandon(stale)
        assert transport.receive(QUEUE, 1, 0) == []
        assert transport.list_dead_letters(DeadLetterSelector()) == []

        transport.abandon(current)
        [third] = transport.receive(QUEUE, 1, 0)
        assert third.delivery_count == 3
        transport.complete([third])
        assert transport.receive(QUEUE, 1, 0) == []

    def test_max_deliveries_moves_the_message_to_the_dead_letters(self, make_transport: MakeTransport) -> None:
        transport = make_transport(max_deliveries=2)
        transport.send([message("m1", job_id="j1", task_type="alpha")])
        for attempt in (1, 2):
            received = transport.receive(QUEUE, 1, 0)
            assert [(m.message_id, m.delivery_count) for m in received] == [("m1", attempt)]
            transport.abandon(received[0])
        assert transport.receive(QUEUE, 1, 0) == []

        transport.send([message("m2")])
        assert ids(transport.receive(QUEUE, 1, 0)) == ["m2"]
        [dead] = transport.list_dead_letters(DeadLetterSelector())
        assert (dead.queue, dead.message_id, dead.reason) == (QUEUE, "m1", "MaxDeliveryCountExceeded")
        assert dead.body == {"id": "m1"}
        assert dead.properties == {"job_id": "j1", "task_type": "alpha"}
        assert dead.delivery_count == 2
        assert dead.dead_lettered_at is not None
        assert transport.receive(QUEUE, 1, 0) == []

    def test_dead_letter_keeps_reason_and_description(self, make_transport: MakeTransport) -> None:
        transport = make_transport()
        transport.send([message("m1", job_id="j1")])
        [got] = transport.receive(QUEUE, 1, 0)
        transport.dead_letter(got, "ValidationError", "field x: must be positive")
        assert transport.receive(QUEUE, 1, 0) == []

        [dead] = transport.list_dead_letters(DeadLetterSelector())
        assert (dead.reason, dead.description) == ("ValidationError", "field x: must be positive")
        assert (dead.message_id, dead.delivery_count, dead.replay_count) == ("m1", 1, 0)
        assert transport.get_dead_letter(dead.id) == dead
        assert transport.get_dead_letter("987654321") is None
        assert transport.get_dead_letter("not-an-id") is None
        assert transport.get_dead_letter("99999999999999999999999") is None

    def test_scheduled_message_is_invisible_until_due(
        self, make_transport: MakeTransport, tick: float, advance: Advance
    ) -> None:
        transport = make_transport()
        transport.send([message("later", delay=tick * 2), message("now")])
        assert ids(transport.receive(QUEUE, 10, 0)) == ["now"]
        advance(tick * 2.5)
        [later] = transport.receive(QUEUE, 10, 0)
        assert (later.message_id, later.delivery_count) == ("later", 1)

    def test_continuations_come_before_earlier_messages(
        self, make_transport: MakeTransport, tick: float, advance: Advance
    ) -> None:
        """A message that moves a started job on is handed out before unmarked messages sent earlier, and handed
        back unstarted it keeps that place; delayed, it still waits for its due time. (Service Bus overrides this:
        its queues are first in, first out.)"""
        transport = make_transport()
        transport.send([message("start-1"), message("start-2")])
        transport.send([replace(message("next-stage"), continues_job=True),
                        replace(message("retry-later", delay=tick * 2), continues_job=True)])
        [first] = transport.receive(QUEUE, 1, 0)
        assert first.message_id == "next-stage"
        transport.release([first])
        assert ids(transport.receive(QUEUE, 10, 0)) == ["next-stage", "start-1", "start-2"]
        advance(tick * 2.5)
        assert ids(transport.receive(QUEUE, 10, 0)) == ["retry-later"]

    def test_duplicate_message_id_is_dropped_within_the_window(
        self, make_transport: MakeTransport, tick: float, advance: Advance
    ) -> None:
        transport = make_transport(duplicate_window_seconds=tick * 2)
        first = OutgoingMessage(QUEUE, "m1", {"v": 1})
        transport.send([first, OutgoingMessage(QUEUE, "m1", {"v": 2})])
        transport.send([OutgoingMessage(QUEUE, "m1", {"v": 3})])
        [got] = transport.receive(QUEUE, 10, 0)
        assert got.body == {"v": 1}
        transport.complete([got])

        transport.send([OutgoingMessage(QUEUE, "m1", {"v": 4})])
        assert transport.receive(QUEUE, 10, 0) == []

        advance(tick * 2.5)
        transport.send([OutgoingMessage(QUEUE, "m1", {"v": 5})])
        [again] = transport.receive(QUEUE, 10, 0)
        assert (again.body, again.delivery_count) == ({"v": 5}, 1)

    def test_list_dead_letters_by_selector(self, make_transport: MakeTransport) -> None:
        transport = make_transport()
        a = dead_letter_one(transport, message("a", job_id="J1", task_type="alpha"), reason="Boom")
        b = dead_letter_one(transport, message("b", job_id="J1", task_type="beta"), reason="Other")
        c = dead_letter_one(transport, message("c", job_id="J2", task_type="alpha"), reason="Boom")
        d = dead_letter_one(transport, message("d", queue=OTHER_QUEUE, job_id="J2"), reason="Boom")

        def listed(**fields: Any) -> list[str]:
            return ids(transport.list_dead_letters(DeadLetterSelector(**fields)))

        assert listed() == ["a", "b", "c", "d"]
        assert listed(job_id="J1") == ["a", "b"]
        assert listed(task_type="alpha") == ["a", "c"]
        assert listed(reason="Boom") == ["a", "c", "d"]
        assert listed(queue=OTHER_QUEUE) == ["d"]
        assert listed(ids=(a.id, c.id)) == ["a", "c"]
        assert listed(ids=(b.id, c.id), job_id="J2") == ["c"]
        assert listed(ids=("987654321",)) == []
        assert listed(job_id="nobody") == []

        page = transport.list_dead_letters(DeadLetterSelector(), limit=2)
        assert ids(page) == ["a", "b"]
        assert ids(transport.list_dead_letters(DeadLetterSelector(), limit=2, after=page[-1].id)) == ["c", "d"]
        assert transport.list_dead_letters(DeadLetterSelector(), after=d.id) == []

    def test_replay_sends_under_a_new_id_and_removes_the_dead_letter(self, make_transport: MakeTransport) -> None:
        transport = make_transport()
        a = dead_letter_one(transport, message("t:x:a1", job_id="J1", task_type="alpha"))
        c = dead_letter_one(transport, message("c", job_id="J2"))

        replayed = transport.replay_dead_letters(DeadLetterSelector(job_id="J1"))
        assert replayed == [a]
        assert ids(transport.list_dead_letters(DeadLetterSelector())) == ["c"]

        [got] = transport.receive(QUEUE, 10, 0)
        assert got.message_id == replay_message_id("t:x:a1", 1)
        assert got.body == a.body
        assert got.properties == {"job_id": "J1", "task_type": "alpha", "replay_count": 1}
        assert got.delivery_count == 1

        transport.dead_letter(got, "Boom", "again")
        again = transport.list_dead_letters(DeadLetterSelector(job_id="J1"))
        assert [d.replay_count for d in again] == [1]
        transport.replay_dead_letters(DeadLetterSelector(ids=(again[0].id,)))
        [second] = transport.receive(QUEUE, 10, 0)
        assert second.message_id == replay_message_id("t:x:a1", 2)
        assert second.properties["replay_count"] == 2
        assert transport.get_dead_letter(c.id) == c

    def test_replay_dry_run_changes_nothing(self, make_transport: MakeTransport) -> None:
        transport = make_transport()
        a = dead_letter_one(transport, message("a", job_id="J1"))
        b = dead_letter_one(transport, message("b", job_id="J2"))
        assert transport.replay_dead_letters(DeadLetterSelector(), dry_run=True) == [a, b]
        assert transport.replay_dead_letters(DeadLetterSelector(job_id="J2"), dry_run=True) == [b]
        assert transport.list_dead_letters(DeadLetterSelector()) == [a, b]
        assert transport.receive(QUEUE, 10, 0) == []

    def test_replay_everything(self, make_transport: MakeTransport) -> None:
        transport = make_transport()
        dead_letter_one(transport, message("a"))
        dead_letter_one(transport, message("b", queue=OTHER_QUEUE))
        assert ids(transport.replay_dead_letters(DeadLetterSelector())) == ["a", "b"]
        assert transport.list_dead_letters(DeadLetterSelector()) == []
        assert ids(transport.receive(QUEUE, 10, 0)) == [replay_message_id("a", 1)]
        assert ids(transport.receive(OTHER_QUEUE, 10, 0)) == [replay_message_id("b", 1)]

    def test_purge_dead_letters(self, make_transport: MakeTransport) -> None:
        transport = make_transport()
        dead_letter_one(transport, message("a", job_id="J1"))
        dead_letter_one(transport, message("b", job_id="J1"), reason="Other")
        c = dead_letter_one(transport, message("c", job_id="J2"))
        assert transport.purge_dead_letters(DeadLetterSelector(job_id="J1", reason="Other")) == 1
        assert transport.purge_dead_letters(DeadLetterSelector(job_id="J1")) == 1
        assert transport.list_dead_letters(DeadLetterSelector()) == [c]
        assert transport.purge_dead_letters(DeadLetterSelector(ids=("987654321",))) == 0
        assert transport.purge_dead_letters(DeadLetterSelector()) == 1
        assert transport.list_dead_letters(DeadLetterSelector()) == []

    def test_concurrent_consumers_never_share_a_locked_message(self, make_transport: MakeTransport) -> None:
        transport = make_transport()
        sent = [f"m{i}" for i in range(80)]
        transport.send([message(i) for i in sent])
        received: list[ReceivedMessage] = []
        lock = threading.Lock()

        def consume() -> None:
            idle = 0
            while idle < 2:
                got = transport.receive(QUEUE, 3, 0.2)
                idle = 0 if got else idle + 1
                with lock:
                    received.extend(got)

        threads = [threading.Thread(target=consume) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        counts = Counter(ids(received))
        assert [i for i, n in counts.items() if n > 1] == []
        assert sorted(counts) == sorted(sent)
        transport.complete(received)
        assert transport.receive(QUEUE, 10, 0) == []

    def test_waiting_receiver_wakes_promptly_on_send(self, make_transport: MakeTransport) -> None:
        transport = make_transport()
        outcome: dict[str, Any] = {}

        def wait() -> None:
            started = time.monotonic()
            outcome["got"] = transport.receive(QUEUE, 1, 10.0)
            outcome["elapsed"] = time.monotonic() - started

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.3)
        transport.send([message("late")])
        waiter.join(timeout=15)
        assert ids(outcome["got"]) == ["late"]
        assert outcome["elapsed"] < 2.0
