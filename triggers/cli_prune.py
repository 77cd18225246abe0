"""`coremachine prune [--older-than AGE] [--dry-run]`: delete finished jobs past their retention, by hand."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from core.retention import PruneLimits, PruneReport, RetentionPolicy, prune
from triggers.cli_output import EXIT_OK, Context, UsageError

_AGE = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_age(text: str) -> timedelta:
    """'90s', '15m', '12h', '7d', '2w' → timedelta."""
    match = _AGE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age like 90s, 15m, 12h, 7d or 2w")
    return timedelta(seconds=float(match["n"]) * _UNIT_SECONDS[match["unit"]])


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "prune", help="delete finished jobs (tasks, stages, events, settled messages, dead letters) past retention"
    )
    p.add_argument("--older-than", type=parse_age, metavar="AGE",
                   help="one retention for every terminal state (90s, 15m, 12h, 7d, 2w); default: the settings'")
    p.add_argument("--dry-run", action="store_true", help="count what would be pruned, delete nothing")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    runtime, out = ctx.runtime, ctx.out
    policy = runtime.retention
    if args.older_than is not None:
        policy = RetentionPolicy.uniform(args.older_than)
        try:
            policy.check_at_least(timedelta(seconds=runtime.settings.duplicate_window_seconds))
        except ValueError as exc:
            raise UsageError(f"--older-than: {exc}") from exc
    now = datetime.now(UTC)
    report = prune(runtime.pruner, policy, now, dry_run=args.dry_run)
    while not report.complete:  # by hand: keep going, still in bounded transactions
        more = prune(runtime.pruner, policy, now, PruneLimits())
        report = PruneReport(False, _add(report.jobs, more.jobs), report.rows + more.rows, more.complete)
    if args.json:
        out.json({"dry_run": report.dry_run, "jobs": report.jobs, "rows": report.rows})
        return EXIT_OK
    verb = "would prune" if report.dry_run else "pruned"
    per_state = ", ".join(f"{n} {state}" for state, n in report.jobs.items() if n) or "nothing"
    out.console.print(f"{verb} {report.total_jobs} job(s): {per_state}")
    if not report.dry_run:
        out.console.print(f"{report.rows} task and event rows deleted", style="dim")
    return EXIT_OK


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}
