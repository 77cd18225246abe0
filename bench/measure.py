"""The individual measurements of `bench/fanout.py`: commit ceiling, stage creation, fan-out and job throughput.

Each function takes what it needs (URLs, a runtime for submitting) and returns plain figures; `fanout.py`
composes them into one run. A job's end is its `finished_at` (server clock = this machine's clock), its start the
benchmark's `time.time()` just before submitting, so how often the benchmark polls never enters a figure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from core.jobs import PreviousResults
from core.models import TERMINAL_JOB_STATUSES, JobStatus, StagePlan
from infrastructure.settings import Settings
from triggers.runtime import Runtime, build_runtime

FANOUT_JOB = "bench_noop"
TWO_STAGE_JOB = "bench_noop_2stage"
_TERMINAL = [s.value for s in TERMINAL_JOB_STATUSES]


def bench_runtime(database_url: str, data_dir: Path) -> Runtime:
    """A runtime in the benchmark process (for submitting and for worker-less stage creation)."""
    settings = Settings(
        database_url=database_url, data_dir=data_dir, log_level="WARNING", job_packages="jobs", task_packages="services"
    )
    return build_runtime(settings, worker_id="bench", migrate_schema=False)


# --- commit ceiling -------------------------------------------------------------------------------------------


def commit_ceiling(url: str, seconds: float, connections: int = 2) -> float:
    """One-row UPDATE commits per second: `connections` autocommit connections, each updating its own row."""
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("CREATE TABLE IF NOT EXISTS bench_ceiling (id int PRIMARY KEY, n bigint NOT NULL)")
        admin.execute("INSERT INTO bench_ceiling SELECT g, 0 FROM generate_series(0, %s) g ON CONFLICT DO NOTHING",
                      (connections - 1,))
    rates = [0.0] * connections
    barrier = threading.Barrier(connections)

    def hammer(i: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE bench_ceiling SET n = n + 1 WHERE id = %s", (i,))  # connect + plan warm-up
            barrier.wait()
            n, started = 0, time.perf_counter()
            stop_at = started + seconds
            while time.perf_counter() < stop_at:
                conn.execute("UPDATE bench_ceiling SET n = n + 1 WHERE id = %s", (i,))
                n += 1
            rates[i] = n / (time.perf_counter() - started)

    threads = [threading.Thread(target=hammer, args=(i,), name=f"bench-ceiling-{i}") for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("DROP TABLE bench_ceiling")
    return sum(rates)


# --- stage creation -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateFigures:
    handle_s: float  # the stage-1 job message handled by the engine: create_tasks + validation + store.start_stage
    store_s: float | None  # store.start_stage alone, for a prepared StagePlan (None: not measured)
    tasks: int
    job_id: str  # the job whose stage the engine created (its tasks stay queued)


def create_stage(runtime: Runtime, tasks: int, label: str, *, store_alone: bool = True) -> CreateFigures:
    """Time building one stage of `tasks` tasks (task rows + task messages), with no worker running."""
    engine, store = runtime.engine, runtime.store
    # 1. The whole job-message handling a worker would do.
    job = engine.submit(FANOUT_JOB, {"tasks": tasks, "label": f"{label}-handle"}).job
    message = _receive_job_message(runtime, job.job_id)
    started = time.perf_counter()
    settlements = engine.handle_job_messages([message])
    handle_s = time.perf_counter() - started
    runtime.transport.complete([s.message for s in settlements])
    if not store_alone:
        _check_created(runtime, [job.job_id], tasks)
        return CreateFigures(handle_s, None, tasks, job.job_id)
    # 2. The store alone, given the plan.
    job2 = engine.submit(FANOUT_JOB, {"tasks": tasks, "label": f"{label}-store"}).job
    _receive_job_message(runtime, job2.job_id)  # take the stage message off the queue; not handled
    definition = engine.jobs.get(FANOUT_JOB)
    stage = definition.stage(1)
    specs = definition.build_tasks(stage, job2.parameters, PreviousResults(0))
    plan = StagePlan(job2.job_id, 1, stage.name, specs, stage.max_attempts, stage.timeout_seconds)
    started = time.perf_counter()
    created = store.start_stage(plan)
    store_s = time.perf_counter() - started
    if not created:
        raise RuntimeError("start_stage created nothing")
    _check_created(runtime, [job.job_id, job2.job_id], tasks)
    return CreateFigures(handle_s, store_s, tasks, job.job_id)


def _check_created(runtime: Runtime, job_ids: list[str], tasks: int) -> None:
    with runtime.database.connection() as conn:
        for job_id in job_ids:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM tasks WHERE job_id = %(j)s),"
                " (SELECT coalesce(sum(coalesce((body ->> 'count')::int, 1)), 0) FROM queue_messages"
                "  WHERE queue = 'tasks' AND body ->> 'job_id' = %(j)s)",
                {"j": job_id},
            ).fetchone()
            if row is None or row[0] != tasks or row[1] != tasks:
                raise RuntimeError(f"stage creation left {row} task rows / tasks in messages, expected {tasks} each")


def _receive_job_message(runtime: Runtime, job_id: str) -> Any:
    queue = runtime.settings.jobs_queue
    for _ in range(50):
        for message in runtime.transport.receive(queue, 10, 0.2):
            if message.body.get("job_id") == job_id:
                return message
            runtime.transport.abandon(message)
    raise RuntimeError(f"no job message for {job_id}")


# --- running jobs against the workers ---------------------------------------------------------------------------


def wait_for_jobs(
    url: str, job_ids: Sequence[str], timeout: float, poll: float, health: Callable[[], None] = lambda: None
) -> float:
    """Block until every job is terminal; returns the last `finished_at` as a Unix time (server clock, which
    on this one machine is the benchmark's clock too, so polling granularity never enters the figures).
    Raises if any job did not complete successfully, `health()` raises (a worker died) or the timeout passes."""
    deadline = time.monotonic() + timeout
    pending = set(job_ids)
    last = 0.0
    with psycopg.connect(url, autocommit=True) as conn:
        while pending:
            rows = conn.execute(
                "SELECT job_id, status, extract(epoch FROM finished_at)::float8 FROM jobs"
                " WHERE job_id = ANY(%(ids)s) AND status = ANY(%(t)s::job_status[])",
                {"t": _TERMINAL, "ids": list(pending)},
            ).fetchall()
            for job_id, status, finished in rows:
                if status != JobStatus.COMPLETED.value:
                    raise RuntimeError(f"benchmark job {job_id} ended {status}; see the worker logs")
                pending.discard(job_id)
                last = max(last, float(finished))
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} of {len(job_ids)} jobs unfinished after {timeout:.0f} s")
            if pending:
                health()
                time.sleep(poll)
    return last


@dataclass(frozen=True)
class FanoutFigures:
    seconds: float
    tasks: int
    job_id: str

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.seconds


def fanout(
    runtime: Runtime, url: str, tasks: int, label: str, timeout: float, health: Callable[[], None] = lambda: None
) -> FanoutFigures:
    """Submit one job with one stage of `tasks` no-op tasks; time submit → job completed."""
    started = time.time()
    job = runtime.engine.submit(FANOUT_JOB, {"tasks": tasks, "label": label}).job
    finished = wait_for_jobs(url, [job.job_id], timeout, poll=0.05, health=health)
    return FanoutFigures(finished - started, tasks, job.job_id)


@dataclass(frozen=True)
class JobsFigures:
    jobs: int
    seconds: float
    submit_seconds: float
    latency_p50_s: float
    latency_p99_s: float
    latency_max_s: float

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds


def many_jobs(
    runtime: Runtime, url: str, jobs: int, tasks: int, label: str, timeout: float, submitters: int = 4,
    health: Callable[[], None] = lambda: None, *, one_by_one: bool = False,
) -> JobsFigures:
    """Submit `jobs` two-stage jobs of `tasks` tasks per stage at once — in one batch submit (`submit_many`, one
    transaction), or `one_by_one` from `submitters` threads — and time until all are finished, with each job's
    latency (finished_at - created_at, both server clock)."""
    parameters = [{"tasks": tasks, "label": f"{label}-{i}"} for i in range(jobs)]
    submit: Callable[[dict[str, Any]], str] = lambda p: runtime.engine.submit(TWO_STAGE_JOB, p).job.job_id  # noqa: E731
    started = time.time()
    if one_by_one:
        with ThreadPoolExecutor(submitters, thread_name_prefix="bench-submit") as pool:
            job_ids = list(pool.map(submit, parameters))
    else:
        job_ids = [r.job.job_id for r in runtime.engine.submit_many(TWO_STAGE_JOB, parameters)]
    submitted = time.time()
    finished = wait_for_jobs(url, job_ids, timeout, poll=0.25, health=health)
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM finished_at - created_at)::float8, status FROM jobs WHERE job_id = ANY(%s)",
            (job_ids,),
        ).fetchall()
    if any(status != JobStatus.COMPLETED.value for _, status in rows):
        raise RuntimeError("a benchmark job did not complete")
    latencies = sorted(r[0] for r in rows)
    return JobsFigures(
        jobs=jobs,
        seconds=finished - started,
        submit_seconds=submitted - started,
        latency_p50_s=percentile(latencies, 50),
        latency_p99_s=percentile(latencies, 99),
        latency_max_s=latencies[-1],
    )


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty sequence."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, min(len(sorted_values), round(p / 100 * len(sorted_values) + 0.5 - 1e-9)))
    return float(sorted_values[rank - 1])


# --- server counters (diagnostics) ------------------------------------------------------------------------------


def server_counters(url: str) -> dict[str, float]:
    """Cumulative counters: committed transactions in this database, WAL records/bytes/writes/syncs."""
    with psycopg.connect(url, autocommit=True) as conn:
        commits = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        wal = conn.execute(
            "SELECT wal_records, wal_bytes, wal_write, wal_sync, wal_write_time, wal_sync_time FROM pg_stat_wal"
        ).fetchone()
    assert commits is not None and wal is not None
    return {
        "xact_commit": float(commits[0]),
        "wal_records": float(wal[0]),
        "wal_bytes": float(wal[1]),
        "wal_write": float(wal[2]),
        "wal_sync": float(wal[3]),
        "wal_write_time": float(wal[4]),  # milliseconds; 0 unless track_wal_io_timing
        "wal_sync_time": float(wal[5]),
    }


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before}
