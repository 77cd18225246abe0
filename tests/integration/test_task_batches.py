"""A wide stage's task messages carry several tasks each on the real PostgreSQL store and queue: the stage writes
a queue row per batch, every task runs once, a poison task fails alone, and a batch delivered again goes out as
one message per task (the in-memory adapter is held to the same in `tests/unit/test_task_batches.py`)."""

from __future__ import annotations

from core.models import JOBS_QUEUE, TASKS_QUEUE, JobStatus
from core.settlement import Disposition
from tests.integration.engine_helpers import rows, run_to_end
from triggers.runtime import Runtime

N = 2048  # 128 messages of 16 tasks


def start_stage_one(runtime: Runtime, job_type: str, params: dict[str, object]) -> str:
    job_id = runtime.engine.submit(job_type, {"n": N, **params}).job.job_id
    [message] = runtime.transport.receive(JOBS_QUEUE, 1, 0)
    settlements = runtime.engine.handle_job_messages([message])
    assert [s.disposition for s in settlements] == [Disposition.SETTLED]
    return job_id


def task_messages(runtime: Runtime, job_id: str) -> list[tuple[str, int, str]]:
    """(message id, tasks carried, state) of the job's task messages."""
    return [(r[0], r[1], r[2]) for r in rows(
        runtime, "SELECT message_id, coalesce((body ->> 'count')::int, 1), state FROM queue_messages "
                 "WHERE queue = 'tasks' AND body ->> 'job_id' = %s ORDER BY id", job_id)]


def test_a_wide_stage_runs_from_messages_of_sixteen_tasks_and_a_poison_task_fails_alone(runtime: Runtime) -> None:
    assert runtime.store.tasks_per_message == 16  # the PostgreSQL transport's default
    job_id = start_stage_one(runtime, "drill_continue", {"poison_index": 100})
    assert [carried for _, carried, _ in task_messages(runtime, job_id)] == [16] * (N // 16)

    job = run_to_end(runtime, job_id, timeout=120, concurrency=4)

    assert job.status is JobStatus.COMPLETED_WITH_ERRORS
    statuses = dict(rows(runtime, "SELECT status, count(*) FROM tasks WHERE job_id = %s AND stage = 1 "
                                  "GROUP BY status", job_id))
    assert statuses == {"completed": N - 1, "failed": 1}
    [(failed, attempt)] = rows(runtime, "SELECT idx, attempt FROM tasks WHERE job_id = %s AND status = 'failed'",
                               job_id)
    assert (failed, attempt) == (100, 1)
    assert rows(runtime, "SELECT max(attempt) FROM tasks WHERE job_id = %s", job_id) == [(1,)]  # ran once each
    messages = task_messages(runtime, job_id)
    assert all(state == "done" for _, _, state in messages)
    assert rows(runtime, "SELECT count(*) FROM dead_letters") == [(0,)]
    split = {message_id.rsplit("/", 1)[0] for message_id, _, _ in messages if "/" in message_id}
    assert len(split) < N // 32, f"{len(split)} of {N // 16} batches were split instead of run"


def test_a_batch_delivered_again_goes_out_as_one_message_per_task(runtime: Runtime) -> None:
    job_id = start_stage_one(runtime, "drill_fail_fast", {})
    [first] = runtime.transport.receive(TASKS_QUEUE, 1, 0)
    assert first.body["count"] == 16
    runtime.transport.abandon(first)  # as if its worker died: the lock lapses and it comes back
    received = runtime.transport.receive(TASKS_QUEUE, N, 0)
    [again] = [m for m in received if m.message_id == first.message_id]
    assert again.delivery_count == 2
    runtime.transport.release([m for m in received if m is not again])

    [settlement] = runtime.engine.handle_task_messages([again])

    assert settlement.disposition is Disposition.SETTLED  # settled by the commit that sent its tasks again
    messages = task_messages(runtime, job_id)
    assert (first.message_id, 16, "done") in messages
    split = [(carried, state) for message_id, carried, state in messages
             if message_id.startswith(f"{first.message_id}/")]
    assert split == [(1, "ready")] * 16
    assert rows(runtime, "SELECT count(*) FROM tasks WHERE job_id = %s AND status <> 'queued'", job_id) == [(0,)]
    job = run_to_end(runtime, job_id, timeout=120, concurrency=4)
    assert job.status is JobStatus.COMPLETED
    assert rows(runtime, "SELECT max(attempt), count(*) FROM tasks WHERE job_id = %s", job_id) == [(1, 2 * N)]
