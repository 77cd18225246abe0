"""Every query of the status path, the janitor and pruning is index-backed: EXPLAIN over a million tasks and a
million events must show no sequential scan of `tasks`, `jobs` or `job_events` — neither the plan for the given
values nor the generic plan a prepared statement switches to after a few executions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from bench.history import fill_history
from infrastructure.postgres.sql_queries import query

GUARDED = ("tasks", "jobs", "job_events")
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_SEQ_SCAN = re.compile(r"Seq Scan on (\w+)")

JOBS, TASKS_PER_JOB, EVENTS_PER_JOB = 100_000, 10, 10


@pytest.fixture(scope="module")
def history(module_database_url: str) -> Iterator[tuple[psycopg.Connection[Any], str]]:
    with psycopg.connect(module_database_url, autocommit=True) as conn:
        fill_history(conn, jobs=JOBS, tasks_per_job=TASKS_PER_JOB, events_per_job=EVENTS_PER_JOB)
        row = conn.execute("SELECT job_id FROM jobs ORDER BY finished_at DESC LIMIT 1").fetchone()
        assert row is not None
        yield conn, row[0]


def _params(job_id: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "job_id": job_id, "job_ids": [job_id], "limit": 50, "grace": 5.0, "older": 3600.0,
        "status": "completed", "before": now - timedelta(days=7), "older_than_seconds": 600.0,
        "leased": ["running"], "job_sources": ["processing"], "taken_back": "{}", "sources": ["retry_scheduled"],
        "overdue": 60.0, "stage_sources": ["processing"],
        "statuses": ["queued", "processing", "finalizing"], "stages": [1], "done": [1], "failed": [0],
        # A batch of 16 tasks, as a worker claims and records them.
        "task_ids": [f"{job_id}-s1-t{i}" for i in range(16)], "worker_id": "w", "lease_seconds": 60.0,
        "attempts": [1] * 16, "results": ["{}"] * 16, "errors": ["{}"] * 16, "delays": [1.0] * 16,
        "ack_ids": list(range(16)), "ack_tokens": [None] * 16,
    }


_OVERRIDES: dict[str, dict[str, Any]] = {
    "complete_stages": {"sources": ["processing"]}, "stage_results": {"stage": 1},
    "claim_tasks": {"sources": ["queued", "retry_scheduled"]},
    "move_jobs": {"moves": ["finish"], "outcomes": ["completed"], "results": ["{}"], "errors": [None],
                  "fail_sources": ["processing"],
                  "advance_sources": ["processing"], "finalize_sources": ["processing"]},
}


STATUS_PATH = ("select_job", "stage_progress", "snapshot_events", "oldest_running_task", "next_retry_task",
               "recent_error_tasks")
# `prune_count` is left out: only `coremachine prune --dry-run` runs it, by hand, and counting what may be a large
# share of the jobs is a sequential scan's job.
JANITOR = ("take_back_expired", "counted_stages", "count_overdue_resends", "stuck_jobs", "prune_candidates",
           "prune_guard", "prune_tasks", "prune_task_history", "prune_events", "prune_settled_messages",
           "prune_dead_letters", "prune_left_tasks", "prune_jobs", "queue_purge_settled")
# Reads and writes of the job path that name jobs and stages by key.
JOB_PATH = ("select_jobs", "stage_results", "stages_results", "decrement_stages", "complete_stages", "stage_totals",
            "move_jobs")
# The task path: a batch's claim and its outcomes, by task id.
TASK_PATH = ("claim_tasks", "complete_tasks", "complete_tasks_counted", "end_tasks", "schedule_retries",
             "renew_task_leases", "task_states")


def _plans(conn: psycopg.Connection[Any], name: str, params: dict[str, Any]) -> tuple[str, str]:
    """(plan for these values, generic plan) of the named query, inside a rolled-back transaction."""
    text = query(name).as_string(conn)
    names: list[str] = []
    for found in _PLACEHOLDER.findall(text):
        if found not in names:
            names.append(found)
    values = [params[n] for n in names]
    numbered = _PLACEHOLDER.sub(lambda m: f"${names.index(m.group(1)) + 1}", text)
    with conn.cursor() as cur, conn.transaction(force_rollback=True):
        custom = "\n".join(r[0] for r in cur.execute(psycopg.sql.SQL("EXPLAIN ") + query(name), params))
        cur.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cur.execute(psycopg.sql.SQL("PREPARE plan_check AS {}").format(psycopg.sql.SQL(numbered)))
        placeholders = psycopg.sql.SQL(", ").join(psycopg.sql.Literal(v) for v in values)
        execute = psycopg.sql.SQL("EXPLAIN EXECUTE plan_check") + (
            psycopg.sql.SQL("({})").format(placeholders) if values else psycopg.sql.SQL(""))
        generic = "\n".join(r[0] for r in cur.execute(execute))
        cur.execute("DEALLOCATE plan_check")
    return custom, generic


@pytest.mark.parametrize("name", STATUS_PATH + JANITOR + JOB_PATH + TASK_PATH)
def test_query_is_index_backed_over_a_million_rows(history: tuple[psycopg.Connection[Any], str], name: str) -> None:
    conn, job_id = history
    params = {**_params(job_id), **_OVERRIDES.get(name, {})}
    for kind, plan in zip(("custom", "generic"), _plans(conn, name, params), strict=True):
        scanned = [t for t in _SEQ_SCAN.findall(plan) if t in GUARDED]
        assert not scanned, f"{name} ({kind} plan) scans {scanned} sequentially:\n{plan}"


@pytest.mark.parametrize("name", TASK_PATH)
def test_the_task_path_reaches_tasks_by_id_never_through_their_job(
    history: tuple[psycopg.Connection[Any], str], name: str
) -> None:
    """A plan that finds a batch's tasks through `tasks_job_stage_idx` reads every task of their job: a claim in a
    10,000-task stage cost 6 ms that way once history made the running jobs look rare to the planner."""
    conn, job_id = history
    params = {**_params(job_id), **_OVERRIDES.get(name, {})}
    for kind, plan in zip(("custom", "generic"), _plans(conn, name, params), strict=True):
        assert "tasks_job_stage_idx" not in plan, f"{name} ({kind} plan) reads the job's tasks:\n{plan}"


def test_history_is_the_size_the_checks_need(history: tuple[psycopg.Connection[Any], str]) -> None:
    conn, _ = history
    counts = conn.execute("SELECT (SELECT count(*) FROM tasks), (SELECT count(*) FROM job_events),"
                          " (SELECT count(*) FROM jobs)").fetchone()
    assert counts == (JOBS * TASKS_PER_JOB, JOBS * EVENTS_PER_JOB, JOBS)
