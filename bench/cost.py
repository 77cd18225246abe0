"""What one small job and one fan-out task cost in CPU, measured without concurrency (so without scheduling noise).

    python -m bench.cost [--jobs 300] [--tasks 2000] [--history 2000000] [--profile cpu.prof]

One process, one thread: submit `jobs` two-stage jobs of 4 no-op tasks per stage (the `jobs_per_s` workload of
`bench/fanout.py`), then drain both queues by hand (receive, handle, settle) until they are empty; then one stage of
`tasks` no-op tasks the same way. For each workload it reports the client's CPU (this process), the server's CPU
(every backend of the benchmark cluster), the transactions committed and the wall time, per job or per task.

On a shared machine the rates of `bench/fanout.py` move with the load; these per-unit CPU figures hardly do, so they
are the ones to compare before and after a change of the job or task path. `--profile` writes a cProfile (CPU
clock) of the drains.

`--history N` then inserts N finished tasks of history (`bench/history.py`) and measures both workloads and the
status read again: the CPU per unit with history over the same on the empty database is the history slowdown,
free of the machine's load.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil
import psycopg

from bench.cluster import BenchCluster
from bench.measure import FANOUT_JOB, TWO_STAGE_JOB, bench_runtime
from bench.scale import status_ms, with_history
from core.batching import message_weight
from core.models import JOBS_QUEUE, TASKS_QUEUE, ReceivedMessage
from core.settlement import Disposition, Settlement
from triggers.runtime import Runtime


def _server_cpu(postmaster: psutil.Process) -> dict[int, float]:
    """CPU seconds of the postmaster and each of its processes, by pid."""
    by_pid: dict[int, float] = {}
    for proc in [postmaster, *postmaster.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        by_pid[proc.pid] = times.user + times.system
    return by_pid


def _server_cpu_since(postmaster: psutil.Process, before: dict[int, float]) -> float:
    """CPU the server's processes used since `before` (a process that ended meanwhile is not counted)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in _server_cpu(postmaster).items())


def _commits(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
    assert row is not None
    return int(row[0])


def to_complete(settlements: Sequence[Settlement]) -> list[ReceivedMessage]:
    """The messages the consumer completes (no-op handlers: every message that the store's commit did not)."""
    return [s.message for s in settlements if s.disposition is Disposition.COMPLETE]


def drain(runtime: Runtime, job_batch: int = 8, task_batch: int = 32) -> dict[str, int]:
    """Receive, handle and settle job and task messages on this thread until both queues stay empty. Task
    batches are handled the way a worker's task thread handles them (as a replaceable caller, so known-fast
    handlers run on this thread, and about `task_batch` tasks at a time whatever a message carries)."""
    engine, transport = runtime.engine, runtime.transport
    counts = {"job_messages": 0, "task_messages": 0}
    idle = 0
    weight = 1

    def settle(settlements: list[Settlement]) -> None:
        transport.complete(to_complete(settlements))

    def handle_tasks(messages: Sequence[ReceivedMessage]) -> list[Settlement]:
        return engine.handle_task_messages(messages, settle)

    while idle < 20:
        busy = False
        for queue, batch, handle, key in (
            (JOBS_QUEUE, job_batch, engine.handle_job_messages, "job_messages"),
            (TASKS_QUEUE, task_batch, handle_tasks, "task_messages"),
        ):
            messages = transport.receive(queue, batch if queue == JOBS_QUEUE else max(1, batch // weight), 0.005)
            if messages:
                busy = True
                counts[key] += len(messages)
                transport.complete(to_complete(handle(messages)))
                if queue == TASKS_QUEUE:
                    weight = message_weight(messages[-1])
        idle = 0 if busy else idle + 1
    return counts


def measure(
    runtime: Runtime, url: str, postmaster: psutil.Process, units: int, submit: Callable[[], None],
    profiler: cProfile.Profile | None,
) -> dict[str, Any]:
    commits0, server0 = _commits(url), _server_cpu(postmaster)
    wall0, client0 = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    submit()
    submitted = time.process_time()
    counts = drain(runtime)
    if profiler is not None:
        profiler.disable()
    client, wall = time.process_time() - client0, time.perf_counter() - wall0
    server, commits = _server_cpu_since(postmaster, server0), _commits(url) - commits0
    return {
        "client_cpu_ms": round(1000 * client / units, 3),
        "submit_cpu_ms": round(1000 * (submitted - client0) / units, 3),
        "server_cpu_ms": round(1000 * server / units, 3),
        "total_cpu_ms": round(1000 * (client + server) / units, 3),
        "commits": round(commits / units, 2),
        "wall_ms": round(1000 * wall / units, 3),  # includes the empty polls that end the drain
        **counts,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.cost", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--jobs", type=int, default=300, help="two-stage jobs of 4 + 4 no-op tasks (default 300)")
    parser.add_argument("--tasks", type=int, default=2000, help="no-op tasks of the one-stage job (default 2000)")
    parser.add_argument("--history", type=int, default=0, metavar="N",
                        help="then add N finished tasks of history and measure again (default: no history)")
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile (CPU clock) of the drains")
    args = parser.parse_args(argv)

    profiler = cProfile.Profile(time.process_time) if args.profile else None
    with BenchCluster.start() as cluster, tempfile.TemporaryDirectory() as data:
        url = cluster.create_database("cost")
        postmaster = psutil.Process(cluster.postmaster_pid)
        with bench_runtime(url, Path(data)) as runtime:
            engine = runtime.engine
            for i in range(20):  # warm-up: connections, prepared statements, imports
                engine.submit(TWO_STAGE_JOB, {"tasks": 4, "label": f"warm-{i}"})
            drain(runtime)

            def workloads(label: str) -> dict[str, Any]:
                def small_jobs() -> None:
                    for i in range(args.jobs):
                        engine.submit(TWO_STAGE_JOB, {"tasks": 4, "label": f"{label}-job-{i}"})

                wide: list[str] = []

                def one_wide_job() -> None:
                    wide.append(engine.submit(FANOUT_JOB, {"tasks": args.tasks, "label": f"{label}-fanout"}).job.job_id)

                return {
                    "per_small_job": measure(runtime, url, postmaster, args.jobs, small_jobs, profiler),
                    "per_fanout_task": measure(runtime, url, postmaster, args.tasks, one_wide_job, profiler),
                    "status_ms_fanout_job": round(status_ms(runtime, wide[0]), 3),
                }

            report: dict[str, Any] = {**workloads("empty"), "jobs": args.jobs, "tasks": args.tasks}
            if args.history:
                report["history_fill_s"] = round(with_history(url, args.history), 1)
                later = workloads("history")
                report["with_history"] = {"finished_tasks": args.history, **later}
                report["history_slowdown"] = {
                    "small_job_cpu": round(later["per_small_job"]["total_cpu_ms"]
                                           / report["per_small_job"]["total_cpu_ms"], 3),
                    "fanout_task_cpu": round(later["per_fanout_task"]["total_cpu_ms"]
                                             / report["per_fanout_task"]["total_cpu_ms"], 3),
                    "status_ms": round(later["status_ms_fanout_job"] / report["status_ms_fanout_job"], 3),
                }
    if profiler is not None and args.profile is not None:
        profiler.dump_stats(str(args.profile))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
