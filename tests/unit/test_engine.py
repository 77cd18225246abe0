"""CoreMachine end to end on the in-memory store and transport: every invariant that needs no database."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from core.errors import InvalidParameters, PermanentError, TransientError, UnknownJobType
from core.ids import job_id_for
from core.jobs import discover_jobs
from core.messages import task_message
from core.models import (
    JOBS_QUEUE,
    TASKS_QUEUE,
    DeadLetterSelector,
    JobStatus,
    OutcomeKind,
    OutgoingMessage,
    StageStatus,
    TaskOutcome,
    TaskStatus,
)
from core.registry import discover_tasks
from jobs.hello_world import HelloWorld
from jobs.sum_squares import SumSquares
from services import hello, squares
from tests.unit.helpers import Harness

pytestmark = pytest.mark.timeout(30)


def builtin_harness() -> Harness:
    handlers = {
        "hello.greet": hello.greet, "hello.reply": hello.reply, "squares.list_ranges": squares.list_ranges,
        "squares.sum_range": squares.sum_range, "squares.aggregate": squares.aggregate,
    }
    return Harness(jobs=(HelloWorld(), SumSquares()), handlers=handlers)


def tasks_of(h: Harness, job_id: str) -> dict[str, Any]:
    snapshot = h.store.snapshot(job_id, events=1000)
    assert snapshot is not None
    return {
        "stages": {s.stage: s for s in snapshot.stages},
        "events": snapshot.events,
        "errors": {t.task_id: t for t in snapshot.recent_errors},
    }


def test_hello_world_completes_with_its_summary() -> None:
    h = builtin_harness()
    job = h.run("hello_world", {"n": 3})
    assert job.status is JobStatus.COMPLETED
    assert job.result == {
        "greetings": 3, "replies": 3, "sample": ["re: hello #0", "re: hello #1", "re: hello #2"],
        "task_counts": {"1": {"completed": 3}, "2": {"completed": 3}},
    }
    assert h.event_kinds(job.job_id) == [
        "submitted", "stage_started", "stage_completed", "stage_started", "stage_completed", "finalizing",
        "job_finished",
    ]


def test_hello_world_drill_retries_every_task() -> None:
    h = builtin_harness()
    job = h.run("hello_world", {"n": 2, "fail_attempts": 2})
    assert job.status is JobStatus.COMPLETED
    errors = tasks_of(h, job.job_id)["errors"]
    assert len(errors) == 4
    assert {(t.attempt, len(t.errors)) for t in errors.values()} == {(3, 2)}


def test_sum_squares_fans_out_dynamically_and_aggregates() -> None:
    h = builtin_harness()
    job = h.run("sum_squares", {"upto": 100, "chunk_size": 7})
    assert job.status is JobStatus.COMPLETED
    assert job.result == {"sum": 338350, "expected": 338350, "ok": True, "ranges": 15}
    assert h.store.stage_counts(job.job_id) == {1: {"completed": 1}, 2: {"completed": 15}, 3: {"completed": 1}}


def test_discovery_finds_the_builtin_jobs_and_handlers() -> None:
    tasks = discover_tasks("services")
    jobs = discover_jobs("jobs")
    assert {"hello_world", "sum_squares"} <= set(jobs.names())
    assert {"hello.greet", "hello.reply", "squares.sum_range"} <= set(tasks)
    jobs.check_handlers(tasks)


def test_submit_is_idempotent() -> None:
    h = Harness()
    first = h.engine.submit("probe", {"n": 2, "tag": "x"})
    second = h.engine.submit("probe", {"tag": "x", "n": 2})
    assert first.created and not second.created
    assert second.job.job_id == first.job.job_id
    expected = {"n": 2, "tag": "x", "sum_stage": True, "fail_create_stage": 0, "fail_finalize": False}
    assert first.job.job_id == job_id_for("probe", expected)
    assert h.transport.pending_count(JOBS_QUEUE) == 1
    assert h.event_kinds(first.job.job_id) == ["submitted"]


def test_invalid_parameters_name_each_bad_field() -> None:
    h = builtin_harness()
    with pytest.raises(InvalidParameters) as caught:
        h.engine.submit("hello_world", {"n": -1, "message": "", "colour": "red"})
    assert {d["field"] for d in caught.value.details} == {"n", "message", "colour"}
    assert h.transport.pending_count() == 0


def test_unknown_job_type_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownJobType, match="valid job types: probe, probe_continue"):
        Harness().engine.submit("nope", {})


@pytest.mark.parametrize("job_type", ["probe", "probe_continue"])
def test_every_message_delivered_twice_gives_the_same_end(job_type: str) -> None:
    once, twice = Harness(), Harness()
    a = once.run(job_type, {"n": 6})
    b = twice.run(job_type, {"n": 6}, duplicate=True, batch=3)
    assert (a.status, a.result) == (b.status, b.result) == (JobStatus.COMPLETED, {
        "outcome": "completed", "total": 55, "squares": 6})
    assert set(twice.probe.calls.values()) == {1} and len(twice.probe.calls) == 7
    stages = tasks_of(twice, b.job_id)["stages"]
    assert [(s.remaining, s.failed, s.status) for s in stages.values()] == [(0, 0, StageStatus.COMPLETED)] * 2
    assert once.event_kinds(a.job_id) == twice.event_kinds(b.job_id)


def test_transient_twice_then_success_keeps_both_errors() -> None:
    h = Harness()
    h.probe.failures[(0, 1)] = lambda: TransientError("flaky 1")
    h.probe.failures[(0, 2)] = lambda: TimeoutError("flaky 2")
    job = h.run("probe", {"n": 1})
    assert job.status is JobStatus.COMPLETED
    task = tasks_of(h, job.job_id)["errors"][f"{job.job_id}-s1-t0"]
    assert (task.status, task.attempt) == (TaskStatus.COMPLETED, 3)
    assert [(e["type"], e["class"], e["attempt"]) for e in task.errors] == [
        ("TransientError", "transient", 1), ("TimeoutError", "transient", 2)]
    assert h.event_kinds(job.job_id).count("task_retry_scheduled") == 2


def test_permanent_error_fails_fast_without_retry_and_still_finalizes() -> None:
    h = Harness()
    h.probe.failures[(1, 1)] = lambda: PermanentError("bad input")
    job = h.run("probe", {"n": 3}, batch=1)
    assert job.status is JobStatus.FAILED
    assert job.outcome is JobStatus.FAILED
    assert job.result is not None and job.result["outcome"] == "failed"
    assert job.error is not None and job.error["type"] == "PermanentError"
    assert job.error["task_id"] == f"{job.job_id}-s1-t1"
    failed = tasks_of(h, job.job_id)["errors"][f"{job.job_id}-s1-t1"]
    assert (failed.status, failed.attempt, len(failed.errors)) == (TaskStatus.FAILED, 1, 1)
    assert h.event_kinds(job.job_id) == [
        "submitted", "stage_started", "task_failed", "job_failed", "job_finished"]
    stage = tasks_of(h, job.job_id)["stages"][1]
    assert (stage.status, stage.remaining, stage.counts) == (
        StageStatus.CANCELLED, 1, {"completed": 1, "failed": 1, "cancelled": 1})
    assert h.probe.calls[f"{job.job_id}-s1-t2"] == 0


def test_continue_policy_ends_completed_with_errors() -> None:
    h = Harness()
    h.probe.failures[(0, 1)] = lambda: ValueError("no")
    job = h.run("probe_continue", {"n": 3})
    assert job.status is JobStatus.COMPLETED_WITH_ERRORS
    assert job.result == {"outcome": "completed_with_errors", "total": 5, "squares": 2}
    stage = tasks_of(h, job.job_id)["stages"][1]
    assert (stage.remaining, stage.failed, stage.counts) == (0, 1, {"completed": 2, "failed": 1})


def test_finalize_raising_still_ends_the_job() -> None:
    h = Harness()
    job = h.run("probe", {"n": 1, "fail_finalize": True})
    assert job.status is JobStatus.COMPLETED_WITH_ERRORS
    assert job.result is None
    assert job.error is not None
    assert (job.error["type"], job.error["where"]) == ("RuntimeError", "probe.finalize")
    assert job.error["message"] == "finalize exploded"


def test_create_tasks_raising_fails_and_finalizes_the_job() -> None:
    h = Harness()
    job = h.run("probe", {"n": 2, "fail_create_stage": 2})
    assert job.status is JobStatus.FAILED
    assert job.error is not None and job.error["type"] == "ValueError"
    assert "create_tasks (stage 2: sum)" in job.error["where"]
    assert job.result is not None and job.result["outcome"] == "failed"
    assert list(tasks_of(h, job.job_id)["stages"]) == [1]


def test_transient_create_tasks_error_is_retried_by_a_scheduled_stage_message() -> None:
    h = Harness()
    calls = {"n": 0}
    original = h.jobs.get("probe").create_tasks

    def flaky(stage: Any, params: Any, previous: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("database blinked")
        return original(stage, params, previous)

    h.jobs.get("probe").create_tasks = flaky  # type: ignore[method-assign]
    job = h.run("probe", {"n": 2})
    assert job.status is JobStatus.COMPLETED
    assert h.escaped == [], "the stage message is settled; a new one is scheduled"
    assert h.event_kinds(job.job_id).count("stage_planning_retry") == 1


def test_a_planner_that_keeps_failing_transiently_fails_the_job_and_finalizes_it() -> None:
    h = Harness()

    def down(stage: Any, params: Any, previous: Any) -> Any:
        raise ConnectionError("the data share is down")

    h.jobs.get("probe").create_tasks = down  # type: ignore[method-assign]
    job = h.run("probe", {"n": 2})
    assert job.status is JobStatus.FAILED and job.finished_at is not None
    assert job.error is not None and (job.error["type"], job.error["attempt"]) == ("ConnectionError", 3)
    assert h.event_kinds(job.job_id).count("stage_planning_retry") == 2
    assert h.escaped == [] and h.transport.list_dead_letters(DeadLetterSelector()) == []


@pytest.mark.parametrize(("params", "total"), [({"n": 0}, 0), ({"n": 2, "sum_stage": False}, None)])
def test_zero_task_stage_completes_at_once(params: dict[str, Any], total: int | None) -> None:
    h = Harness()
    job = h.run("probe", params)
    assert job.status is JobStatus.COMPLETED
    assert job.result is not None and job.result["total"] == total
    empty = [s for s in tasks_of(h, job.job_id)["stages"].values() if s.task_count == 0]
    assert [(s.status, s.remaining) for s in empty] == [(StageStatus.COMPLETED, 0)]


def test_late_completion_after_the_job_failed_changes_nothing() -> None:
    h = Harness()
    h.probe.failures[(0, 1)] = lambda: PermanentError("broken")
    job_id = h.engine.submit("probe", {"n": 2}).job.job_id
    h.settle(h.engine.handle_job_messages(h.transport.receive(JOBS_QUEUE, 1, 0)))
    first, second = sorted(h.transport.receive(TASKS_QUEUE, 2, 0), key=lambda m: m.body["task_id"])
    (slow,) = h.store.claim_tasks([second.body["task_id"]], "slow-worker")
    h.transport.complete([second])
    h.settle(h.engine.handle_task_messages([first]))
    h.drain()
    before = h.store.snapshot(job_id, events=1000)
    assert before is not None and before.job.status is JobStatus.FAILED
    h.store.record_outcomes([TaskOutcome(slow, OutcomeKind.COMPLETED, result={"square": 1})])
    after = h.store.snapshot(job_id, events=1000)
    assert after is not None and replace(after, events=before.events) == before
    assert [e.kind for e in after.events[len(before.events):]] == ["late_outcome"]
    assert after.events[-1].detail["task_status"] == "cancelled"
    assert h.transport.pending_count() == 0


def test_unknown_task_type_is_dead_lettered_then_replayed() -> None:
    h = Harness()
    old_build = h.engine_with({"probe.square": h.probe.square}, worker_id="old")
    job_id = h.engine.submit("probe", {"n": 2}).job.job_id
    h.drain(old_build)
    (dead,) = h.transport.list_dead_letters(DeadLetterSelector())
    assert dead.reason == "UnknownTaskType" and dead.properties["task_type"] == "probe.sum"
    assert h.job(job_id).status is JobStatus.PROCESSING
    assert h.event_kinds(job_id)[-1] == "dead_lettered"
    replayed = h.transport.replay_dead_letters(DeadLetterSelector(reason="UnknownTaskType"))
    assert len(replayed) == 1
    h.drain()
    assert h.job(job_id).status is JobStatus.COMPLETED
    assert h.transport.list_dead_letters(DeadLetterSelector()) == []


def test_unknown_task_type_for_a_missing_job_is_dead_lettered_at_once() -> None:
    h = Harness()
    h.transport.send([task_message(f"{'a' * 64}-s1-t0", "a" * 64, "probe", 1, "no.such.task", 1)])
    h.drain()
    assert h.escaped == []
    (dead,) = h.transport.list_dead_letters(DeadLetterSelector())
    assert dead.reason == "UnknownTaskType"


@pytest.mark.parametrize(("queue", "body"), [
    (TASKS_QUEUE, {"kind": "task", "job_id": "0" * 64, "stage": 1}),
    (TASKS_QUEUE, ["not", "an", "object"]),
    (JOBS_QUEUE, {"kind": "stage", "job_id": "xyz", "stage": 1}),
    (JOBS_QUEUE, {"kind": "explode", "job_id": "0" * 64}),
])
def test_malformed_messages_are_dead_lettered(queue: str, body: Any) -> None:
    h = Harness()
    h.transport.send([OutgoingMessage(queue, "poison", body)])
    h.drain()
    (dead,) = h.transport.list_dead_letters(DeadLetterSelector())
    assert (dead.queue, dead.reason, dead.message_id) == (queue, "MalformedMessage", "poison")


def test_stage_message_for_a_missing_job_is_dead_lettered() -> None:
    h = Harness()
    h.transport.send([OutgoingMessage(JOBS_QUEUE, "ghost", {"kind": "stage", "job_id": "a" * 64, "stage": 1})])
    h.drain()
    (dead,) = h.transport.list_dead_letters(DeadLetterSelector())
    assert dead.reason == "UnknownJob"


def _strand_task(h: Harness, worker: str) -> None:
    """A worker receives the next task message, claims the task, and dies without a word."""
    (message,) = h.transport.receive(TASKS_QUEUE, 1, 0)
    assert len(h.store.claim_tasks([message.body["task_id"]], worker)) == 1
    h.transport.complete([message])


def test_expired_lease_is_taken_back_by_the_janitor() -> None:
    h = Harness()
    job_id = h.engine.submit("probe", {"n": 1, "sum_stage": False}).job.job_id
    h.settle(h.engine.handle_job_messages(h.transport.receive(JOBS_QUEUE, 1, 0)))
    _strand_task(h, "dead-worker")
    assert h.janitor.run_once().requeued_tasks == 0
    h.clock.advance(30 + 5 + 1)
    assert h.janitor.run_once().requeued_tasks == 1
    h.drain()
    job = h.job(job_id)
    assert job.status is JobStatus.COMPLETED
    task = tasks_of(h, job_id)["errors"][f"{job_id}-s1-t0"]
    assert (task.status, task.attempt) == (TaskStatus.COMPLETED, 2)
    assert [(e["type"], e["where"], e["attempt"]) for e in task.errors] == [("LeaseExpired", "dead-worker", 1)]
    assert "task_lease_expired" in h.event_kinds(job_id)


def test_repeated_lease_expiry_exhausts_the_attempts() -> None:
    h = Harness()
    job_id = h.engine.submit("probe", {"n": 1}).job.job_id
    h.settle(h.engine.handle_job_messages(h.transport.receive(JOBS_QUEUE, 1, 0)))
    for attempt in (1, 2, 3):
        _strand_task(h, f"dead-{attempt}")
        h.clock.advance(36)
        assert h.janitor.run_once().requeued_tasks == 1
    h.drain()
    job = h.job(job_id)
    assert job.status is JobStatus.FAILED
    assert job.error is not None and job.error["type"] == "LeaseExpired"
    task = tasks_of(h, job_id)["errors"][f"{job_id}-s1-t0"]
    assert (task.status, task.attempt) == (TaskStatus.FAILED, 4)
    assert [e["type"] for e in task.errors] == ["LeaseExpired"] * 4
    assert [e["where"] for e in task.errors] == ["dead-1", "dead-2", "dead-3", "worker"]
