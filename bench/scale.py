"""The scale measurements of `bench/fanout.py`: latency on idle workers, status cost, 1,000,000-task stages and
the slowdown from history.

- `idle_job_latency`: two-stage jobs submitted one after another, each only once the previous one finished, so
  the workers are idle when it arrives; latency = finished_at - created_at, both on the server's clock.
- `status_ms`: the `status` snapshot of a job (what `coremachine status` and the HTTP status route read), median
  of repeated calls on a warm connection pool.
- `wide_fanout`: the drain rate of a 1,000,000-task stage: tasks done per second over a window once the workers
  are in their stride (`WIDE_SETTLE_S` after the first completion), read from the stage counters; a stage that
  drains before the window ends is measured up to its completion. Draining all
  of it would take minutes on a small machine; the window measures the per-task cost at that width.
- `with_history`: finished-job history inserted set-based (bench/history.py) into the workers' database.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from bench.history import fill_history
from bench.measure import TWO_STAGE_JOB, percentile, wait_for_jobs
from triggers.runtime import Runtime

WIDE_SETTLE_S = 5.0


@dataclass(frozen=True)
class IdleLatency:
    p50_ms: float
    p99_ms: float
    max_ms: float
    jobs: int


def idle_job_latency(
    runtime: Runtime, url: str, jobs: int, tasks: int, label: str, timeout: float,
    health: Callable[[], None] = lambda: None,
) -> IdleLatency:
    """`jobs` two-stage jobs of `tasks` no-op tasks per stage, one after another on idle workers."""
    job_ids = []
    for i in range(jobs):
        job_id = runtime.engine.submit(TWO_STAGE_JOB, {"tasks": tasks, "label": f"{label}-{i}"}).job.job_id
        wait_for_jobs(url, [job_id], timeout, poll=0.01, health=health)
        job_ids.append(job_id)
        time.sleep(0.02)  # let the workers fall idle again (they sleep on LISTEN/NOTIFY)
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM finished_at - created_at)::float8 * 1000 FROM jobs WHERE job_id = ANY(%s)",
            (job_ids,),
        ).fetchall()
    latencies = sorted(r[0] for r in rows)
    return IdleLatency(percentile(latencies, 50), percentile(latencies, 99), latencies[-1], jobs)


def status_ms(runtime: Runtime, job_id: str, calls: int = 30) -> float:
    """Median milliseconds of `engine.status(job_id)` (after 3 warm-up calls)."""
    for _ in range(3):
        if runtime.engine.status(job_id) is None:
            raise RuntimeError(f"no job {job_id} to read the status of")
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        runtime.engine.status(job_id)
        times.append((time.perf_counter() - started) * 1000)
    return float(statistics.median(times))


@dataclass(frozen=True)
class WideFigures:
    tasks_per_s: float
    window_s: float
    tasks_in_window: int


def _done(conn: psycopg.Connection) -> tuple[float, int, int, float | None]:
    """Server time, tasks finished, tasks remaining, and when the last stage completed (epoch seconds)."""
    row = conn.execute(
        "SELECT extract(epoch FROM clock_timestamp())::float8, coalesce(sum(task_count - remaining), 0)::bigint,"
        " coalesce(sum(remaining), 0)::bigint, extract(epoch FROM max(completed_at))::float8 FROM stages"
    ).fetchone()
    assert row is not None
    return float(row[0]), int(row[1]), int(row[2]), None if row[3] is None else float(row[3])


def wide_fanout(url: str, window_s: float, timeout: float, health: Callable[[], None] = lambda: None) -> WideFigures:
    """Tasks finished per second across the database's stages over `window_s`, once the workers have been
    finishing tasks for a settling time (`WIDE_SETTLE_S`, at most the window; the stages are already created and
    the workers were just started). Small stages that drain before the window ends are measured from the first
    completion to the last stage's completion instead, so a fast machine never reads zero."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        first = _done(conn)[1]
        while (start := _done(conn))[1] == first:
            if time.monotonic() > deadline:
                raise TimeoutError("the workers finished no task of the wide stage")
            health()
            time.sleep(0.05)
        time.sleep(min(WIDE_SETTLE_S, window_s))
        t0, done0, _, _ = _done(conn)
        time.sleep(window_s)
        health()
        t1, done1, remaining, last_completed = _done(conn)
    if remaining == 0 and last_completed is not None and last_completed < t1:
        t0, done0 = start[0], start[1]
        t1 = max(last_completed, t0 + 1e-3)
    return WideFigures((done1 - done0) / (t1 - t0), t1 - t0, done1 - done0)


HISTORY_SPAN_S = 6 * 86_400.0
"""How far back the history's jobs finished: inside the default retention of completed jobs (7 days), so that the
history phase measures a database holding that much history, not the janitor pruning what retention expires (a
span of 11.6 days, as before, left 40% of it to prune while the fan-out was measured)."""


def with_history(url: str, finished_tasks: int, tasks_per_job: int = 10, events_per_job: int = 5) -> float:
    """Insert `finished_tasks` finished tasks of history (in jobs of `tasks_per_job`, finished within the last
    `HISTORY_SPAN_S`); returns the seconds taken."""
    jobs = finished_tasks // tasks_per_job
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        fill_history(conn, jobs=jobs, tasks_per_job=tasks_per_job, events_per_job=events_per_job,
                     label="bench-history", spacing_seconds=min(5.0, HISTORY_SPAN_S / max(1, jobs)))
    return time.perf_counter() - started
