"""A store whose database holds the queue settles the messages of the outcomes it records in the same commit:
a recorded outcome's message is never delivered again, and a message whose outcome did not commit is not
settled. Each settlement is guarded on the delivery's lock, as `Transport.complete` is."""

from __future__ import annotations

import uuid
from dataclasses import replace

import psycopg
import pytest

from core.models import JOBS_QUEUE, TASKS_QUEUE, ReceivedMessage
from core.outcomes import WIDE_STAGE_TASKS
from infrastructure.memory.store import InMemoryStore
from infrastructure.memory.transport import InMemoryTransport
from tests.contract.store_harness import Harness, done, plan


def receive_all(h: Harness, n: int) -> dict[str, ReceivedMessage]:
    received = {m.body["task_id"]: m for m in h.queue.receive(TASKS_QUEUE, n, 0)}
    assert len(received) == n
    return received


def given_back_and_received_again(h: Harness, held: list[ReceivedMessage]) -> set[str]:
    """Abandon every delivery still held (a settled one is not: nothing changes), then what comes back."""
    for message in held:
        h.queue.abandon(message)
    return {m.body["task_id"] for m in h.queue.receive(TASKS_QUEUE, len(held) + 1, 0)}


@pytest.mark.parametrize("width", [3, WIDE_STAGE_TASKS], ids=["small stage", "wide stage (counted)"])
def test_recorded_outcomes_settle_their_messages_in_the_same_commit(h: Harness, width: int) -> None:
    assert h.store.holds_queue
    job, claimed = h.started(n=width)
    received = receive_all(h, width)
    first, second = claimed[0], claimed[1]
    relocked = replace(received[second.task_id], lock_token=str(uuid.uuid4()))  # a lapsed lock, taken again

    h.store.record_outcomes([done(first, n=1), done(second, n=2)],
                            acknowledge=[received[first.task_id], relocked])

    assert h.counts(job.job_id)["completed"] == 2
    back = given_back_and_received_again(h, list(received.values()))
    assert back == {t.task_id for t in claimed[1:]}  # the second's delivery still held its lock: not settled


@pytest.mark.parametrize("width", [2, WIDE_STAGE_TASKS], ids=["small stage", "wide stage (counted)"])
def test_a_message_whose_outcome_is_refused_is_not_settled(h: Harness, width: int) -> None:
    job, claimed = h.started(n=width)
    received = receive_all(h, width)
    with pytest.raises((ValueError, psycopg.DataError)):  # JSON has no NaN: each adapter refuses it its own way
        h.store.record_outcomes([done(claimed[0]), replace(done(claimed[1]), result={"x": float("nan")})],
                                acknowledge=list(received.values()))

    assert h.counts(job.job_id).get("completed", 0) == 0
    assert given_back_and_received_again(h, list(received.values())) == {t.task_id for t in claimed}


def test_a_store_that_does_not_hold_the_queue_refuses_to_settle() -> None:
    store = InMemoryStore(InMemoryTransport(), holds_queue=False)
    message = ReceivedMessage(TASKS_QUEUE, "m", {}, {}, 1, str(uuid.uuid4()))
    with pytest.raises(ValueError, match="does not hold the queue"):
        store.record_outcomes([], acknowledge=[message])


def test_started_stages_settle_their_stage_messages_in_the_same_commit(h: Harness) -> None:
    """Two jobs' stage-1 messages, and a third whose stage already exists (a duplicate delivery): the commit that
    starts the stages settles all three, the duplicate's too (it creates nothing)."""
    first, second = h.new_job(tag="first"), h.new_job(tag="second")
    received = {m.body["job_id"]: m for m in h.queue.receive(JOBS_QUEUE, 3, 0)}
    assert set(received) == {first.job_id, second.job_id}
    assert h.store.start_stage(plan(second, 1, 2))  # the second job's stage exists: its message is a duplicate

    plans = [plan(first, 1, 2), plan(second, 1, 2)]
    assert h.store.start_stages(plans, acknowledge=[received[p.job_id] for p in plans]) == [True, False]

    for message in received.values():
        h.queue.abandon(message)
    assert h.queue.receive(JOBS_QUEUE, 3, 0) == []
    assert len(h.queue.receive(TASKS_QUEUE, 10, 0)) == 4


def test_stage_messages_need_one_per_plan(h: Harness) -> None:
    job = h.new_job()
    [message] = h.queue.receive(JOBS_QUEUE, 1, 0)
    with pytest.raises(ValueError, match="one message per plan"):
        h.store.start_stages([plan(job, 1, 1)], acknowledge=[message, message])
