"""DESIGN §3 invariants 1, 2, 5 and 6 against the real PostgreSQL store and queue."""

from __future__ import annotations

import json
import logging

import pytest

from core.errors import InvalidParameters, UnknownJobType
from core.messages import stage_message
from core.models import ErrorClass, ErrorInfo, JobStatus, OutcomeKind, TaskOutcome
from tests.integration.engine_helpers import event_counts, rows, run_to_end, task_rows
from triggers.runtime import Runtime


def test_submit_is_idempotent_and_key_order_does_not_matter(runtime: Runtime) -> None:
    first = runtime.engine.submit("hello_world", {"n": 3, "message": "hi"})
    second = runtime.engine.submit("hello_world", {"message": "hi", "n": 3})
    assert first.created and not second.created
    assert first.job.job_id == second.job.job_id
    assert rows(runtime, "SELECT count(*) FROM jobs")[0][0] == 1
    assert rows(runtime, "SELECT count(*) FROM queue_messages WHERE queue = 'jobs'")[0][0] == 1
    defaults = runtime.engine.submit("hello_world", {"n": 3, "message": "hi", "sleep_ms": 0})
    assert defaults.job.job_id == first.job.job_id, "defaults are part of the validated parameters"


def test_invalid_parameters_name_each_field(runtime: Runtime) -> None:
    with pytest.raises(InvalidParameters) as info:
        runtime.engine.submit("hello_world", {"n": -1, "bogus": 1, "failure_rate": 2})
    fields = {d["field"] for d in info.value.details}
    assert fields == {"n", "bogus", "failure_rate"}
    with pytest.raises(UnknownJobType) as unknown:
        runtime.engine.submit("nope", {})
    assert "hello_world" in str(unknown.value)


def test_hello_world_and_sum_squares_complete(runtime: Runtime) -> None:
    hello = runtime.engine.submit("hello_world", {"n": 25}).job.job_id
    squares = runtime.engine.submit("sum_squares", {"upto": 12345, "chunk_size": 100}).job.job_id
    assert run_to_end(runtime, hello).status is JobStatus.COMPLETED
    job = run_to_end(runtime, squares)
    assert job.status is JobStatus.COMPLETED
    assert job.result is not None and job.result["ok"] is True and job.result["ranges"] == 124
    assert job.result["sum"] == 12345 * 12346 * (2 * 12345 + 1) // 6


def test_every_message_delivered_twice_gives_the_same_final_state(runtime: Runtime) -> None:
    job_id = runtime.engine.submit("hello_world", {"n": 30}).job.job_id
    transport, engine = runtime.transport, runtime.engine
    job = None
    for _ in range(200):
        jobs = transport.receive("jobs", 10, 0.05)
        for batch in (jobs, jobs):  # the same deliveries handled twice
            transport.complete([s.message for s in engine.handle_job_messages(batch)])
        tasks = transport.receive("tasks", 7, 0.05)
        if tasks:
            engine.handle_task_messages(tasks)
            engine.handle_task_messages(list(reversed(tasks)))
            transport.complete(tasks)
        job = runtime.store.get_job(job_id)
        assert job is not None
        if job.status.terminal:
            break
    assert job is not None and job.status is JobStatus.COMPLETED
    assert {(status, attempt) for _, _, status, attempt, _, _ in task_rows(runtime, job_id)} == {("completed", 1)}
    assert rows(runtime, "SELECT stage, remaining, task_count FROM stages WHERE job_id = %s ORDER BY stage",
                job_id) == [(1, 0, 30), (2, 0, 30)]
    events = event_counts(runtime, job_id)
    assert events[("stage_completed", 1)] == events[("stage_completed", 2)] == 1
    assert events[("finalizing", None)] == events[("job_finished", None)] == 1
    assert job.result is not None and job.result["replies"] == 30


def test_late_stage_message_is_ignored(runtime: Runtime) -> None:
    job_id = runtime.engine.submit("hello_world", {"n": 2}).job.job_id
    assert run_to_end(runtime, job_id).status is JobStatus.COMPLETED
    runtime.transport.send([stage_message(job_id, "hello_world", 1)])
    for late in runtime.transport.receive("jobs", 1, 0.1):  # duplicate detection may drop it; if not, no effect
        runtime.engine.handle_job_messages([late])
    assert rows(runtime, "SELECT count(*) FROM tasks WHERE job_id = %s", job_id)[0][0] == 4
    assert event_counts(runtime, job_id)[("stage_started", 1)] == 1


def test_transient_twice_then_success_keeps_both_errors(runtime: Runtime) -> None:
    job_id = runtime.engine.submit("hello_world", {"n": 3, "fail_attempts": 2}).job.job_id
    assert run_to_end(runtime, job_id).status is JobStatus.COMPLETED
    for _, _, status, attempt, errors, _ in task_rows(runtime, job_id):
        assert (status, attempt) == ("completed", 3)
        assert [(e["attempt"], e["class"], e["type"]) for e in errors] == [
            (1, "transient", "TransientError"), (2, "transient", "TransientError")
        ]
    retry_msgs = rows(runtime, "SELECT available_at > enqueued_at FROM queue_messages "
                               "WHERE queue = 'tasks' AND message_id LIKE %s", "%:a2")
    assert retry_msgs and all(delayed for (delayed,) in retry_msgs), "retries are scheduled, not immediate"


def test_permanent_error_fails_fast_without_retry_and_finalizes(runtime: Runtime) -> None:
    job_id = runtime.engine.submit("drill_fail_fast", {"n": 6, "fail_index": 2}).job.job_id
    job = run_to_end(runtime, job_id)
    assert job.status is JobStatus.FAILED
    assert job.error is not None and job.error["type"] == "PermanentError" and job.error["class"] == "permanent"
    assert job.result is not None and job.result["outcome"] == "failed", "finalize ran"
    by_index = {idx: (status, attempt, errors) for idx, status, attempt, errors, _ in task_rows(runtime, job_id, 1)}
    assert by_index[2][0] == "failed" and by_index[2][1] == 1 and len(by_index[2][2]) == 1
    assert rows(runtime, "SELECT count(*) FROM stages WHERE job_id = %s AND stage = 2", job_id)[0][0] == 0
    assert event_counts(runtime, job_id)[("job_finished", None)] == 1


def test_continue_policy_finishes_with_errors(runtime: Runtime) -> None:
    job_id = runtime.engine.submit("drill_continue", {"n": 5, "fail_index": 0}).job.job_id
    job = run_to_end(runtime, job_id)
    assert job.status is JobStatus.COMPLETED_WITH_ERRORS
    assert rows(runtime, "SELECT count(*) FROM tasks WHERE job_id = %s AND stage = 2", job_id)[0][0] == 4


def test_finalize_raising_still_ends_the_job(runtime: Runtime) -> None:
    job_id = runtime.engine.submit("drill_finalize_raises", {"n": 2}).job.job_id
    job = run_to_end(runtime, job_id)
    assert job.status is JobStatus.COMPLETED_WITH_ERRORS
    assert job.error is not None and job.error["type"] == "RuntimeError" and "exploded" in job.error["message"]
    assert job.error["where"] == "drill_finalize_raises.finalize"


def test_create_tasks_raising_fails_and_finalizes(runtime: Runtime) -> None:
    job_id = runtime.engine.submit("drill_create_tasks_raises", {"n": 2}).job.job_id
    job = run_to_end(runtime, job_id)
    assert job.status is JobStatus.FAILED
    assert job.error is not None and job.error["type"] == "PreviousResultsError"
    assert "no 'no_such_key'" in job.error["message"]


def test_zero_task_stages_advance_at_once(runtime: Runtime) -> None:
    job_id = runtime.engine.submit("hello_world", {"n": 0}).job.job_id
    job = run_to_end(runtime, job_id)
    assert job.status is JobStatus.COMPLETED
    assert rows(runtime, "SELECT stage, task_count, status::text FROM stages WHERE job_id = %s ORDER BY stage",
                job_id) == [(1, 0, "completed"), (2, 0, "completed")]


def test_late_completion_after_job_failed_changes_nothing(runtime: Runtime) -> None:
    job_id = runtime.engine.submit("drill_fail_fast", {"n": 3}).job.job_id
    transport, engine, store = runtime.transport, runtime.engine, runtime.store
    transport.complete([s.message for s in engine.handle_job_messages(transport.receive("jobs", 1, 1))])
    (first, *_) = transport.receive("tasks", 3, 1)
    (claimed,) = store.claim_tasks([first.body["task_id"]], "slow-worker")
    assert store.fail_job(job_id, ErrorInfo("Boom", ErrorClass.PERMANENT, "operator failed it"))
    # Finalize waits while the slow worker's lease (2 s) is live, then ends the job without it.
    for _ in range(100):
        transport.complete([s.message for s in engine.handle_job_messages(transport.receive("jobs", 1, 0.2))])
        if store.get_job(job_id).status.terminal:  # type: ignore[union-attr]
            break
    assert store.get_job(job_id).status is JobStatus.FAILED  # type: ignore[union-attr]
    assert event_counts(runtime, job_id).get(("finalize_deferred", None), 0) >= 1
    before = (task_rows(runtime, job_id), rows(runtime, "SELECT * FROM stages"), rows(runtime, "SELECT * FROM jobs"))
    store.record_outcomes([TaskOutcome(claimed, OutcomeKind.COMPLETED, result={"late": True})])
    after = (task_rows(runtime, job_id), rows(runtime, "SELECT * FROM stages"), rows(runtime, "SELECT * FROM jobs"))
    assert before == after
    assert {status for _, _, status, _, _, _ in after[0]} == {"cancelled"}


def test_claim_is_conditional(runtime: Runtime) -> None:
    job_id = runtime.engine.submit("hello_world", {"n": 1}).job.job_id
    assert run_to_end(runtime, job_id).status is JobStatus.COMPLETED
    task_ids = [r[0] for r in rows(runtime, "SELECT task_id FROM tasks WHERE job_id = %s", job_id)]
    assert runtime.store.claim_tasks(task_ids, "another") == []


def test_event_for_a_missing_job_is_ignored(runtime: Runtime) -> None:
    runtime.store.add_event("e" * 64, "dead_lettered", {"reason": "UnknownTaskType"})
    assert rows(runtime, "SELECT count(*) FROM job_events")[0][0] == 0


def test_engine_logs_carry_the_job_context_at_info(runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    from core import logcontext
    from infrastructure.logging import JsonFormatter

    seen: list[dict[str, object]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(json.loads(JsonFormatter().format(record)))

    handler = Capture(level=logging.INFO)
    logging.getLogger("coremachine").addHandler(handler)
    caplog.set_level(logging.INFO, logger="coremachine")
    try:
        job_id = runtime.engine.submit("hello_world", {"n": 2}).job.job_id
        assert run_to_end(runtime, job_id).status is JobStatus.COMPLETED
    finally:
        logging.getLogger("coremachine").removeHandler(handler)
    assert logcontext.current() == {}
    submitted = next(r for r in seen if r["msg"] == "job submitted")
    assert submitted["job_id"] == job_id and submitted["job_type"] == "hello_world" and submitted["new_job"] is True
    started = [r for r in seen if r["msg"] == "stage started"]
    assert {r["stage"] for r in started} == {1, 2} and all(r["job_id"] == job_id for r in started)


def test_cancel_lets_running_tasks_finish_before_the_job_ends(runtime: Runtime) -> None:
    import time

    job_id = runtime.engine.submit("drill_fail_fast", {"n": 6, "sleep_ms": 1200}).job.job_id
    worker = runtime.worker(concurrency=1, wait_seconds=0.2)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while not rows(runtime, "SELECT 1 FROM tasks WHERE job_id = %s AND status = 'running'", job_id):
            assert time.monotonic() < deadline, "no task started"
            time.sleep(0.05)
        assert runtime.engine.cancel(job_id).accepted
        while not runtime.store.get_job(job_id).status.terminal:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the cancelled job did not end"
            time.sleep(0.1)
    finally:
        worker.stop()
    job = runtime.store.get_job(job_id)
    assert job is not None and job.status is JobStatus.CANCELLED
    statuses = [status for _, status, _, _, _ in task_rows(runtime, job_id, 1)]
    assert "completed" in statuses and "running" not in statuses, "the running task finished, nothing was left"
    assert statuses.count("completed") < 6, "unstarted tasks did not start after the cancel"
    (last_task_end,) = rows(runtime, "SELECT max(finished_at) FROM tasks WHERE job_id = %s AND status = "
                                     "'completed'", job_id)[0]
    assert job.finished_at is not None and job.finished_at >= last_task_end
    assert event_counts(runtime, job_id).get(("finalize_deferred", None), 0) >= 1
