"""The HTTP API as plain functions: the route table, routing, key checks and error mapping.

Both the Azure blueprint (`http_blueprint`) and the local server (`serve`) call `run_route`; the local server
finds the route with `match` first, Azure's host does that itself.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from urllib.parse import unquote

from core.admin import JobConflict, JobNotFound
from core.errors import InvalidParameters, StoreUnavailable, TransportError, UnknownJobType
from triggers import http_admin, http_health, http_jobs, openapi
from triggers.http_base import API_PREFIX, ApiContext, ApiError, Auth, Request, Response, Route, check_text

log = logging.getLogger("coremachine.http")


def _openapi(ctx: ApiContext, req: Request) -> Response:
    return Response(200, openapi.build_spec(ROUTES))


def _specificity(route: Route) -> tuple[int, ...]:
    """Literal segments before parameters, segment by segment (as ASP.NET routing on Azure prefers them)."""
    return tuple(1 if part.startswith("{") else 0 for part in route.template.split("/"))


ROUTES: list[Route] = sorted(
    [
        *http_jobs.ROUTES,
        *http_health.ROUTES,
        *http_admin.ROUTES,
        Route("openapi", "GET", "openapi.json", _openapi, Auth.ANONYMOUS, "This API's OpenAPI 3 description"),
    ],
    key=_specificity,
)
ROUTES_BY_NAME: dict[str, Route] = {r.name: r for r in ROUTES}


def _match_template(template: str, path: str) -> dict[str, str] | None:
    expected = template.split("/")
    actual = path.split("/")
    if len(expected) != len(actual):
        return None
    params: dict[str, str] = {}
    for want, got in zip(expected, actual, strict=True):
        if want.startswith("{") and want.endswith("}"):
            if not got:
                return None
            params[want[1:-1]] = unquote(got)
        elif want != got:
            return None
    return params


def match(method: str, path: str) -> tuple[Route, dict[str, str]]:
    """The route for a request path such as `/api/jobs/status/<id>`; ApiError 404/405 if there is none."""
    if not (path == API_PREFIX or path.startswith(API_PREFIX + "/")):
        raise ApiError(404, "not_found", f"no route {path!r}; this API lives under {API_PREFIX}/")
    relative = path[len(API_PREFIX) + 1:].rstrip("/")
    allowed: list[str] = []
    for route in ROUTES:
        params = _match_template(route.template, relative)
        if params is None:
            continue
        if route.method == method.upper():
            return route, params
        allowed.append(route.method)
    if allowed:
        raise ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}; allowed: {', '.join(allowed)}",
                       [{"allowed": sorted(set(allowed))}])
    raise ApiError(404, "not_found", f"no route {path!r}; see {API_PREFIX}/openapi.json")


def _presented_key(req: Request) -> str:
    return req.header("x-functions-key") or req.query.get("code") or ""


def check_key(route: Route, req: Request, api_key: str | None, admin_key: str | None) -> None:
    """The local server's stand-in for Azure's function and admin keys (Azure's host checks its own)."""
    if route.auth is Auth.ANONYMOUS:
        return
    accepted = [k for k in ((api_key, admin_key) if route.auth is Auth.FUNCTION else (admin_key,)) if k]
    if route.auth is Auth.FUNCTION and not api_key:
        return
    if route.auth is Auth.ADMIN and not admin_key:
        return
    presented = _presented_key(req).encode()
    if not any(hmac.compare_digest(presented, k.encode()) for k in accepted):
        level = "an admin" if route.auth is Auth.ADMIN else "an API"
        raise ApiError(401, "unauthorized", f"{route.path} needs {level} key in the x-functions-key header")


def run_route(ctx: ApiContext, route: Route, req: Request, *, enforce_keys: bool = False) -> Response:
    """Run one route's handler and map every failure onto the one error shape. Never raises."""
    try:
        if enforce_keys:
            check_key(route, req, ctx.settings.api_key, ctx.settings.admin_key)
        check_text(req)
        limit = ctx.settings.http_max_body_bytes
        if len(req.body) > limit:
            raise ApiError(413, "payload_too_large", f"the body is {len(req.body)} bytes; the limit is {limit}")
        return route.handler(ctx, req)
    except ApiError as exc:
        return exc.response()
    except InvalidParameters as exc:
        return ApiError(400, "invalid_parameters", str(exc), list(exc.details)).response()
    except UnknownJobType as exc:
        return ApiError(404, "unknown_job_type", str(exc), list(exc.valid)).response()
    except JobNotFound as exc:
        return ApiError(404, "job_not_found", str(exc)).response()
    except JobConflict as exc:
        return ApiError(409, "conflict", str(exc), [{"status": exc.job.status.value}]).response()
    except (StoreUnavailable, TransportError) as exc:
        log.warning("http: dependency unavailable", extra={"route": route.name, "error": str(exc)})
        return ApiError(503, "unavailable", str(exc)).response()
    except Exception:
        log.exception("http: unexpected error", extra={"route": route.name})
        return ApiError(500, "internal_error", "unexpected error; see the logs").response()


def handle(
    ctx: ApiContext, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes
) -> Response:
    """Route and run one request given as plain values (the local server's entry point)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        route, params = match(method, path)
    except ApiError as exc:
        return exc.response()
    request = Request(method.upper(), path, dict(query), lowered, body, params)
    return run_route(ctx, route, request, enforce_keys=True)
