"""`coremachine worker` and `coremachine janitor`: the long-running processes."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from triggers.cli_output import EXIT_OK, Context, bounded_float, bounded_int

JANITOR_MIN_INTERVAL = 1.0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("worker", help="run a worker until SIGTERM or Ctrl-C")
    p.add_argument("--concurrency", type=bounded_int(1), default=2, help="task threads (default 2)")
    p.set_defaults(handler=_worker)
    p = sub.add_parser("janitor", help="take back expired leases, relay stranded messages, report stuck jobs")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--interval", type=bounded_float(JANITOR_MIN_INTERVAL), default=10.0,
                   help=f"seconds between passes (at least {JANITOR_MIN_INTERVAL:g}; default 10)")
    p.add_argument("--json", action="store_true", help="accepted for symmetry: the report is always JSON lines")
    p.set_defaults(handler=_janitor)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _worker(args: argparse.Namespace, ctx: Context) -> int:
    stop = _stop_on_signals()
    worker = ctx.runtime.worker(concurrency=args.concurrency)
    worker.start()
    ctx.out.note(f"worker {ctx.runtime.engine.worker_id} running with concurrency {args.concurrency}; "
                 "Ctrl-C or SIGTERM stops it")
    stop.wait()
    ctx.out.note("stopping: finishing the batches in hand")
    worker.stop()
    ctx.out.note(f"stopped after {worker.stats.task_messages} task and {worker.stats.job_messages} job messages")
    return EXIT_OK


def _janitor(args: argparse.Namespace, ctx: Context) -> int:
    """One JSON object per pass on stdout (written straight to the stream, so never wrapped)."""
    stop = _stop_on_signals()
    while True:
        ctx.out.json(ctx.runtime.janitor.run_once().as_dict(), compact=True)
        if args.once or stop.wait(args.interval):
            return EXIT_OK
