"""`make bench`: fan-out, job throughput, stage creation and the commit ceiling, printed as ONE JSON object.

    python bench/fanout.py [--runs N] [--quick] [--concurrency C] [--workers W] [--profile DIR]
                           [--skip-ingest | --only-ingest] [--skip-scale]

Every run starts a FRESH embedded PostgreSQL cluster (pgserver) in a new temporary directory with the server's
default durability (fsync and synchronous_commit on; nothing is tuned), migrates it, and measures:

- `commit_ceiling_per_s`: one-row UPDATE commits per second from 2 autocommit connections on the same
  database, each updating its own row, for ~3 s — what this disk + server can commit at all;
- `create_100k_tasks_s`: one stage of 100,000 tasks created (rows and messages) by handling the stage-1 job
  message in-process, no workers (in a second database of the same cluster, so workers never see them);
  `create_100k_store_s` is `store.start_stage(plan)` alone for a prepared plan;
- `fanout_tasks_per_s`: one job with one stage of 10,000 no-op tasks, submit → job completed, with 2 worker
  processes (`python -m bench.worker_proc`) running; `peak_rss_mb` is the largest worker RSS (process tree)
  sampled every 50 ms during it; `fanout_vs_ceiling` = fanout_tasks_per_s ÷ commit_ceiling_per_s;
- `jobs_per_s`: 500 two-stage jobs x 4 no-op tasks per stage submitted at once (one batch submit, as
  `POST /api/jobs/submit/{job_type}/batch` does), until all are finished, with p50/p99 job latency (finished_at -
  created_at); `jobs_one_by_one_per_s` and its latencies: the same burst submitted job by job from 4 threads;
- `ingest_rows_per_s`: 200,000 generated rows across 20 workbooks (written once per invocation, not timed)
  ingested by the `ingest` job in execute mode on the same 2 workers, submit → job finished;
  `excel_read_floor_rows_per_s` is pandas `read_excel` (openpyxl engine) of the same files, sequentially in the
  benchmark process, in the same run; `ingest_vs_read_floor` is their ratio (see bench/ingest.py);
- `ingest_1m_rows`: one generated 1,000,000-row workbook ingested in execute mode on the same workers;
  `ingest_1m_peak_rss_mb` is the larger worker's peak RSS during it.

With `--runs N` the whole run repeats N times (a fresh cluster each time) and the figures are medians; each
run's figures are under `per_run`. `--quick` uses small sizes (a smoke test). `--profile DIR` (one run) also
writes per-worker cProfile stats, a per-statement server timing table and EXPLAIN ANALYZE plans to DIR —
its throughput figures are distorted by the profiling and are not benchmark results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (`python bench/fanout.py`): make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cluster import BenchCluster, filesystem_of
from bench.ingest import clear_target, generate, ingest, read_floor
from bench.measure import (
    bench_runtime,
    commit_ceiling,
    counter_delta,
    create_stage,
    fanout,
    many_jobs,
    server_counters,
)
from bench.profile import PhaseProfiler
from bench.scale import idle_job_latency, status_ms, wide_fanout, with_history
from bench.workers import RssSampler, WorkerFleet, cpu_seconds

TARGETS = {"fanout_vs_ceiling": (">=", 1.6), "create_100k_tasks_s": ("<=", 10.0), "peak_rss_mb": ("<=", 250.0),
           "ingest_vs_read_floor": (">=", 3.0), "ingest_1m_peak_rss_mb": ("<=", 500.0),
           "jobs_per_s": (">=", 300.0), "job_latency_p50_s": ("<=", 1.0),
           "idle_job_latency_p50_ms": ("<=", 20.0), "idle_job_latency_p99_ms": ("<=", 50.0),
           "create_1m_tasks_s": ("<=", 10.0), "fanout_1m_vs_10k": (">=", 0.9), "status_ms_100k_task_job": ("<=", 10.0),
           "history_fanout_slowdown": ("<=", 1.10), "history_status_slowdown": ("<=", 1.10)}
STATS_SETTLE_SECONDS = 2.5  # PostgreSQL backends publish their statistics counters about once a second


@dataclass(frozen=True)
class Sizes:
    fanout_tasks: int
    jobs: int
    job_stages: int
    job_tasks_per_stage: int
    create_tasks: int
    ceiling_seconds: float
    ceiling_connections: int
    warmup_tasks: int
    ingest_rows: int
    ingest_workbooks: int
    ingest_big_rows: int
    idle_jobs: int
    wide_tasks: int
    wide_window_s: float
    history_tasks: int


FULL = Sizes(fanout_tasks=10_000, jobs=500, job_stages=2, job_tasks_per_stage=4, create_tasks=100_000,
             ceiling_seconds=3.0, ceiling_connections=2, warmup_tasks=200, ingest_rows=200_000, ingest_workbooks=20,
             ingest_big_rows=1_000_000, idle_jobs=50, wide_tasks=1_000_000, wide_window_s=30.0, history_tasks=2_000_000)
QUICK = Sizes(fanout_tasks=200, jobs=10, job_stages=2, job_tasks_per_stage=4, create_tasks=2_000,
              ceiling_seconds=0.5, ceiling_connections=2, warmup_tasks=20, ingest_rows=2_000, ingest_workbooks=2,
              ingest_big_rows=20_000, idle_jobs=5, wide_tasks=20_000, wide_window_s=2.0, history_tasks=20_000)


@dataclass(frozen=True)
class IngestData:
    """The workbooks generated once per invocation: `data_root` for the workers, `reports_dir` for the reports."""

    data_root: Path
    reports_dir: Path
    paths: list[Path]
    rows: int
    workbooks: int
    big_root: Path  # one workbook of `big_rows` rows (the ingest_1m_rows phase)
    big_rows: int


def one_run(
    number: int, sizes: Sizes, workers: int, concurrency: int, profile_dir: Path | None,
    timeout: float, *, engine_phases: bool = True, scale_phases: bool = True, data: IngestData | None = None,
) -> dict[str, Any]:
    """One complete measurement on a fresh cluster; returns its figures.

    `engine_phases` runs the commit ceiling, stage creation, fan-out and many-jobs phases; `data` (when given)
    the read floor and the executed ingest, after them."""
    cluster = BenchCluster.start()
    figures: dict[str, Any] = {}
    try:
        server = cluster.settings()
        if server["fsync"] != "on" or server["synchronous_commit"] != "on":
            raise RuntimeError(f"the bench cluster must have default durability, it has {server}")
        figures["server"] = {**server, "filesystem": filesystem_of(cluster.root)}

        if engine_phases:
            figures["commit_ceiling_per_s"] = commit_ceiling(
                cluster.url, sizes.ceiling_seconds, sizes.ceiling_connections)
            if scale_phases:
                figures.update(wide_phases(cluster, sizes, number, workers, concurrency, timeout))

        if data is not None:  # pandas alone on the same files, before any worker runs (an idle machine)
            floor = read_floor(data.paths, data.rows)
            floor2 = read_floor(data.paths, data.rows, processes=2)

        profiler = PhaseProfiler(cluster, profile_dir)
        profiler.configure_server()
        extra_env = {} if data is None else {
            "COREMACHINE_DATA_ROOT": str(data.data_root), "COREMACHINE_REPORTS_DIR": str(data.reports_dir)}
        fleet = WorkerFleet(cluster.url, workers, concurrency, cluster.root / "worker-logs", profile_dir,
                            extra_env=extra_env)
        fleet.start()
        sampler = RssSampler(fleet.pids).start()
        try:
            with bench_runtime(cluster.url, cluster.root) as runtime:
                if engine_phases:
                    fanout(runtime, cluster.url, sizes.warmup_tasks, f"warmup-{number}", min(timeout, 120),
                           fleet.check)
                    time.sleep(STATS_SETTLE_SECONDS)
                    before = server_counters(cluster.url)
                    cpu_workers, cpu_server = cpu_seconds(fleet.pids), cpu_seconds([cluster.postmaster_pid])
                    sampler.reset()
                    with profiler.phase("fanout", sizes.fanout_tasks):
                        fan = fanout(runtime, cluster.url, sizes.fanout_tasks, f"fanout-{number}", timeout,
                                     fleet.check)
                    sampler.sample()
                    figures["peak_rss_mb"] = sampler.peak_mb
                    cpu_workers = cpu_seconds(fleet.pids) - cpu_workers
                    cpu_server = cpu_seconds([cluster.postmaster_pid]) - cpu_server
                    time.sleep(STATS_SETTLE_SECONDS)
                    delta = counter_delta(before, server_counters(cluster.url))
                    figures["status_ms_fanout_job"] = status_ms(runtime, fan.job_id)
                    with profiler.phase("jobs", sizes.jobs):
                        jobs = many_jobs(runtime, cluster.url, sizes.jobs, sizes.job_tasks_per_stage,
                                         f"jobs-{number}", timeout, health=fleet.check)
                    with profiler.phase("singly", sizes.jobs):
                        singly = many_jobs(runtime, cluster.url, sizes.jobs, sizes.job_tasks_per_stage,
                                           f"singly-{number}", timeout, health=fleet.check, one_by_one=True)
                    with profiler.phase("idle", sizes.idle_jobs):
                        idle = idle_job_latency(runtime, cluster.url, sizes.idle_jobs, sizes.job_tasks_per_stage,
                                                f"idle-{number}", min(timeout, 60), fleet.check)
                    if scale_phases:
                        figures["history_fill_s"] = with_history(cluster.url, sizes.history_tasks)
                        fan_history = fanout(runtime, cluster.url, sizes.fanout_tasks, f"fanout-history-{number}",
                                             timeout, fleet.check)
                        status_history = status_ms(runtime, fan.job_id)
                    sampler.sample()
                    figures["peak_rss_mb_all_phases"] = sampler.peak_mb
                if data is not None:
                    ingest_cpu_workers, ingest_cpu_server = (cpu_seconds(fleet.pids),
                                                             cpu_seconds([cluster.postmaster_pid]))
                    sampler.reset()
                    with profiler.phase("ingest", data.rows):
                        ing = ingest(runtime, cluster.url, data.rows, data.workbooks, timeout, fleet.check,
                                     data_root=data.data_root)
                    sampler.sample()
                    figures["ingest_peak_rss_mb"] = sampler.peak_mb
                    ingest_cpu_workers = cpu_seconds(fleet.pids) - ingest_cpu_workers
                    ingest_cpu_server = cpu_seconds([cluster.postmaster_pid]) - ingest_cpu_server
                    clear_target(cluster.url)
                    sampler.reset()
                    with profiler.phase("ingest_1m", data.big_rows):
                        big = ingest(runtime, cluster.url, data.big_rows, 1, timeout, fleet.check,
                                     data_root=data.big_root)
                    sampler.sample()
                    figures["ingest_1m_peak_rss_mb"] = sampler.peak_mb
        except BaseException:
            for i in range(len(fleet.processes)):
                print(f"--- worker {i} log (tail)\n{fleet.log_tail(i)}", file=sys.stderr)
            raise
        finally:
            sampler.stop()
            fleet.stop()

        if engine_phases:
            figures["fanout_s"] = fan.seconds
            figures["fanout_tasks_per_s"] = fan.tasks_per_s
            figures["fanout_vs_ceiling"] = fan.tasks_per_s / figures["commit_ceiling_per_s"]
            figures["jobs_per_s"] = jobs.jobs_per_s
            figures["jobs_s"] = jobs.seconds
            figures["jobs_submit_s"] = jobs.submit_seconds
            figures["job_latency_p50_s"] = jobs.latency_p50_s
            figures["job_latency_p99_s"] = jobs.latency_p99_s
            figures["job_latency_max_s"] = jobs.latency_max_s
            figures["jobs_one_by_one_per_s"] = singly.jobs_per_s
            figures["jobs_one_by_one_submit_s"] = singly.submit_seconds
            figures["job_one_by_one_latency_p50_s"] = singly.latency_p50_s
            figures["job_one_by_one_latency_p99_s"] = singly.latency_p99_s
            figures["idle_job_latency_p50_ms"] = idle.p50_ms
            figures["idle_job_latency_p99_ms"] = idle.p99_ms
            figures["idle_job_latency_max_ms"] = idle.max_ms
            n = sizes.fanout_tasks
            figures["fanout_diagnostics"] = {
                "commits_per_task": delta["xact_commit"] / n,
                "wal_syncs_per_task": delta["wal_sync"] / n,
                "wal_kb_per_task": delta["wal_bytes"] / n / 1024,
                "wal_sync_ms_per_task": delta["wal_sync_time"] / n,  # 0 unless track_wal_io_timing (--profile)
                "worker_cpu_s": cpu_workers,
                "postgres_cpu_s": cpu_server,
                "cpu_busy_share": (cpu_workers + cpu_server) / (fan.seconds * (os.cpu_count() or 1)),
            }
        if engine_phases and scale_phases:
            figures["fanout_1m_vs_10k"] = figures["fanout_1m_tasks_per_s"] / fan.tasks_per_s
            figures["history_slowdown"] = {
                "finished_tasks": sizes.history_tasks,
                "fanout_tasks_per_s_empty": fan.tasks_per_s,
                "fanout_tasks_per_s_history": fan_history.tasks_per_s,
                "status_ms_empty": figures["status_ms_fanout_job"],
                "status_ms_history": status_history,
            }
            figures["history_fanout_slowdown"] = fan.tasks_per_s / fan_history.tasks_per_s
            figures["history_status_slowdown"] = status_history / figures["status_ms_fanout_job"]
        if data is not None:
            figures["ingest_rows_per_s"] = ing.rows_per_s
            figures["excel_read_floor_rows_per_s"] = floor.rows_per_s
            figures["ingest_vs_read_floor"] = ing.rows_per_s / floor.rows_per_s
            figures["excel_read_floor_2proc_rows_per_s"] = floor2.rows_per_s
            figures["ingest_vs_read_floor_2proc"] = ing.rows_per_s / floor2.rows_per_s
            figures["ingest_s"] = ing.seconds
            figures["excel_read_floor_s"] = floor.seconds
            figures["excel_read_floor_2proc_s"] = floor2.seconds
            figures["ingest_rows"] = {
                "generated": ing.rows, "input": ing.input_rows, "output": ing.output_rows,
                "rejected": ing.rejected_rows, "skipped": ing.skipped_rows, "loaded": ing.loaded_rows,
                "pandas_frame_rows": floor.frame_rows,
            }
            figures["ingest_stage_s"] = ing.stage_s
            figures["ingest_1m_rows"] = {
                "rows": big.rows, "seconds": big.seconds, "rows_per_s": big.rows_per_s, "loaded": big.loaded_rows,
                "rejected": big.rejected_rows, "stage_s": big.stage_s,
            }
            figures["ingest_diagnostics"] = {
                "worker_cpu_s": ingest_cpu_workers,
                "postgres_cpu_s": ingest_cpu_server,
                "cpu_busy_share": (ingest_cpu_workers + ingest_cpu_server) / (ing.seconds * (os.cpu_count() or 1)),
            }
        if profiler.enabled:
            figures["profile"] = profiler.write()
    finally:
        cluster.close()
    return figures


def wide_phases(
    cluster: BenchCluster, sizes: Sizes, number: int, workers: int, concurrency: int, timeout: float
) -> dict[str, Any]:
    """In a second database of the cluster (the main workers never see it): stage creation of 100k and of 1M
    tasks with no worker running, the status of the 100k-task job, then the drain rate of those stages with
    their own workers."""
    figures: dict[str, Any] = {}
    create_url = cluster.create_database("bench_create")
    with bench_runtime(create_url, cluster.root) as runtime:
        create = create_stage(runtime, sizes.create_tasks, f"create-{number}")
        figures["create_100k_tasks_s"] = create.handle_s
        figures["create_100k_store_s"] = create.store_s
        figures["status_ms_100k_task_job"] = status_ms(runtime, create.job_id)
        wide = create_stage(runtime, sizes.wide_tasks, f"wide-{number}", store_alone=False)
        figures["create_1m_tasks_s"] = wide.handle_s
    fleet = WorkerFleet(create_url, workers, concurrency, cluster.root / "wide-worker-logs")
    fleet.start()
    try:
        drain = wide_fanout(create_url, sizes.wide_window_s, min(timeout, 300), fleet.check)
    finally:
        fleet.stop()
    cluster.drop_database("bench_create")
    figures["fanout_1m_tasks_per_s"] = drain.tasks_per_s
    figures["fanout_1m_window"] = {"seconds": drain.window_s, "tasks": drain.tasks_in_window}
    return figures


def median_of(values: Sequence[Any]) -> Any:
    """Median of numbers, key-wise for dicts of numbers; the first value for anything else."""
    first = values[0]
    if isinstance(first, bool) or not isinstance(first, int | float | dict):
        return first
    if isinstance(first, dict):
        return {k: median_of([v[k] for v in values]) for k in first}
    return float(statistics.median(values))


def summarize(per_run: list[dict[str, Any]], sizes: Sizes, args: argparse.Namespace) -> dict[str, Any]:
    keys = [k for k in per_run[0] if k not in ("server", "profile")]
    out: dict[str, Any] = {k: median_of([r[k] for r in per_run]) for k in keys}
    targets = {k: t for k, t in TARGETS.items() if k in out}  # --skip-ingest / --only-ingest measure a part
    out["targets"] = {k: f"{op} {v}" for k, (op, v) in targets.items()}
    out["targets_met"] = {
        k: (out[k] >= v if op == ">=" else out[k] <= v) for k, (op, v) in targets.items()
    }
    out.update(
        runs=len(per_run),
        quick=args.quick,
        cpu_count=os.cpu_count(),
        workers=args.workers,
        concurrency_per_worker=args.concurrency,
        phases={"engine": not args.only_ingest, "scale": not (args.only_ingest or args.skip_scale),
                "ingest": not args.skip_ingest},
        sizes=asdict(sizes),
        server=per_run[0]["server"],
        python=sys.version.split()[0],
        per_run=per_run,
    )
    if "profile" in per_run[0]:
        out["profile"] = per_run[0]["profile"]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/fanout.py", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--runs", type=int, default=1, help="repeat the whole measurement N times; report medians")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=4, help="task threads per worker process (default 4)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for any one phase")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="one profiled run; cProfile, statement timings and plans go to DIR")
    phases = parser.add_mutually_exclusive_group()
    phases.add_argument("--skip-ingest", action="store_true", help="leave out the read floor and the ingest")
    phases.add_argument("--only-ingest", action="store_true", help="only the read floor and the ingest")
    parser.add_argument("--skip-scale", action="store_true",
                        help="leave out the 1M-task stages and the history phase (for a quick look at throughput)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.workers < 1 or args.concurrency < 1:
        parser.error("--runs, --workers and --concurrency must be at least 1")
    if args.profile is not None:
        args.runs = 1
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    sizes = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="coremachine-bench-ingest-") as tmp:
        data = None
        if not args.skip_ingest:  # generated once per invocation; not measured
            folder = Path(tmp)
            paths = generate(folder / "data", sizes.ingest_rows, sizes.ingest_workbooks)
            generate(folder / "big", sizes.ingest_big_rows, 1)
            data = IngestData(folder / "data", folder / "reports", paths, sizes.ingest_rows, sizes.ingest_workbooks,
                              folder / "big", sizes.ingest_big_rows)
        per_run = [
            one_run(i + 1, sizes, args.workers, args.concurrency, args.profile, args.timeout,
                    engine_phases=not args.only_ingest, scale_phases=not args.skip_scale, data=data)
            for i in range(args.runs)
        ]
    print(json.dumps(summarize(per_run, sizes, args), indent=2, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
