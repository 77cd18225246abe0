"""Admin routes of the HTTP API: dead letters list, replay and purge, over the same Transport calls as the CLI.

Azure Functions refuses HTTP routes that begin with `admin` (the host keeps `/admin` for itself, even under
the `/api` prefix: azure-functions-host#1781), so these live under `/api/ops/`, behind the admin key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from core.models import DeadLetterSelector
from triggers.http_auth import AdminKey
from triggers.http_base import (
    DEFAULT_PAGE,
    MAX_PAGE,
    NO_NUL_PATTERN,
    ApiError,
    BodyModels,
    Context,
    JsonObject,
    parse_body,
)
from triggers.http_models import DeadLetterAction, DeadLetterBody, DeadLetterPage

ADMIN_ROUTE_PREFIX = "ops"
PURGE_PREVIEW_LIMIT = 10_000

Queue = Literal["jobs", "tasks"]
Text = Annotated[str, Field(min_length=1, max_length=500, pattern=NO_NUL_PATTERN)]
DeadLetterId = Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL_PATTERN)]


class Selection(BaseModel):
    """Which dead letters: ids, a filter (queue, job_id, task_type, reason), or all=true; the same rules as the
    CLI. A selection of nothing is refused (422) rather than taken as everything."""

    model_config = ConfigDict(extra="forbid")

    ids: list[DeadLetterId] = Field(default_factory=list, max_length=1000)
    queue: Queue | None = None
    job_id: Text | None = None
    task_type: Text | None = None
    reason: Text | None = None
    all: bool = Field(default=False, description="every dead letter (required when nothing else selects)")
    dry_run: bool = Field(default=False, description="only show what would be affected")

    def selector(self) -> DeadLetterSelector:
        return DeadLetterSelector(queue=self.queue, ids=tuple(self.ids), job_id=self.job_id,
                                  task_type=self.task_type, reason=self.reason)

    def chosen(self) -> DeadLetterSelector:
        """The selector, refusing one that selects everything by accident."""
        selector = self.selector()
        if selector.everything and not selector.queue and not self.all:
            raise ApiError(422, "selector_required",
                           "name dead letter ids, a selector (job_id, task_type, reason, queue), or all=true",
                           [{"field": "ids", "message": "no selector given"}])
        return selector


_SELECTION_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "an invalid selection"}, 415: {"description": "the body is not JSON"},
    422: {"description": "nothing selected: name ids, a filter, or all=true"},
}
QueueQuery = Annotated[Queue | None, Query(description="jobs or tasks")]
TextQuery = Annotated[str | None, Query(min_length=1, max_length=500, pattern=NO_NUL_PATTERN)]


def admin_router(bodies: BodyModels) -> APIRouter:
    router = APIRouter(prefix=f"/{ADMIN_ROUTE_PREFIX}/deadletters", tags=["dead letters"], dependencies=[AdminKey])

    @router.get("", response_model=DeadLetterPage, summary="Dead letters, oldest first, paged",
                responses={400: {"description": "invalid query"}})
    def deadletters_list(
        ctx: Context, queue: QueueQuery = None, job_id: TextQuery = None, task_type: TextQuery = None,
        reason: TextQuery = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"page size (1-{MAX_PAGE})")] = DEFAULT_PAGE,
        cursor: Annotated[str | None, Query(min_length=1, max_length=200, pattern=NO_NUL_PATTERN,
                                            description="next_cursor of the previous page")] = None,
    ) -> DeadLetterPage:
        selector = DeadLetterSelector(queue=queue, job_id=job_id, task_type=task_type, reason=reason)
        rows = ctx.transport.list_dead_letters(selector, limit=limit + 1, after=cursor)
        page, more = rows[:limit], len(rows) > limit
        return DeadLetterPage(dead_letters=[DeadLetterBody.of(d) for d in page],
                              next_cursor=page[-1].id if more else None)

    @router.post("/replay", response_model=DeadLetterAction,
                 summary="Replay dead letters (ids, a filter, or all; dry_run first)",
                 responses=_SELECTION_ERRORS)
    def deadletters_replay(ctx: Context, body: JsonObject) -> DeadLetterAction:
        selection = parse_body(Selection, body)
        replayed = ctx.transport.replay_dead_letters(selection.chosen(), dry_run=selection.dry_run)
        return DeadLetterAction(dry_run=selection.dry_run, count=len(replayed),
                                dead_letters=[DeadLetterBody.of(d) for d in replayed])

    bodies.add("deadletters_replay", Selection, required=True)

    @router.post("/purge", response_model=DeadLetterAction,
                 summary="Purge dead letters for good (the same selection; dry_run lists them instead)",
                 responses=_SELECTION_ERRORS)
    def deadletters_purge(ctx: Context, body: JsonObject) -> DeadLetterAction:
        selection = parse_body(Selection, body)
        selector = selection.chosen()
        if selection.dry_run:
            rows = ctx.transport.list_dead_letters(selector, limit=PURGE_PREVIEW_LIMIT)
            return DeadLetterAction(dry_run=True, count=len(rows), dead_letters=[DeadLetterBody.of(d) for d in rows])
        return DeadLetterAction(dry_run=False, count=ctx.transport.purge_dead_letters(selector))

    bodies.add("deadletters_purge", Selection, required=True)

    return router
