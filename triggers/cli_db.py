"""`coremachine db status|stop`: the embedded PostgreSQL server that runs when `DATABASE_URL` is unset."""

from __future__ import annotations

import argparse
from typing import Any

from infrastructure.postgres.embedded import embedded_status, stop_embedded_server
from infrastructure.settings import Settings
from triggers.cli_output import EXIT_OK, Context, Output


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("db", help="status or stop of the embedded PostgreSQL server")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("status", help="running?, data directory, URL, size (never starts it)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_status, needs_runtime=False)
    p = actions.add_parser("stop", help="stop it cleanly; the next command starts it again")
    p.set_defaults(handler=_stop, needs_runtime=False)


def embedded_running(settings: Settings) -> bool:
    """Whether the embedded server (the one this command would use) is running; False with DATABASE_URL."""
    return settings.database_url is None and embedded_status(settings.data_dir).running


def announce_start(settings: Settings, was_running: bool, out: Output) -> None:
    """Say once, when this command started the embedded server, that it keeps running and how to stop it."""
    if settings.database_url is None and not was_running and embedded_running(settings):
        out.note(f"started the embedded PostgreSQL server (data in {settings.data_dir / 'pgdata'}); it keeps "
                 "running for the next commands; `coremachine db stop` stops it")


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _status(args: argparse.Namespace, ctx: Context) -> int:
    status = embedded_status(ctx.settings.data_dir)
    uses_url = ctx.settings.database_url is not None
    if args.json:
        ctx.out.json({**status.as_dict(), "used": not uses_url})
        return EXIT_OK
    console = ctx.out.console
    if uses_url:
        console.print("DATABASE_URL is set: commands use that server, not the embedded one.")
    console.print(f"Embedded server: {'running' if status.running else 'not running'}"
                  + (f" (pid {status.pid}, since {status.started_at:%Y-%m-%d %H:%M:%S})" if status.running else ""))
    console.print(f"Data directory: {status.pgdata}"
                  + ("" if status.initialised else " (not created yet)"), soft_wrap=True)
    if status.url:
        console.print(f"URL: {status.url}", soft_wrap=True)
    console.print(f"Size: {_size(status.size_bytes)}")
    return EXIT_OK


def _stop(args: argparse.Namespace, ctx: Context) -> int:
    if stop_embedded_server(ctx.settings.data_dir):
        ctx.out.console.print("Embedded server stopped.")
    else:
        ctx.out.console.print("Embedded server is not running.")
    return EXIT_OK
