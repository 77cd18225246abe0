"""`coremachine deadletters list|show|replay|purge`: one implementation over the Transport port."""

from __future__ import annotations

import argparse
from typing import Any

from rich import box
from rich.table import Table

from core.models import DeadLetter, DeadLetterSelector
from triggers.cli_output import EXIT_OK, Context, NotFound, UsageError, bounded_int


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("deadletters", help="list, show, replay or purge dead-lettered messages")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def selectors(p: argparse.ArgumentParser, ids: bool = True) -> None:
        p.add_argument("--queue", choices=("jobs", "tasks"))
        p.add_argument("--job-id")
        p.add_argument("--task-type")
        p.add_argument("--reason")
        if ids:
            p.add_argument("ids", nargs="*", metavar="ID", help="dead letter ids")
            p.add_argument("--all", action="store_true", help="every dead letter (required when no selector)")

    p = actions.add_parser("list", help="dead letters, oldest first")
    selectors(p, ids=False)
    p.add_argument("--limit", type=bounded_int(1), default=100, help="at most N (default 100)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = actions.add_parser("show", help="one dead letter in full (JSON)")
    p.add_argument("id")
    p.add_argument("--json", action="store_true", help="accepted for symmetry: the output is always JSON")
    for action, verb in (("replay", "replayed"), ("purge", "purged")):
        help_text = ("send back to the queue under a new message id" if action == "replay" else "delete for good")
        p = actions.add_parser(action, help=help_text)
        selectors(p)
        p.add_argument("--dry-run", action="store_true", help=f"show what would be {verb}, change nothing")
        p.add_argument("--json", action="store_true", help="print the dead letters concerned as JSON")
    parser.set_defaults(handler=run, check=check)


def check(args: argparse.Namespace, registries: object) -> None:
    """`replay`/`purge` need ids, a selector or `--all`, and `--all` means everything, so nothing beside it."""
    if args.action not in ("replay", "purge"):
        return
    named = args.ids or args.job_id or args.task_type or args.reason or args.queue
    if args.all and named:
        raise UsageError("--all means every dead letter: give it alone, without ids or selectors")
    if not args.all and not named:
        raise UsageError("name dead letter ids, a selector (--job-id, --task-type, --reason, --queue), or --all")


def selector_from(args: argparse.Namespace) -> DeadLetterSelector:
    return DeadLetterSelector(
        queue=args.queue, ids=tuple(getattr(args, "ids", ()) or ()), job_id=args.job_id,
        task_type=args.task_type, reason=args.reason,
    )


def as_json(dl: DeadLetter) -> dict[str, Any]:
    return {
        "id": dl.id, "queue": dl.queue, "message_id": dl.message_id, "reason": dl.reason,
        "description": dl.description, "delivery_count": dl.delivery_count, "replay_count": dl.replay_count,
        "dead_lettered_at": dl.dead_lettered_at.isoformat() if dl.dead_lettered_at else None,
        "body": dl.body, "properties": dl.properties,
    }


def run(args: argparse.Namespace, ctx: Context) -> int:
    transport, out = ctx.runtime.transport, ctx.out
    if args.action == "show":
        dl = transport.get_dead_letter(args.id)
        if dl is None:
            raise NotFound(f"no dead letter {args.id}")
        out.json(as_json(dl))
        return EXIT_OK
    selector = selector_from(args)
    if args.action == "list":
        rows = transport.list_dead_letters(selector, limit=args.limit)
        if args.json:
            out.json([as_json(d) for d in rows])
        else:
            out.console.print(_table(rows))
        return EXIT_OK
    if args.action == "replay":
        rows = transport.replay_dead_letters(selector, dry_run=args.dry_run)
    else:
        rows = transport.list_dead_letters(selector, limit=1_000_000)
    if not rows:
        raise NotFound(f"no dead letter matches {_describe(args)}; nothing to {args.action}")
    purge_now = args.action == "purge" and not args.dry_run
    count = transport.purge_dead_letters(selector) if purge_now else len(rows)
    done = f"would {args.action}" if args.dry_run else {"replay": "replayed", "purge": "purged"}[args.action]
    if args.json:
        out.json({"dry_run": args.dry_run, "count": count, "dead_letters": [as_json(d) for d in rows]})
    else:
        out.console.print(_table(rows))
        out.console.print(f"{done.capitalize()} {count} message(s).")
    return EXIT_OK


def _describe(args: argparse.Namespace) -> str:
    parts = [f"id {', '.join(args.ids)}"] if args.ids else []
    parts += [f"--{name.replace('_', '-')} {getattr(args, name)}" for name in ("queue", "job_id", "task_type", "reason")
              if getattr(args, name)]
    return " and ".join(parts) or "(all)"


def _table(rows: list[DeadLetter]) -> Table:
    """Fits 80 columns: ids and numbers never wrap, words fold only where a column is too narrow for them."""
    table = Table(title=f"{len(rows)} dead letter(s)", box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("id", "queue", "reason", "job", "task type", "tries", "replays", "description"):
        wide = column in ("reason", "task type", "description")
        table.add_column(column, overflow="fold", no_wrap=not wide, ratio=2 if column == "description" else None)
    for d in rows:
        table.add_row(d.id, d.queue, d.reason, str(d.properties.get("job_id", ""))[:12],
                      str(d.properties.get("task_type", "")), str(d.delivery_count), str(d.replay_count),
                      d.description[:60])
    return table
