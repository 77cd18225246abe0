"""The `coremachine` command: one parser, one registration function per command group, one error guard.

A command group's `add_parser(sub, ...)` adds its subcommands and sets, on each, `handler(args, ctx) -> exit code`
and optionally `check(args, registries)` (validation that runs before any connection is opened or anything is
created) and `needs_runtime=False` (commands that must not start the database, such as `db`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from core.ids import is_job_id
from core.jobs import JobRegistry
from core.models import DeadLetterSelector
from core.rounds import Refusal
from infrastructure.logging import configure_logging
from infrastructure.settings import Settings
from triggers import cli_db, cli_deadletters, cli_ingest, cli_prune, cli_worker, serve
from triggers.cli_display import print_status, snapshot_json
from triggers.cli_output import (
    EXIT_OK,
    CliError,
    Context,
    NotFound,
    Output,
    Parser,
    UsageError,
    bounded_float,
    bounded_int,
    guarded,
)
from triggers.cli_run import run_job, run_summary_code
from triggers.runtime import Registries, build_runtime, load_registries

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
OPERATOR_COMMANDS = {
    "cancel": "stop a queued or processing job (its unstarted tasks at once)",
    "retry": "run again the failed and cancelled tasks where an ended job stopped (a new round)",
    "rerun": "run an ended job again from stage 1 (a new round of the same job id, history kept)",
}


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


def _job_type(jobs: JobRegistry) -> Any:
    """An argparse `type` accepting every registered job type; only the public ones are named in messages."""

    def parse(text: str) -> str:
        if text not in jobs.names():
            raise argparse.ArgumentTypeError(
                f"unknown job type {text!r}; choose from {', '.join(jobs.public_names())}")
        return text

    return parse


def add_job_commands(sub: Any, jobs: JobRegistry) -> None:
    """`submit`, `status`, `cancel`, `retry`, `rerun` and `run`."""
    public = ", ".join(jobs.public_names())

    def job_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("job_type", type=_job_type(jobs), metavar="JOB_TYPE", help=f"one of: {public}")
        p.add_argument("-p", "--param", dest="params", action="append", type=parse_param, default=[],
                       metavar="KEY=VALUE", help="a job parameter; repeat for more (values parse as JSON)")
        p.set_defaults(check=_check_parameters)

    p = sub.add_parser("submit", help="submit a job; prints its id (same input → same id)")
    job_args(p)
    p.add_argument("--json", action="store_true", help="print {job_id, created} as JSON")
    p.set_defaults(handler=_submit)
    p = sub.add_parser("status", help="where a job is, and why it isn't finished")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true", help="machine-readable output (errors too, on stderr)")
    p.set_defaults(handler=_status, check=_check_job_id)
    for name, text in OPERATOR_COMMANDS.items():
        p = sub.add_parser(name, help=text)
        p.add_argument("job_id")
        if name == "cancel":
            p.add_argument("--reason", default="cancelled by an operator", help="kept as the job's error")
        p.add_argument("--json", action="store_true", help="print what was done as JSON")
        p.set_defaults(handler=_operator, check=_check_job_id)
    p = sub.add_parser("run", help="submit, run in-process workers with a live progress bar, wait for the end")
    job_args(p)
    p.add_argument("--concurrency", type=bounded_int(1), default=4, help="task threads (default 4)")
    p.add_argument("--timeout", type=bounded_float(0.001), default=3600.0, help="seconds to wait before giving up")
    p.set_defaults(handler=_run)


def build_parser(registries: Registries) -> argparse.ArgumentParser:
    parser = Parser(prog="coremachine", description="CoreMachine: jobs → stages → tasks.")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default=None,
                        help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default from settings)")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also COREMACHINE_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_job_commands(sub, registries.jobs)
    cli_worker.add_parser(sub)
    cli_deadletters.add_parser(sub)
    cli_db.add_parser(sub)
    cli_ingest.add_parser(sub)
    sub.choices["ingest"].set_defaults(handler=lambda args, ctx: cli_ingest.run(args, ctx.runtime, ctx.out.console))
    cli_prune.add_parser(sub)
    serve.add_parser(sub)
    sub.choices["serve"].set_defaults(handler=lambda args, ctx: serve.run(args, ctx.runtime, ctx.out.console))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    out = Output.for_argv(arguments)
    return guarded(out, lambda: _main(arguments, out))


def _main(argv: list[str], out: Output) -> int:
    settings = Settings()
    registries = load_registries(settings)
    # --debug is read from anywhere on the line (Output.for_argv), so it is also accepted after the subcommand.
    args = build_parser(registries).parse_args([a for a in argv if a != "--debug"])
    if args.log_level:
        settings = settings.model_copy(update={"log_level": args.log_level})
    configure_logging(settings)
    check = getattr(args, "check", None)
    if check is not None:
        check(args, registries)
    if not getattr(args, "needs_runtime", True):
        return int(args.handler(args, Context(settings, registries, out, None)))
    was_running = cli_db.embedded_running(settings)
    with build_runtime(settings, registries=registries) as runtime:
        cli_db.announce_start(settings, was_running, out)
        return int(args.handler(args, Context(settings, registries, out, runtime)))


def _check_parameters(args: argparse.Namespace, registries: Registries) -> None:
    """Parameters are validated before the job exists (and before the database is touched)."""
    registries.jobs.get(args.job_type).validate_parameters(dict(args.params))


def _check_job_id(args: argparse.Namespace, registries: Registries) -> None:
    if not is_job_id(args.job_id):
        raise UsageError(f"{args.job_id!r} is not a job id (64 hex characters)", code="invalid_job_id")


def _submit(args: argparse.Namespace, ctx: Context) -> int:
    result = ctx.runtime.engine.submit(args.job_type, dict(args.params))
    if args.json:
        ctx.out.json({"job_id": result.job.job_id, "created": result.created})
    else:
        ctx.out.console.print(result.job.job_id)
        ctx.out.console.print("created" if result.created else "already exists", style="dim")
    return EXIT_OK


def _status(args: argparse.Namespace, ctx: Context) -> int:
    snapshot = ctx.runtime.engine.status(args.job_id)
    if snapshot is None:
        raise NotFound(f"no job {args.job_id}")
    dead = ctx.runtime.transport.list_dead_letters(DeadLetterSelector(job_id=args.job_id))
    if args.json:
        ctx.out.json(snapshot_json(snapshot, dead))
    else:
        print_status(ctx.out.console, snapshot, dead)
    return EXIT_OK


def _operator(args: argparse.Namespace, ctx: Context) -> int:
    """cancel / retry / rerun JOB_ID: exit 0 when done, 1 when the job is missing or not in a state it applies to."""
    engine = ctx.runtime.engine
    if args.command == "cancel":
        result = engine.cancel(args.job_id, args.reason)
    elif args.command == "retry":
        result = engine.retry(args.job_id)
    else:
        result = engine.rerun(args.job_id)
    if result.refusal is Refusal.NOT_FOUND:
        raise NotFound(result.message)
    if not result.accepted:
        raise CliError(result.message, code=result.refusal.value if result.refusal else "refused")
    if args.json:
        ctx.out.json(result.as_dict())
    else:
        ctx.out.console.print(f"{args.command}: {result.message} (round {result.round})", highlight=False)
    return EXIT_OK


def _run(args: argparse.Namespace, ctx: Context) -> int:
    snapshot = run_job(ctx.runtime, ctx.out.console, args.job_type, dict(args.params), args.concurrency, args.timeout)
    if snapshot.job.result is not None:
        ctx.out.console.print(json.dumps(snapshot.job.result, indent=2, default=str)[:4000], soft_wrap=True)
    return run_summary_code(snapshot)


__all__ = ["CliError", "build_parser", "main", "parse_param"]

if __name__ == "__main__":
    sys.exit(main())
