"""Admin routes of the HTTP API: dead letters list, replay and purge, over the same Transport calls as the CLI.

Azure Functions refuses HTTP routes that begin with `admin` (the host keeps `/admin` for itself, even under
the `/api` prefix: azure-functions-host#1781), so these live under `/api/ops/`, at the admin auth level.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.models import DeadLetterSelector
from triggers.cli_deadletters import as_json
from triggers.http_base import ApiContext, ApiError, Auth, Request, Response, Route, json_object, page_limit

ADMIN_ROUTE_PREFIX = "ops"
QUEUES = ("jobs", "tasks")
PURGE_PREVIEW_LIMIT = 10_000
_SELECTOR_FIELDS = ("ids", "queue", "job_id", "task_type", "reason", "all", "dry_run")


@dataclass(frozen=True, slots=True)
class Selection:
    selector: DeadLetterSelector
    all: bool
    dry_run: bool


def _flag(data: Mapping[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no", ""):
        return value.lower() in ("true", "1", "yes")
    raise ApiError(400, "invalid_selector", f"{name} must be true or false",
                   [{"field": name, "message": f"got {value!r}"}])


def _text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 500:
        raise ApiError(400, "invalid_selector", f"{name} must be a string",
                       [{"field": name, "message": f"got {type(value).__name__}"}])
    return value


def parse_selection(data: Mapping[str, Any], *, require_choice: bool) -> Selection:
    """Selectors from a JSON body or a query string; the same rules as `coremachine deadletters`."""
    unknown = sorted(set(data) - set(_SELECTOR_FIELDS) - {"limit", "cursor"})
    if unknown:
        raise ApiError(400, "invalid_selector", f"unknown selector field(s): {', '.join(unknown)}",
                       [{"field": f, "message": "not a selector field"} for f in unknown])
    raw_ids = data.get("ids", [])
    if isinstance(raw_ids, str):
        raw_ids = [i.strip() for i in raw_ids.split(",") if i.strip()]
    if not isinstance(raw_ids, list) or not all(isinstance(i, str) and 0 < len(i) <= 200 for i in raw_ids):
        raise ApiError(400, "invalid_selector", "ids must be a list of dead letter id strings",
                       [{"field": "ids", "message": "must be a list of strings"}])
    queue = _text(data, "queue")
    if queue is not None and queue not in QUEUES:
        raise ApiError(400, "invalid_selector", f"queue must be one of {', '.join(QUEUES)}",
                       [{"field": "queue", "message": f"got {queue!r}"}])
    selector = DeadLetterSelector(queue=queue, ids=tuple(raw_ids), job_id=_text(data, "job_id"),
                                  task_type=_text(data, "task_type"), reason=_text(data, "reason"))
    selection = Selection(selector, _flag(data, "all"), _flag(data, "dry_run"))
    if require_choice and selector.everything and not selector.queue and not selection.all:
        raise ApiError(400, "selector_required",
                       "name dead letter ids, a selector (job_id, task_type, reason, queue), or all=true",
                       [{"field": "ids", "message": "no selector given"}])
    return selection


def list_dead_letters(ctx: ApiContext, req: Request) -> Response:
    selection = parse_selection(req.query, require_choice=False)
    limit = page_limit(req)
    after = req.query.get("cursor") or None
    if after is not None and not after.isdecimal():
        raise ApiError(400, "invalid_cursor", "cursor is not one this API returned")
    rows = ctx.transport.list_dead_letters(selection.selector, limit=limit + 1, after=after)
    page, more = rows[:limit], len(rows) > limit
    return Response(200, {"dead_letters": [as_json(d) for d in page], "next_cursor": page[-1].id if more else None})


def replay_dead_letters(ctx: ApiContext, req: Request) -> Response:
    selection = parse_selection(json_object(req, required=True), require_choice=True)
    replayed = ctx.transport.replay_dead_letters(selection.selector, dry_run=selection.dry_run)
    return Response(200, {"dry_run": selection.dry_run, "count": len(replayed),
                          "dead_letters": [as_json(d) for d in replayed]})


def purge_dead_letters(ctx: ApiContext, req: Request) -> Response:
    data: dict[str, Any] = dict(req.query)
    data.update(json_object(req))
    selection = parse_selection(data, require_choice=True)
    if selection.dry_run:
        rows = ctx.transport.list_dead_letters(selection.selector, limit=PURGE_PREVIEW_LIMIT)
        return Response(200, {"dry_run": True, "count": len(rows), "dead_letters": [as_json(d) for d in rows]})
    return Response(200, {"dry_run": False, "count": ctx.transport.purge_dead_letters(selection.selector)})


ROUTES = [
    Route("deadletters_list", "GET", f"{ADMIN_ROUTE_PREFIX}/deadletters", list_dead_letters, Auth.ADMIN,
          "Dead letters, oldest first, paged"),
    Route("deadletters_replay", "POST", f"{ADMIN_ROUTE_PREFIX}/deadletters/replay", replay_dead_letters, Auth.ADMIN,
          "Replay dead letters (one id, a filter, or all; dry_run)"),
    Route("deadletters_purge", "DELETE", f"{ADMIN_ROUTE_PREFIX}/deadletters", purge_dead_letters, Auth.ADMIN,
          "Purge dead letters (same selectors; dry_run)"),
]
