"""A wide stage's task messages carry several tasks each: every task still runs once, each message gets one
settlement, a task given back makes its message come back, and a batch delivered again is split into one message
per task so that a poison task fails alone (in-memory store and queue; `tests/integration/test_task_batches.py`
runs the same on PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest

from core.batching import message_weight
from core.engine import CoreMachine
from core.errors import TransientError
from core.jobs import JobRegistry
from core.models import (
    JOBS_QUEUE,
    TASKS_QUEUE,
    DeadLetterSelector,
    JobStatus,
    OutgoingMessage,
    ReceivedMessage,
    TaskStatus,
)
from core.ports import NullRelay
from core.registry import TaskContext
from core.settlement import Disposition, Settlement, combined, complete, dead_letter, give_back, recorded
from core.worker import Worker, WorkerConfig
from infrastructure.memory.store import InMemoryStore
from infrastructure.memory.transport import InMemoryTransport
from tests.unit.helpers import Harness, Probe, ProbeHandlers, RefusingStore, task_registry

pytestmark = pytest.mark.timeout(30)

N = 320  # 64 messages of 5 tasks (a stage keeps at least 64 messages)


def started(h: Harness, n: int = N, job_type: str = "probe_continue") -> str:
    job_id = h.engine.submit(job_type, {"n": n}).job.job_id
    h.settle(h.engine.handle_job_messages(h.transport.receive(JOBS_QUEUE, 1, 0)))
    return job_id


def counts(messages: Sequence[ReceivedMessage]) -> list[int]:
    return [m.body.get("count", 1) for m in messages if m.queue == TASKS_QUEUE]


@pytest.mark.parametrize("duplicate", [False, True], ids=["once", "every batch handled twice"])
def test_every_task_of_a_wide_stage_runs_once_from_messages_of_several_tasks(duplicate: bool) -> None:
    h = Harness(tasks_per_message=16)
    job = h.run("probe", {"n": N}, duplicate=duplicate)
    assert job.status is JobStatus.COMPLETED
    assert job.result == {"outcome": "completed", "total": sum(i * i for i in range(N)), "squares": N}
    assert len(h.probe.calls) == N + 1 and set(h.probe.calls.values()) == {1}
    assert h.transport.pending_count() == 0


def test_a_stage_is_sent_as_one_message_per_batch() -> None:
    h = Harness(tasks_per_message=16)
    started(h)
    messages = h.transport.receive(TASKS_QUEUE, 1000, 0)
    assert counts(messages) == [5] * 64


def test_a_poison_outcome_in_a_batch_fails_alone_and_the_message_is_completed_once_all_are_recorded() -> None:
    h = Harness()
    h.store = RefusingStore(h.transport, clock=h.now, tasks_per_message=16)
    h.engine = h.engine_with(h.probe.handlers())
    job_id = started(h)
    [first] = [m for m in h.transport.receive(TASKS_QUEUE, 1000, 0) if m.body["first"] == 0]
    [settlement] = h.engine.handle_task_messages([first])
    # Recorded one by one: no single commit recorded the whole message, so the consumer completes it.
    assert settlement.disposition is Disposition.COMPLETE
    h.settle([settlement])
    h.clock.advance(3600)  # the other messages' locks lapse
    h.drain()
    snapshot = h.store.snapshot(job_id, events=10)
    assert snapshot is not None and snapshot.job.status is JobStatus.COMPLETED_WITH_ERRORS
    [poisoned] = snapshot.recent_errors
    assert poisoned.task_id.endswith("-s1-t1") and poisoned.status is TaskStatus.FAILED
    assert set(h.probe.calls.values()) == {1} and h.transport.pending_count() == 0


def test_a_task_given_back_brings_its_message_back_split_and_only_that_task_runs_again() -> None:
    class ClaimRefusingStore(InMemoryStore):
        refuse = True

        def claim_tasks(self, task_ids: Sequence[str], worker_id: str, lease_seconds: float | None = None) -> Any:
            if self.refuse and any(t.endswith("-s1-t3") for t in task_ids):
                raise RuntimeError("claim exploded")
            return super().claim_tasks(task_ids, worker_id, lease_seconds)

    h = Harness()
    store = ClaimRefusingStore(h.transport, clock=h.now, tasks_per_message=16)
    h.store = store
    h.engine = h.engine_with(h.probe.handlers())
    job_id = started(h)
    [first] = [m for m in h.transport.receive(TASKS_QUEUE, 1000, 0) if m.body["first"] == 0]
    [settlement] = h.engine.handle_task_messages([first])
    assert settlement.disposition is Disposition.ABANDON  # not settled by the commit of its other four tasks
    assert h.store.stage_counts(job_id)[1]["completed"] == 4
    store.refuse = False
    h.settle([settlement])
    h.clock.advance(3600)
    seen = h.drain()
    split = [m for m in seen if m.message_id.startswith(f"{first.message_id}/")]
    assert len(split) == 5 and counts(split) == [1] * 5  # delivered again: one message per task
    assert h.job(job_id).status is JobStatus.COMPLETED
    assert set(h.probe.calls.values()) == {1} and h.transport.pending_count() == 0


@pytest.mark.parametrize("holds_queue", [True, False])
def test_a_batch_delivered_again_is_split_into_one_message_per_task(holds_queue: bool) -> None:
    h = Harness()
    h.store = InMemoryStore(h.transport, clock=h.now, holds_queue=holds_queue, tasks_per_message=16)
    h.engine = h.engine_with(h.probe.handlers())
    job_id = started(h)
    [first] = [m for m in h.transport.receive(TASKS_QUEUE, 1000, 0) if m.body["first"] == 0]
    h.transport.abandon(first)  # a worker died running it, say
    [again] = [m for m in h.transport.receive(TASKS_QUEUE, 1000, 0) if m.message_id == first.message_id]
    assert again.delivery_count == 2
    [settlement] = h.engine.handle_task_messages([again])
    assert settlement.disposition is (Disposition.SETTLED if holds_queue else Disposition.COMPLETE)
    assert h.probe.calls == {}  # nothing ran: its tasks go out again one per message
    h.settle([settlement])
    singles = [m for m in h.transport.receive(TASKS_QUEUE, 1000, 0) if m.message_id.startswith(first.message_id)]
    assert sorted(m.body["task_id"] for m in singles) == sorted(f"{job_id}-s1-t{i}" for i in range(5))
    h.clock.advance(3600)
    h.drain()
    assert h.job(job_id).status is JobStatus.COMPLETED and set(h.probe.calls.values()) == {1}


def test_one_settlement_per_message_whatever_its_tasks_got() -> None:
    h = Harness(tasks_per_message=16)
    started(h)
    a, b, c, d, e = h.transport.receive(TASKS_QUEUE, 5, 0)
    fates = [complete(a), complete(a), recorded(b, True), give_back(b, "x"), give_back(c, "x"),
             complete(c), complete(d), dead_letter(e, "Bad", "bad"), complete(e)]
    merged = combined(fates)
    assert [(s.message.message_id, s.disposition) for s in merged] == [
        (a.message_id, Disposition.COMPLETE), (b.message_id, Disposition.SETTLED),
        (c.message_id, Disposition.ABANDON), (d.message_id, Disposition.COMPLETE),
        (e.message_id, Disposition.DEAD_LETTER)]
    later = Settlement(c, Disposition.ABANDON, "y", delay_seconds=99.0)
    assert combined([give_back(c, "x"), later]) == [later]  # the longest delay


def test_a_batch_of_an_unknown_task_type_is_one_dead_letter_and_a_failed_split_is_given_back() -> None:
    class SplitRefusingStore(InMemoryStore):
        def replace_message(self, message: ReceivedMessage, messages: Sequence[Any]) -> None:
            raise RuntimeError("database went away")

    h = Harness()
    h.store = SplitRefusingStore(h.transport, clock=h.now, tasks_per_message=16)
    h.engine = h.engine_with(h.probe.handlers())
    started(h)
    first, second = h.transport.receive(TASKS_QUEUE, 2, 0)
    [given_back] = h.engine.split_task_messages([first])
    assert given_back.disposition is Disposition.ABANDON and given_back.delay_seconds > 0
    [dead] = h.engine_with({}).split_task_messages([second])  # a worker without the handler
    assert dead.disposition is Disposition.DEAD_LETTER and dead.reason == "UnknownTaskType"
    h.settle([dead])
    assert [d.message_id for d in h.transport.list_dead_letters(DeadLetterSelector())] == [second.message_id]


class SplitCountingStore(InMemoryStore):
    splits = 0

    def replace_message(self, message: ReceivedMessage, messages: Sequence[Any]) -> None:
        self.splits += 1
        super().replace_message(message, messages)


@pytest.mark.parametrize("slow", [False, True], ids=["fast tasks", "slow tasks"])
def test_a_fresh_worker_runs_batches_of_fast_tasks_whole_and_splits_those_of_slow_ones(slow: bool) -> None:
    transport = InMemoryTransport()
    store = SplitCountingStore(transport, tasks_per_message=16)
    handlers = ProbeHandlers()
    if slow:
        square = handlers.square

        def slow_square(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
            time.sleep(0.02)
            return square(params, context)

        handlers.square = slow_square  # type: ignore[method-assign]
    engine = CoreMachine(store, NullRelay(), JobRegistry([Probe()]), task_registry(handlers.handlers()), "w")
    batches: list[int] = []
    handle = engine.handle_task_messages

    def counted(messages: Sequence[ReceivedMessage], resume: Any = None) -> list[Settlement]:
        batches.append(sum(message_weight(m) for m in messages))
        return handle(messages, resume)

    engine.handle_task_messages = counted  # type: ignore[method-assign]
    n = 256 if slow else 2048  # 64 messages of 4, or 128 of 16
    job_id = engine.submit("probe", {"n": n}).job.job_id
    # 4 slow tasks take 80 ms, over the 50 ms after which this worker splits a batch; 16 fast ones take far less
    # than the default second.
    worker = Worker(engine, transport, WorkerConfig(concurrency=2, wait_seconds=0.05, max_batch=40,
                                                    split_seconds=0.05 if slow else 1.0))

    def finished() -> bool:
        job = store.get_job(job_id)
        return job is not None and job.status.terminal

    assert worker.run_until(finished, timeout=30, poll_seconds=0.02)
    assert store.get_job(job_id).status is JobStatus.COMPLETED  # type: ignore[union-attr]
    assert len(handlers.calls) == n + 1 and set(handlers.calls.values()) == {1}
    assert max(batches) <= 40  # a thread's most tasks, however many a message carries
    if slow:  # the first batch of the type ran whole and timed it; batches after it were split
        assert store.splits > 0 and 4 in batches
    else:  # no batch of fast tasks was split, a fresh worker's first one included
        assert store.splits == 0 and max(batches) >= 32


def test_a_task_in_a_batch_and_in_its_retry_message_runs_once_at_the_later_attempt() -> None:
    h = Harness(tasks_per_message=16)
    h.probe.failures[(1, 1)] = lambda: TransientError("share is down")
    job_id = started(h)
    [first] = [m for m in h.transport.receive(TASKS_QUEUE, 1000, 0) if m.body["first"] == 0]
    h.settle(h.engine.handle_task_messages([first]))  # task 1 waits for its retry (attempt 2)
    h.clock.advance(3600)  # its retry is due; the rest of the stage's messages are due again
    copy = OutgoingMessage(TASKS_QUEUE, "a copy of the first batch", first.body, first.properties)
    h.transport.send([copy])
    received = h.transport.receive(TASKS_QUEUE, 1000, 0)
    retry = [m for m in received if m.body.get("task_id") == f"{job_id}-s1-t1"]
    [again] = [m for m in received if m.message_id == copy.message_id]
    assert [m.body["attempt"] for m in retry] == [2]
    fates = h.engine.handle_task_messages([again, *retry])
    assert [s.message.message_id for s in fates] == [again.message_id, retry[0].message_id]  # one each
    assert h.probe.calls[f"{job_id}-s1-t1"] == 2 and h.store.stage_counts(job_id)[1]["completed"] == 5


def test_a_batch_of_a_task_type_this_worker_lacks_is_dead_lettered_whole() -> None:
    h = Harness(tasks_per_message=16)
    started(h)
    [first] = h.transport.receive(TASKS_QUEUE, 1, 0)
    [fate] = h.engine_with({}).handle_task_messages([first])
    assert fate.disposition is Disposition.DEAD_LETTER and fate.reason == "UnknownTaskType"
