"""Each message has its own fate, on the real PostgreSQL queue: a failing message batched with healthy ones
leaves them alone, an early retry message is deferred to its due time, a lost retry is re-sent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from core.errors import StoreUnavailable
from core.models import (
    DeadLetterSelector,
    ErrorClass,
    ErrorInfo,
    JobStatus,
    OutcomeKind,
    ReceivedMessage,
    StagePlan,
    TaskOutcome,
)
from core.settlement import Disposition
from tests.integration.engine_helpers import rows, run_to_end, task_rows
from triggers.runtime import Runtime

pytestmark = pytest.mark.timeout(120)


def test_a_flaky_job_message_batched_with_healthy_ones_does_not_hold_them_back(runtime: Runtime) -> None:
    store = runtime.store
    original = store.start_stages
    failures = {"left": 3, "together": 0}
    # A worker runs the first stage message of its life alone (its duration is unknown), then several at once.
    healthy = [runtime.engine.submit("drill_continue", {"n": 2, "tag": "ok0"}).job.job_id]
    flaky_id = runtime.engine.submit("drill_continue", {"n": 2, "tag": "flaky"}).job.job_id

    def flaky(
        plans: Sequence[StagePlan], inline_finish: frozenset[str] = frozenset(),
        acknowledge: Sequence[ReceivedMessage] = (),
    ) -> list[bool]:
        # An infrastructure failure escapes the engine (a failing planner would be retried by a new message).
        # Stages created together fail with it; then each is created on its own, and only the flaky one fails.
        if failures["left"] and any(p.job_id == flaky_id for p in plans):
            if len(plans) > 1:
                failures["together"] += 1
            else:
                failures["left"] -= 1
            raise StoreUnavailable("connection reset while creating the stage")
        return original(plans, inline_finish, acknowledge)

    store.start_stages = flaky  # type: ignore[method-assign]
    healthy += [runtime.engine.submit("drill_continue", {"n": 2, "tag": f"ok{i}"}).job.job_id for i in range(1, 6)]
    worker = runtime.worker(concurrency=2, wait_seconds=0.2, jobs_threads=1)
    done = {"healthy_first": False}

    def finished() -> bool:
        jobs = {job_id: runtime.store.get_job(job_id) for job_id in [flaky_id, *healthy]}
        if all(j is not None and j.status.terminal for k, j in jobs.items() if k != flaky_id):
            flaky_job = jobs[flaky_id]
            done["healthy_first"] = done["healthy_first"] or (flaky_job is not None and not flaky_job.status.terminal)
        return all(j is not None and j.status.terminal for j in jobs.values())

    assert worker.run_until(finished, timeout=60, poll_seconds=0.05)
    assert failures["left"] == 0, failures
    for job_id in [flaky_id, *healthy]:
        job = runtime.store.get_job(job_id)
        assert job is not None and job.status is JobStatus.COMPLETED, job_id
    assert done["healthy_first"], "the healthy jobs waited for the flaky one"
    [(deliveries,)] = rows(runtime, "SELECT delivery_count FROM queue_messages WHERE message_id = %s",
                           f"j:{flaky_id}:s1")
    assert deliveries == 4
    for job_id in healthy:
        [(count,)] = rows(runtime, "SELECT delivery_count FROM queue_messages WHERE message_id = %s", f"j:{job_id}:s1")
        assert count == 1, "a healthy neighbour's delivery was counted again"
    assert runtime.transport.list_dead_letters(DeadLetterSelector()) == []


def test_stages_created_together_fall_back_to_one_by_one_when_one_fails(runtime: Runtime) -> None:
    store = runtime.store
    original = store.start_stages
    calls: list[int] = []
    jobs = [runtime.engine.submit("drill_continue", {"n": 2, "tag": f"job{i}"}).job.job_id for i in range(4)]
    flaky_id = jobs[2]

    def flaky(
        plans: Sequence[StagePlan], inline_finish: frozenset[str] = frozenset(),
        acknowledge: Sequence[ReceivedMessage] = (),
    ) -> list[bool]:
        calls.append(len(plans))
        if any(p.job_id == flaky_id for p in plans):
            raise StoreUnavailable("connection reset while creating the stage")
        return original(plans, inline_finish, acknowledge)

    store.start_stages = flaky  # type: ignore[method-assign]
    messages = runtime.transport.receive("jobs", 10, 1)
    assert len(messages) == 4
    settlements = runtime.engine.handle_job_messages(messages)
    assert calls == [4, 1, 1, 1, 1]  # together, then each on its own
    fates = {s.message.body["job_id"]: s.disposition for s in settlements}
    # The others' stage messages are settled by the commits that created their stages.
    assert fates == {job_id: Disposition.ABANDON if job_id == flaky_id else Disposition.SETTLED for job_id in jobs}
    for job_id in jobs:
        [(stages,)] = rows(runtime, "SELECT count(*) FROM stages WHERE job_id = %s", job_id)
        assert stages == (0 if job_id == flaky_id else 1), job_id


def test_a_poison_outcome_batched_with_healthy_ones_fails_alone(runtime: Runtime) -> None:
    job_id = runtime.engine.submit("drill_continue", {"n": 40, "poison_index": 17}).job.job_id
    job = run_to_end(runtime, job_id, concurrency=1)
    assert job.status is JobStatus.COMPLETED_WITH_ERRORS
    stage1 = task_rows(runtime, job_id, 1)
    poisoned = [r for r in stage1 if r[0] == 17]
    assert [(r[1], r[2]) for r in poisoned] == [("failed", 1)]
    assert poisoned[0][3][-1]["type"] == "OutcomeNotRecorded"
    assert {(r[1], r[2]) for r in stage1 if r[0] != 17} == {("completed", 1)}, "a healthy task ran twice"
    [(max_deliveries,)] = rows(runtime, "SELECT max(delivery_count) FROM queue_messages WHERE queue = 'tasks'")
    assert max_deliveries == 1
    assert runtime.transport.list_dead_letters(DeadLetterSelector()) == []
    # several outcomes shared the failed commit: the poison one was in a real batch
    [(batched,)] = rows(runtime, "SELECT count(DISTINCT date_trunc('milliseconds', finished_at)) < 39 FROM tasks "
                                 "WHERE job_id = %s AND stage = 1", job_id)
    assert batched


def fail_first_attempt(runtime: Runtime, job_id: str) -> str:
    """Run the job's single task once, failing transiently with a long backoff: it waits for its retry."""
    definition = runtime.registries.jobs.get("drill_continue")
    stage = definition.stage(1)
    task_id = f"{job_id}-s1-t0"
    [message] = [m for m in runtime.transport.receive("tasks", 10, 1) if m.body["task_id"] == task_id]
    [claim] = runtime.store.claim_tasks([task_id], "test")
    error = ErrorInfo("TransientError", ErrorClass.TRANSIENT, "share is down", attempt=1)
    runtime.store.record_outcomes([TaskOutcome(claim, OutcomeKind.RETRY, error=error, retry_delay_seconds=3600)])
    runtime.transport.complete([message])
    assert stage.max_attempts >= 2
    return task_id


def start_one_task_job(runtime: Runtime, tag: str) -> str:
    job_id = runtime.engine.submit("drill_continue", {"n": 1, "tag": tag}).job.job_id
    [stage_message] = runtime.transport.receive("jobs", 1, 1)
    [settlement] = runtime.engine.handle_job_messages([stage_message])
    assert settlement.disposition is Disposition.SETTLED  # by the commit that started the stage
    return job_id


def test_a_retry_message_delivered_early_is_deferred_until_the_task_is_due(runtime: Runtime) -> None:
    job_id = start_one_task_job(runtime, "early")
    task_id = fail_first_attempt(runtime, job_id)
    retry_id = f"t:{task_id}:a2"
    # Clock skew: the scheduled retry becomes visible an hour before the task is due.
    rows(runtime, "UPDATE queue_messages SET available_at = now() WHERE message_id = %s RETURNING id", retry_id)
    [early] = runtime.transport.receive("tasks", 1, 1)
    assert early.message_id == retry_id
    settlements = runtime.engine.handle_task_messages([early])
    runtime.transport.complete([s.message for s in settlements])
    [(status, attempt, resends)] = rows(runtime, "SELECT status, attempt, resend_count FROM tasks WHERE task_id = %s",
                                        task_id)
    assert (status, attempt, resends) == ("retry_scheduled", 1, 1)
    [(deferred_id, due_gap)] = rows(
        runtime,
        "SELECT q.message_id, abs(extract(epoch FROM q.available_at - t.not_before)) FROM queue_messages q, tasks t "
        "WHERE t.task_id = %s AND q.state = 'ready' AND q.body ->> 'task_id' = t.task_id",
        task_id,
    )
    assert deferred_id == f"{retry_id}:s1" and due_gap < 1.0
    # When the task is due, the deferred message runs it.
    rows(runtime, "UPDATE tasks SET not_before = now() WHERE task_id = %s RETURNING 1", task_id)
    rows(runtime, "UPDATE queue_messages SET available_at = now() WHERE message_id = %s RETURNING 1", deferred_id)
    job = run_to_end(runtime, job_id)
    assert job.status is JobStatus.COMPLETED
    assert [(r[1], r[2]) for r in task_rows(runtime, job_id, 1)] == [("completed", 2)]


def test_the_janitor_resends_an_overdue_retry_with_an_id_from_the_task_counter(runtime: Runtime) -> None:
    job_id = start_one_task_job(runtime, "overdue")
    task_id = fail_first_attempt(runtime, job_id)
    # The retry message is lost (a purge, a relay that never ran) and the retry is long overdue.
    rows(runtime, "DELETE FROM queue_messages WHERE message_id = %s RETURNING 1", f"t:{task_id}:a2")
    rows(runtime, "UPDATE tasks SET not_before = now() - interval '1 hour' WHERE task_id = %s RETURNING 1", task_id)
    rows(runtime, "DELETE FROM job_events WHERE job_id = %s RETURNING 1", job_id)  # ids never come from here
    report = runtime.janitor.run_once()
    assert report.resent_retries == 1
    assert runtime.janitor.run_once().resent_retries == 0
    [(message_id,)] = rows(runtime, "SELECT message_id FROM queue_messages WHERE state = 'ready' AND queue = 'tasks'")
    assert message_id == f"t:{task_id}:a2:s1"
    job = run_to_end(runtime, job_id)
    assert job.status is JobStatus.COMPLETED
    assert [(r[1], r[2]) for r in task_rows(runtime, job_id, 1)] == [("completed", 2)]


def stage_two_messages(runtime: Runtime, sizes: Sequence[int], tag: str) -> tuple[list[str], list[ReceivedMessage]]:
    """Jobs of `sizes` tasks whose first stage has run: their job ids and their stage-2 messages, received."""
    jobs = [runtime.engine.submit("drill_continue", {"n": n, "tag": f"{tag}{i}"}).job.job_id
            for i, n in enumerate(sizes)]
    for queue in ("jobs", "tasks"):  # stage 1: created, then run
        received = runtime.transport.receive(queue, 100, 1)
        handle = runtime.engine.handle_job_messages if queue == "jobs" else runtime.engine.handle_task_messages
        assert {s.disposition for s in handle(received)} == {Disposition.SETTLED}
    messages = runtime.transport.receive("jobs", 10, 1)
    assert sorted(m.body["stage"] for m in messages) == [2] * len(sizes)
    return jobs, messages


def count_reads(runtime: Runtime, fail: str | None = None) -> list[tuple[str, int]]:
    """Record the store's job and result reads (name, keys asked for); `fail` names one that raises."""
    store, reads = runtime.store, []

    def count(name: str, plural: bool) -> None:
        original = getattr(store, name)

        def counted(*args: Any) -> Any:
            reads.append((name, len(args[0]) if plural else 1))
            if name == fail:
                raise StoreUnavailable("connection reset")
            return original(*args)

        setattr(store, name, counted)

    for name, plural in (("get_job", False), ("get_jobs", True), ("stage_results", False), ("stages_results", True)):
        count(name, plural)
    return reads


def created_from_their_own_results(runtime: Runtime, jobs: Sequence[str], sizes: Sequence[int]) -> None:
    for job_id, n in zip(jobs, sizes, strict=True):
        assert [r[0] for r in task_rows(runtime, job_id, 2)] == list(range(n)), job_id


def test_a_batch_of_stage_messages_reads_its_jobs_and_previous_results_once(runtime: Runtime) -> None:
    """Four jobs' stage-2 messages in one batch: one read of the four jobs, one read of their stage-1 results,
    and each stage built from its own job's results."""
    sizes = [1, 2, 3, 4]
    jobs, messages = stage_two_messages(runtime, sizes, "ahead")
    reads = count_reads(runtime)
    settlements = runtime.engine.handle_job_messages(messages)
    assert {s.disposition for s in settlements} == {Disposition.SETTLED}  # by the commit that started the stages
    assert reads == [("get_jobs", 4), ("stages_results", 4)]
    created_from_their_own_results(runtime, jobs, sizes)


def test_a_failed_read_ahead_leaves_each_message_to_read_its_own(runtime: Runtime) -> None:
    sizes = [2, 3]
    jobs, messages = stage_two_messages(runtime, sizes, "failed")
    reads = count_reads(runtime, fail="get_jobs")
    settlements = runtime.engine.handle_job_messages(messages)
    assert {s.disposition for s in settlements} == {Disposition.SETTLED}
    assert reads == [("get_jobs", 2), ("get_job", 1), ("stage_results", 1), ("get_job", 1), ("stage_results", 1)]
    created_from_their_own_results(runtime, jobs, sizes)


def test_wide_previous_results_and_a_job_with_two_messages_are_not_read_ahead(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Results beyond the read-ahead's limit are read by their own message; a job with two messages in the batch
    (here its stage message twice) reads its job per message, after what the first one did."""
    monkeypatch.setattr("core.stage_runner.READ_AHEAD_RESULTS", 2)
    sizes = [3, 2]
    jobs, messages = stage_two_messages(runtime, sizes, "wide")
    duplicate = next(m for m in messages if m.body["job_id"] == jobs[1])
    reads = count_reads(runtime)
    settlements = runtime.engine.handle_job_messages([*messages, duplicate])
    assert [s.disposition for s in settlements] == [Disposition.SETTLED] * 3
    # jobs[1] has two messages: not read ahead. jobs[0]'s three results are over the limit of two: not kept, so
    # its message reads them itself, as each of jobs[1]'s messages reads its job and results.
    assert reads[:2] == [("get_jobs", 1), ("stages_results", 1)]
    assert sorted(reads[2:]) == [("get_job", 1)] * 2 + [("stage_results", 1)] * 3
    created_from_their_own_results(runtime, jobs, sizes)
