"""Retention on the real PostgreSQL: whole jobs pruned in bounded steps, live and young jobs untouched, and a
pruned job's id free for a new submission of the same parameters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from core.models import JobStatus
from core.retention import PruneLimits, RetentionPolicy, prune
from infrastructure.postgres.sql_queries import query
from tests.integration.engine_helpers import rows, run_to_end
from triggers import cli
from triggers.runtime import Runtime

POLICY = RetentionPolicy({
    JobStatus.COMPLETED: timedelta(days=7), JobStatus.COMPLETED_WITH_ERRORS: timedelta(days=30),
    JobStatus.FAILED: timedelta(days=30), JobStatus.CANCELLED: timedelta(days=30),
})


def age(runtime: Runtime, job_id: str, days: float) -> None:
    """Move a finished job (and its settled messages) `days` into the past, as if that much time had passed."""
    with runtime.database.connection() as conn, conn.transaction():
        conn.execute("UPDATE jobs SET finished_at = finished_at - make_interval(days => %s) WHERE job_id = %s",
                     (days, job_id))
        conn.execute("UPDATE queue_messages SET done_at = done_at - make_interval(days => %(d)s),"
                     " enqueued_at = enqueued_at - make_interval(days => %(d)s)"
                     " WHERE state = 'done' AND properties ->> 'job_id' = %(j)s", {"d": days, "j": job_id})


def footprint(runtime: Runtime, job_id: str) -> dict[str, int]:
    tables = {
        "jobs": "SELECT count(*) FROM jobs WHERE job_id = %s",
        "stages": "SELECT count(*) FROM stages WHERE job_id = %s",
        "tasks": "SELECT count(*) FROM tasks WHERE job_id = %s",
        "events": "SELECT count(*) FROM job_events WHERE job_id = %s",
        "settled": "SELECT count(*) FROM queue_messages WHERE state = 'done' AND properties ->> 'job_id' = %s",
        "dead_letters": "SELECT count(*) FROM dead_letters WHERE properties ->> 'job_id' = %s",
    }
    return {name: rows(runtime, sql, job_id)[0][0] for name, sql in tables.items()}


def dead_letter_for(runtime: Runtime, job_id: str) -> None:
    with runtime.database.connection() as conn, conn.transaction():
        conn.execute("INSERT INTO dead_letters (queue, message_id, body, properties, reason)"
                     " VALUES ('tasks', 'poison', '{}', jsonb_build_object('job_id', %s::text), 'Poison')", (job_id,))


def test_prune_removes_old_finished_jobs_whole_and_nothing_else(runtime: Runtime) -> None:
    old_done = runtime.engine.submit("hello_world", {"n": 6}).job.job_id
    young_done = runtime.engine.submit("hello_world", {"n": 2}).job.job_id
    failed = runtime.engine.submit("drill_fail_fast", {"n": 3, "fail_index": 0}).job.job_id
    for job_id in (old_done, young_done, failed):
        assert run_to_end(runtime, job_id).status.terminal
    live = runtime.engine.submit("hello_world", {"n": 3, "message": "still queued"}).job.job_id
    dead_letter_for(runtime, old_done)
    age(runtime, old_done, 8)      # past the 7 days of completed jobs
    age(runtime, young_done, 1)
    age(runtime, failed, 10)       # failed jobs are kept 30 days
    with runtime.database.connection() as conn:
        conn.execute("UPDATE jobs SET created_at = created_at - interval '90 days' WHERE job_id = %s", (live,))
    before = {j: footprint(runtime, j) for j in (young_done, failed, live)}
    assert footprint(runtime, old_done)["tasks"] == 12 and footprint(runtime, old_done)["settled"] > 0

    dry = prune(runtime.pruner, POLICY, datetime.now(UTC), dry_run=True)
    assert dry.jobs == {"completed": 1, "completed_with_errors": 0, "failed": 0, "cancelled": 0}
    assert footprint(runtime, old_done)["jobs"] == 1, "a dry run deletes nothing"

    report = prune(runtime.pruner, POLICY, datetime.now(UTC))
    assert report.jobs == {"completed": 1} and report.complete
    assert footprint(runtime, old_done) == dict.fromkeys(footprint(runtime, old_done), 0)
    assert {j: footprint(runtime, j) for j in before} == before


def test_pruning_is_bounded_and_resumes(runtime: Runtime) -> None:
    job_ids = [runtime.engine.submit("hello_world", {"n": 5, "message": f"m{i}"}).job.job_id for i in range(3)]
    for job_id in job_ids:
        run_to_end(runtime, job_id)
        age(runtime, job_id, 8)
    limits = PruneLimits(jobs_per_batch=2, chunk_rows=7, budget_rows=20)
    passes, pruned = 0, 0
    while True:
        passes += 1
        report = prune(runtime.pruner, POLICY, datetime.now(UTC), limits)
        assert report.rows <= limits.budget_rows
        pruned += report.total_jobs
        if report.complete:
            break
        assert passes < 20
    assert pruned == 3 and passes > 1
    assert rows(runtime, "SELECT count(*) FROM tasks")[0][0] == 0
    assert rows(runtime, "SELECT count(*) FROM job_events")[0][0] == 0


def test_a_job_that_leaves_its_state_while_being_pruned_is_kept(runtime: Runtime) -> None:
    job_id = runtime.engine.submit("hello_world", {"n": 2}).job.job_id
    run_to_end(runtime, job_id)
    age(runtime, job_id, 8)
    before = datetime.now(UTC) - timedelta(days=7)
    assert runtime.pruner.prunable_jobs(JobStatus.COMPLETED, before, 10) == [job_id]
    with runtime.database.connection() as conn:  # what an operator's re-run does to the row meanwhile
        conn.execute("UPDATE jobs SET status = 'processing', finished_at = NULL WHERE job_id = %s", (job_id,))
    assert runtime.pruner.prune_rows([job_id], JobStatus.COMPLETED, before, 100) == 0
    assert runtime.pruner.prune_jobs([job_id], JobStatus.COMPLETED, before) == []
    assert footprint(runtime, job_id)["tasks"] == 4


def test_a_pruned_job_id_is_free_for_the_same_parameters(runtime: Runtime) -> None:
    first = runtime.engine.submit("hello_world", {"n": 3})
    assert run_to_end(runtime, first.job.job_id).status is JobStatus.COMPLETED
    assert not runtime.engine.submit("hello_world", {"n": 3}).created
    age(runtime, first.job.job_id, 8)
    assert prune(runtime.pruner, POLICY, datetime.now(UTC)).jobs == {"completed": 1}
    again = runtime.engine.submit("hello_world", {"n": 3})
    assert again.created and again.job.job_id == first.job.job_id
    assert again.job.created_at > first.job.created_at
    assert run_to_end(runtime, again.job.job_id).status is JobStatus.COMPLETED
    assert footprint(runtime, again.job.job_id)["tasks"] == 6


def test_cli_prune_dry_run_then_prune(
    runtime: Runtime, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = runtime.engine.submit("hello_world", {"n": 2}).job.job_id
    run_to_end(runtime, job_id)
    age(runtime, job_id, 2)
    monkeypatch.setenv("DATABASE_URL", str(runtime.settings.database_url))
    monkeypatch.setenv("COREMACHINE_LOG_LEVEL", "WARNING")

    def prune_cli(*argv: str) -> tuple[int, str, str]:
        code = cli.main(["prune", *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, _, err = prune_cli("--older-than", "1s")
    assert code == 2 and "duplicate-detection window" in err, "shorter than the duplicate window: refused"
    code, out, _ = prune_cli("--older-than", "1d", "--dry-run", "--json")
    assert code == 0 and json.loads(out)["jobs"]["completed"] == 1
    assert footprint(runtime, job_id)["jobs"] == 1
    code, out, _ = prune_cli("--older-than", "3d", "--json")
    assert code == 0 and json.loads(out)["jobs"] == {}
    code, out, _ = prune_cli("--older-than", "1d")
    assert code == 0 and "pruned 1 job(s): 1 completed" in out
    assert footprint(runtime, job_id)["jobs"] == 0


def test_retention_settings_build_the_policy_and_refuse_less_than_the_window(runtime: Runtime) -> None:
    from core.errors import ConfigurationError
    from triggers.runtime import retention_policy

    policy = retention_policy(runtime.settings.model_copy(update={"retain_failed_days": None}))
    now = datetime.now(UTC)
    assert set(policy.cutoffs(now)) == {JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.CANCELLED}
    assert policy.cutoffs(now)[JobStatus.COMPLETED] == now - timedelta(days=7)
    with pytest.raises(ConfigurationError):
        retention_policy(runtime.settings.model_copy(update={"retain_completed_days": 0.001}))


def test_two_pruners_at_once_share_the_work(runtime: Runtime) -> None:
    job_ids = [runtime.engine.submit("hello_world", {"n": 4, "message": f"p{i}"}).job.job_id for i in range(4)]
    for job_id in job_ids:
        run_to_end(runtime, job_id)
        age(runtime, job_id, 8)
    before = datetime.now(UTC) - timedelta(days=7)
    with runtime.database.connection() as other, other.transaction():  # another janitor holds the oldest two
        held = other.execute(query("prune_guard"), {"job_ids": job_ids[:2], "status": "completed", "before": before})
        assert len(held.fetchall()) == 2
        pruned = runtime.pruner.prune_jobs(job_ids, JobStatus.COMPLETED, before)
    assert sorted(pruned) == sorted(job_ids[2:])
    assert prune(runtime.pruner, POLICY, datetime.now(UTC)).jobs == {"completed": 2}


def test_a_rerun_job_is_pruned_with_its_earlier_rounds_in_bounded_steps(runtime: Runtime) -> None:
    job_id = runtime.engine.submit("hello_world", {"n": 3}).job.job_id
    run_to_end(runtime, job_id)
    assert runtime.engine.rerun(job_id).accepted
    assert run_to_end(runtime, job_id).status is JobStatus.COMPLETED
    assert rows(runtime, "SELECT count(*) FROM task_history WHERE job_id = %s", job_id)[0][0] == 6
    age(runtime, job_id, 8)
    limits = PruneLimits(chunk_rows=4, budget_rows=1000)
    assert prune(runtime.pruner, POLICY, datetime.now(UTC), limits).jobs == {"completed": 1}
    for table in ("jobs", "job_rounds", "task_history", "tasks", "stages", "job_events"):
        assert rows(runtime, f"SELECT count(*) FROM {table} WHERE job_id = %s", job_id)[0][0] == 0, table


def test_pruning_a_job_deletes_the_tasks_its_chunks_left(runtime: Runtime) -> None:
    """Tasks have no foreign key to their stage: the last step deletes any task still there before the job."""
    job_id = runtime.engine.submit("hello_world", {"n": 3}).job.job_id
    run_to_end(runtime, job_id)
    age(runtime, job_id, 8)
    before = datetime.now(UTC) - timedelta(days=7)
    assert runtime.pruner.prune_jobs([job_id], JobStatus.COMPLETED, before) == [job_id]  # no chunk ran first
    assert footprint(runtime, job_id) == dict.fromkeys(footprint(runtime, job_id), 0)
