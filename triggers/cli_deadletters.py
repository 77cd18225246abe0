"""`coremachine deadletters list|show|replay|purge`: one implementation over the Transport port."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from core.models import DeadLetter, DeadLetterSelector
from core.ports import Transport

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    p = actions.add_parser("show", help="one dead letter in full")
    p.add_argument("id")
    p = actions.add_parser("replay", help="send back to the queue under a new message id")
    selectors(p)
    p.add_argument("--dry-run", action="store_true", help="show what would be replayed, change nothing")
    p = actions.add_parser("purge", help="delete for good")
    selectors(p)
    p.add_argument("--dry-run", action="store_true", help="show what would be purged, change nothing")


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


def run(args: argparse.Namespace, transport: Transport, console: Console) -> int:
    if args.action == "show":
        dl = transport.get_dead_letter(args.id)
        if dl is None:
            console.print(f"[red]error:[/] no dead letter {args.id}")
            return EXIT_FAILED
        print(json.dumps(as_json(dl), indent=2))
        return EXIT_OK
    selector = selector_from(args)
    if args.action == "list":
        rows = transport.list_dead_letters(selector, limit=args.limit)
        if args.json:
            print(json.dumps([as_json(d) for d in rows], indent=2))
        else:
            console.print(_table(rows))
        return EXIT_OK
    if selector.everything and not selector.queue and not args.all:
        console.print("[red]error:[/] name dead letter ids, a selector (--job-id, --task-type, --reason, "
                      "--queue), or --all")
        return EXIT_USAGE
    if args.action == "replay":
        replayed = transport.replay_dead_letters(selector, dry_run=args.dry_run)
        verb = "would replay" if args.dry_run else "replayed"
        console.print(_table(replayed))
        console.print(f"{verb} {len(replayed)} message(s)")
        return EXIT_OK
    if args.dry_run:
        rows = transport.list_dead_letters(selector, limit=10_000)
        console.print(_table(rows))
        console.print(f"would purge {len(rows)} message(s)")
        return EXIT_OK
    console.print(f"purged {transport.purge_dead_letters(selector)} message(s)")
    return EXIT_OK


def _table(rows: list[DeadLetter]) -> Table:
    table = Table(title=f"{len(rows)} dead letter(s)")
    for column in ("id", "queue", "reason", "job", "task type", "deliveries", "replays", "description"):
        table.add_column(column)
    for d in rows:
        table.add_row(d.id, d.queue, d.reason, str(d.properties.get("job_id", ""))[:12],
                      str(d.properties.get("task_type", "")), str(d.delivery_count), str(d.replay_count),
                      d.description[:60])
    return table
