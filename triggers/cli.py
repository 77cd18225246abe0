"""The `coremachine` command: submit, status, run, worker, janitor and dead-letter tooling."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from rich.console import Console

from core.errors import ConfigurationError, InvalidParameters, UnknownJobType
from core.ids import is_job_id
from core.models import DeadLetterSelector, JobStatus
from infrastructure.logging import configure_logging
from infrastructure.settings import Settings
from triggers import cli_deadletters, cli_ingest, serve
from triggers.cli_display import print_status, run_job, snapshot_json
from triggers.runtime import Registries, Runtime, build_runtime, load_registries

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def parse_param(text: str) -> tuple[str, Any]:
    """`key=value`; the value is JSON when it parses as JSON (numbers, booleans, lists), else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def build_parser(job_types: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coremachine", description="CoreMachine: jobs → stages → tasks.")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default from settings)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def job_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("job_type", choices=job_types, metavar="JOB_TYPE", help=f"one of: {', '.join(job_types)}")
        p.add_argument("-p", "--param", dest="params", action="append", type=parse_param, default=[],
                       metavar="KEY=VALUE", help="a job parameter; repeat for more (values parse as JSON)")

    p = sub.add_parser("submit", help="submit a job; prints its id (same input → same id)")
    job_args(p)
    p = sub.add_parser("status", help="where a job is, and why it isn't finished")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("run", help="submit, run in-process workers with a live progress bar, wait for the end")
    job_args(p)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait before giving up")
    p = sub.add_parser("worker", help="run a worker until SIGTERM or Ctrl-C")
    p.add_argument("--concurrency", type=int, default=2)
    p = sub.add_parser("janitor", help="take back expired leases, relay stranded messages, report stuck jobs")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--interval", type=float, default=10.0)
    cli_deadletters.add_parser(sub)
    cli_ingest.add_parser(sub)
    serve.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = Settings()
        registries = load_registries(settings)
    except (ConfigurationError, ValidationError) as exc:
        print(f"coremachine: start-up failed: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args = build_parser(registries.jobs.names()).parse_args(argv)
    if args.log_level:
        settings = settings.model_copy(update={"log_level": args.log_level.upper()})
    configure_logging(settings)
    console = Console()
    with build_runtime(settings, registries=registries) as runtime:
        try:
            return _dispatch(args, runtime, registries, console)
        except (InvalidParameters, UnknownJobType) as exc:
            print(f"coremachine: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            return 130


def _dispatch(args: argparse.Namespace, runtime: Runtime, registries: Registries, console: Console) -> int:
    command = args.command
    if command == "submit":
        result = runtime.engine.submit(args.job_type, dict(args.params))
        console.print(result.job.job_id, highlight=False)
        console.print("created" if result.created else "already exists", style="dim")
        return EXIT_OK
    if command == "status":
        return _status(args, runtime, console)
    if command == "run":
        return _run(args, runtime, console)
    if command == "worker":
        return _worker(args, runtime, console)
    if command == "janitor":
        return _janitor(args, runtime, console)
    if command == "deadletters":
        return cli_deadletters.run(args, runtime.transport, console)
    if command == "ingest":
        return cli_ingest.run(args, runtime, console)
    if command == "serve":
        return serve.run(args, runtime, console)
    raise AssertionError(command)


def _status(args: argparse.Namespace, runtime: Runtime, console: Console) -> int:
    if not is_job_id(args.job_id):
        console.print(f"[red]error:[/] {args.job_id!r} is not a job id (64 hex characters)")
        return EXIT_USAGE
    snapshot = runtime.engine.status(args.job_id)
    if snapshot is None:
        console.print(f"[red]error:[/] no job {args.job_id}")
        return EXIT_FAILED
    dead = runtime.transport.list_dead_letters(DeadLetterSelector(job_id=args.job_id))
    if args.json:
        print(json.dumps(snapshot_json(snapshot, dead), default=str, indent=2))
    else:
        print_status(console, snapshot, dead)
    return EXIT_OK


def _run(args: argparse.Namespace, runtime: Runtime, console: Console) -> int:
    snapshot = run_job(runtime, console, args.job_type, dict(args.params), args.concurrency, args.timeout)
    if snapshot is None:
        return EXIT_FAILED
    if snapshot.job.result is not None:
        console.print(json.dumps(snapshot.job.result, indent=2, default=str)[:4000])
    return EXIT_OK if snapshot.job.status is JobStatus.COMPLETED else EXIT_FAILED


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _worker(args: argparse.Namespace, runtime: Runtime, console: Console) -> int:
    if args.concurrency < 1:
        console.print("[red]error:[/] --concurrency must be at least 1")
        return EXIT_USAGE
    stop = _stop_on_signals()
    worker = runtime.worker(concurrency=args.concurrency)
    worker.start()
    console.print(f"worker {runtime.engine.worker_id} running with concurrency {args.concurrency}; "
                  "Ctrl-C or SIGTERM stops it", style="dim")
    stop.wait()
    console.print("stopping: finishing the batches in hand…", style="dim")
    worker.stop()
    console.print(f"stopped after {worker.stats.task_messages} task and {worker.stats.job_messages} job messages",
                  style="dim")
    return EXIT_OK


def _janitor(args: argparse.Namespace, runtime: Runtime, console: Console) -> int:
    stop = _stop_on_signals()
    while True:
        report = runtime.janitor.run_once()
        console.print(json.dumps(report.as_dict()), highlight=False)
        if args.once or stop.wait(args.interval):
            return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
