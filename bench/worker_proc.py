"""One benchmark worker process: what `coremachine worker` does, plus a readiness line and optional profiling.

    DATABASE_URL=... python -m bench.worker_proc --concurrency 4 [--profile out.prof]

Prints `ready <pid>` on stdout once its threads run, stops on SIGTERM/SIGINT (finishing the batches in hand).
With `--profile`, every `coremachine-*` thread runs under its own cProfile profiler (wall-clock timer, so time
spent waiting for PostgreSQL shows up in the psycopg frames) and the merged stats are written on exit.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from infrastructure.logging import configure_logging
from infrastructure.settings import Settings
from triggers.runtime import build_runtime


def _profile_threads(prefix: str, profiles: list[cProfile.Profile]) -> None:
    """Run every thread whose name starts with `prefix` under its own profiler (cProfile is per-thread)."""
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        if not self.name.startswith(prefix):
            original(self)
            return
        profiler = cProfile.Profile()
        profiles.append(profiler)
        profiler.enable()
        try:
            original(self)
        finally:
            profiler.disable()

    threading.Thread.run = run  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.worker_proc")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--profile", type=Path, default=None, help="write merged cProfile stats here on exit")
    args = parser.parse_args(argv)

    profiles: list[cProfile.Profile] = []
    if args.profile is not None:
        _profile_threads("coremachine-", profiles)

    settings = Settings()
    configure_logging(settings)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with build_runtime(settings, migrate_schema=False) as runtime:
        worker = runtime.worker(concurrency=args.concurrency)
        worker.start()
        print(f"ready {threading.get_native_id()}", flush=True)
        stop.wait()
        worker.stop(timeout=30)
        print(f"stopped tasks={worker.stats.task_messages} jobs={worker.stats.job_messages} "
              f"failures={worker.stats.failures}", flush=True)
    if profiles:
        stats = pstats.Stats(profiles[0])
        for profiler in profiles[1:]:
            stats.add(profiler)
        stats.dump_stats(str(args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
