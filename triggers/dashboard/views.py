"""Dashboard pages: the jobs list, a job's page, dead letters across jobs, and the sign-in form.

Pages are rendered on the server from the same context as the JSON API; the browser's actions (cancel, retry,
replay, purge) call the JSON API with the sign-in cookie, and `?fragment=1` re-renders a page's live part for
the polling script. Assets (CSS, JS) ship in the package: no CDN.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.routing import Match

from core.admin import JobNotFound
from core.diagnosis import explain
from core.ids import is_job_id
from core.models import DeadLetterSelector, JobStatus
from triggers.dashboard.progress import duration, job_progress, rate
from triggers.http_auth import KEY_COOKIE, KEY_HEADER, KEY_QUERY, Auth, accepted_keys
from triggers.http_base import API_PREFIX, ApiContext, Context

DASHBOARD = f"{API_PREFIX}/dashboard"
HERE = Path(__file__).parent
PAGE = 50
FAILED_TASKS = 100
DEAD_LETTERS = 500


class SignIn(Exception):
    """The page needs a key the browser has not presented: send it to the sign-in form."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["duration"] = duration
    templates.env.filters["rate"] = rate
    templates.env.filters["short_task"] = lambda task_id, job_id: (
        task_id[len(job_id) + 1:] if task_id.startswith(job_id + "-") else task_id[-16:])
    templates.env.filters["when"] = lambda d: d.strftime("%Y-%m-%d %H:%M:%S") if d else "—"
    templates.env.globals.update(dashboard=DASHBOARD, api=API_PREFIX)
    return templates


def _presented(request: Request) -> str:
    return (request.headers.get(KEY_HEADER) or request.query_params.get(KEY_QUERY)
            or request.cookies.get(KEY_COOKIE) or "")


def _holds_key(ctx: ApiContext, request: Request, auth: Auth) -> bool:
    """The request presents a key of this level (or the level needs none)."""
    keys = accepted_keys(ctx, request, auth)
    if keys is None:
        return True
    presented = _presented(request).encode()
    return any(hmac.compare_digest(presented, key.encode()) for key in keys)


def _signed_in(ctx: ApiContext, request: Request) -> bool:
    return _holds_key(ctx, request, Auth.FUNCTION)


def _viewer(ctx: Context, request: Request) -> ApiContext:
    if not _signed_in(ctx, request):
        raise SignIn(request.url.path)
    return ctx


def _is_admin(ctx: ApiContext, request: Request) -> bool:
    return _holds_key(ctx, request, Auth.ADMIN)


def add_dashboard(app: FastAPI) -> None:
    """The dashboard's routes, its static assets and the sign-in redirect."""
    templates = _templates()
    app.mount(f"{DASHBOARD}/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")
    app.include_router(_router(templates))

    async def sign_in(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignIn)
        return RedirectResponse(f"{DASHBOARD}/login?next={quote(exc.path)}", status_code=303)

    app.add_exception_handler(SignIn, sign_in)


def _router(templates: Jinja2Templates) -> APIRouter:
    router = APIRouter(prefix=DASHBOARD, include_in_schema=False)

    def page(request: Request, ctx: ApiContext, name: str, fragment: bool, **values: Any) -> HTMLResponse:
        values.update(admin=_is_admin(ctx, request), now=datetime.now(UTC), rerun=_has_rerun(request),
                      keys=accepted_keys(ctx, request, Auth.FUNCTION) is not None)
        return templates.TemplateResponse(request, f"{name}_live.html" if fragment else f"{name}.html", values)

    @router.get("", response_class=HTMLResponse)
    def jobs_page(
        request: Request, ctx: Context,
        status: Annotated[str, Query(max_length=40)] = "", type: Annotated[str, Query(max_length=200)] = "",
        q: Annotated[str, Query(max_length=200)] = "", fragment: bool = False,
    ) -> Response:
        ctx = _viewer(ctx, request)
        search = q.strip().lower()
        if search and is_job_id(search) and ctx.store.get_job(search) is not None:
            return RedirectResponse(f"{DASHBOARD}/jobs/{search}", status_code=303)
        statuses = [JobStatus(status)] if status in {s.value for s in JobStatus} else []
        job_type = type if type in ctx.jobs.names() else None
        jobs = ctx.admin.list_jobs(statuses, job_type, PAGE if not search else 1000, None)
        if search:
            jobs = [j for j in jobs if j.job_id.startswith(search)][:PAGE]
        return page(request, ctx, "jobs", fragment, jobs=jobs, statuses=[s.value for s in JobStatus],
                    job_types=ctx.jobs.names(), status=status, type=job_type or "", q=q)

    @router.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_page(request: Request, ctx: Context, job_id: str, fragment: bool = False) -> Response:
        ctx = _viewer(ctx, request)
        if not is_job_id(job_id):
            raise JobNotFound(job_id)
        snapshot = ctx.store.snapshot(job_id, events=200)
        if snapshot is None:
            raise JobNotFound(job_id)
        dead = ctx.transport.list_dead_letters(DeadLetterSelector(job_id=job_id))
        failed = ctx.admin.list_tasks(job_id, None, ["failed", "retry_scheduled"], FAILED_TASKS, None)
        return page(request, ctx, "job", fragment, job=snapshot.job, snapshot=snapshot,
                    progress=job_progress(snapshot.job, snapshot.stages, datetime.now(UTC)),
                    diagnosis=explain(snapshot, dead), dead_letters=dead, failed_tasks=failed,
                    events=list(reversed(snapshot.events)))

    @router.get("/deadletters", response_class=HTMLResponse)
    def dead_letters_page(request: Request, ctx: Context, fragment: bool = False) -> Response:
        ctx = _viewer(ctx, request)
        rows = ctx.transport.list_dead_letters(DeadLetterSelector(), limit=DEAD_LETTERS)
        job_ids = {str(d.properties.get("job_id", "")) for d in rows}
        jobs = {job_id: ctx.store.get_job(job_id) for job_id in job_ids if is_job_id(job_id)}
        return page(request, ctx, "deadletters", fragment, dead_letters=rows, jobs=jobs)

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = DASHBOARD, error: str = "") -> Response:
        return templates.TemplateResponse(request, "login.html", {"next": _local(next), "error": error})

    @router.post("/login")
    async def login(request: Request, ctx: Context) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=4)
        key, target = form.get("key", [""])[0], _local(form.get("next", [DASHBOARD])[0])
        keys = accepted_keys(ctx, request, Auth.FUNCTION)
        if keys is not None and not any(hmac.compare_digest(key.encode(), k.encode()) for k in keys):
            return RedirectResponse(f"{DASHBOARD}/login?next={quote(target)}&error=wrong+key", status_code=303)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict", path=API_PREFIX,
                            secure=request.url.scheme == "https")
        return response

    @router.post("/logout")
    def logout() -> Response:
        response = RedirectResponse(f"{DASHBOARD}/login", status_code=303)
        response.delete_cookie(KEY_COOKIE, path=API_PREFIX)
        return response

    return router


def _has_rerun(request: Request) -> bool:
    """Whether this app serves the rerun route (the dashboard offers the button only then)."""
    scope = {"type": "http", "method": "POST", "path": f"{API_PREFIX}/jobs/{'0' * 64}/rerun"}
    return any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes)


def _local(target: str) -> str:
    """Only a path of this dashboard, never another site, as the place to go after signing in."""
    return target if target.startswith(DASHBOARD) and "//" not in target and "\\" not in target else DASHBOARD
