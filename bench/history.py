"""Finished-job history made fast with set-based INSERT … SELECT generate_series: what months of use leave behind.

Used by the benchmark (`history_slowdown`: the same fan-out and status on a database holding 2,000,000 finished
tasks) and by the test that every status and janitor query is index-backed over a million rows.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

_JOBS = """
CREATE TEMP TABLE history_jobs ON COMMIT DROP AS
SELECT encode(sha256(convert_to(%(label)s || '-' || g, 'UTF8')), 'hex') AS job_id,
       now() - make_interval(secs => 60 + g * %(spacing)s) AS created_at,
       now() - make_interval(secs => g * %(spacing)s) AS finished_at,
       g
FROM generate_series(1, %(jobs)s) AS g
"""
_INSERT_JOBS = """
INSERT INTO jobs (job_id, job_type, status, outcome, parameters, current_stage, total_stages, failure_policy,
                  result, created_at, updated_at, finished_at)
SELECT job_id, 'bench_noop', 'completed', 'completed',
       jsonb_build_object('tasks', %(tasks)s, 'label', %(label)s || '-' || g), 1, 1, 'fail_fast', '{}'::jsonb,
       created_at, finished_at, finished_at
FROM history_jobs
"""
_INSERT_STAGES = """
INSERT INTO stages (job_id, stage, name, status, task_count, remaining, failed, started_at, completed_at)
SELECT job_id, 1, 'noop', 'completed', %(tasks)s, 0, 0, created_at, finished_at FROM history_jobs
"""
_INSERT_TASKS = """
INSERT INTO tasks (task_id, job_id, stage, idx, task_type, status, parameters, result, attempt, max_attempts,
                   timeout_seconds, claimed_by, created_at, updated_at, finished_at)
SELECT j.job_id || '-s1-t' || i, j.job_id, 1, i, 'bench.noop', 'completed', '{}'::jsonb, '{}'::jsonb, 1, 3, 30,
       'history', j.created_at, j.finished_at, j.finished_at
FROM history_jobs AS j CROSS JOIN generate_series(0, %(tasks)s - 1) AS i
"""
_INSERT_EVENTS = """
INSERT INTO job_events (job_id, at, kind, stage, detail)
SELECT j.job_id, j.created_at + make_interval(secs => e),
       (ARRAY['submitted', 'stage_started', 'stage_completed', 'finalizing', 'job_finished'])[1 + e %% 5],
       CASE WHEN e %% 5 IN (1, 2) THEN 1 END, '{}'::jsonb
FROM history_jobs AS j CROSS JOIN generate_series(0, %(events)s - 1) AS e
"""


def fill_history(
    conn: psycopg.Connection[Any], *, jobs: int, tasks_per_job: int, events_per_job: int, label: str = "history",
    spacing_seconds: float = 5.0,
) -> None:
    """Insert `jobs` completed one-stage jobs of `tasks_per_job` completed tasks and `events_per_job` events each,
    finished one every `spacing_seconds` going back from now; then VACUUM ANALYZE, as autovacuum would after a
    while, and a CHECKPOINT: history is old data, written to disk long ago, not a bulk load whose gigabyte of
    dirty pages the checkpointer is still writing while the next phase is measured. `conn` must be in autocommit
    mode."""
    params = {"label": label, "jobs": jobs, "tasks": tasks_per_job, "events": events_per_job,
              "spacing": spacing_seconds}
    with conn.transaction():
        for statement in (_JOBS, _INSERT_JOBS, _INSERT_STAGES, _INSERT_TASKS, _INSERT_EVENTS):
            conn.execute(statement, params)
    for table in ("jobs", "stages", "tasks", "job_events"):
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
    conn.execute("CHECKPOINT")
