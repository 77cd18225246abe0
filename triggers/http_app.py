"""The HTTP app (FastAPI): the JSON API under /api, its OpenAPI document, Swagger UI and the operators'
dashboard, with one error shape.

The same app is served by uvicorn locally (`coremachine serve`) and by Azure Functions through
`azure.functions.AsgiFunctionApp` (function_app.py). Routes run against an `ApiContext` from a provider, so
nothing touches the database until the first request.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from core.admin import JobConflict, JobNotFound
from core.errors import ConfigurationError, InvalidParameters, StoreUnavailable, TransportError, UnknownJobType
from core.jobs import JobRegistry
from triggers import http_openapi
from triggers.dashboard.views import DASHBOARD, add_dashboard
from triggers.http_admin import admin_router
from triggers.http_base import API_PREFIX, ApiError, BodyModels, ContextProvider
from triggers.http_health import health_router
from triggers.http_jobs import job_router
from triggers.http_protocol import ProtocolMiddleware
from triggers.swagger import add_docs

log = logging.getLogger("coremachine.http")

OPENAPI_PATH = f"{API_PREFIX}/openapi.json"
DOCS_PATH = f"{API_PREFIX}/docs"
DESCRIPTION = (
    "Jobs → stages → tasks. Every error has the shape {error, message, details}; details name each bad field. "
    "Keys go in the x-functions-key header (or ?code=): job routes take the API key or the admin key, "
    "/api/ops routes the admin key only. Strings may not contain NUL characters."
)


def create_app(jobs: JobRegistry, provider: ContextProvider, *, max_body_bytes: int,
               require_keys: bool = False) -> FastAPI:
    """The app for these job types. `require_keys`: a route whose key is not configured is closed, not open
    (the Azure app); locally an unset key leaves its routes open, as Azure's host does when run locally."""
    app = FastAPI(title="CoreMachine", version="0.1.0", description=DESCRIPTION, openapi_url=None, docs_url=None,
                  redoc_url=None, generate_unique_id_function=_operation_id)
    app.state.context_provider = provider
    app.state.require_keys = require_keys
    bodies = BodyModels()
    app.include_router(job_router(jobs, bodies), prefix=API_PREFIX)
    app.include_router(admin_router(bodies), prefix=API_PREFIX)
    app.include_router(health_router(), prefix=API_PREFIX)
    add_docs(app, DOCS_PATH, OPENAPI_PATH)
    add_dashboard(app)
    spec: dict[str, Any] = {}

    @app.get(OPENAPI_PATH, include_in_schema=False)
    def openapi() -> JSONResponse:
        if not spec:
            spec.update(http_openapi.build(app, bodies, DESCRIPTION))
        return JSONResponse(spec)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(DASHBOARD)

    _add_error_handlers(app)
    app.add_middleware(ProtocolMiddleware, routes=lambda: app.router.routes, max_body=max_body_bytes)
    return app


def _operation_id(route: APIRoute) -> str:
    return route.name


def _json(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [{"field": str(err["loc"][-1]) if err.get("loc") else "(request)", "message": err["msg"]}
               for err in exc.errors()]
    places = {err["loc"][0] for err in exc.errors() if err.get("loc")}
    if "path" in places and any(d["field"] == "job_id" for d in details):
        code, message = "invalid_job_id", "the job id must be 64 lowercase hex characters"
    elif "query" in places:
        code, message = "invalid_query", "a query parameter is invalid: " + "; ".join(
            f"{d['field']}: {d['message']}" for d in details)
    else:
        code, message = "invalid_request", "the request is invalid"
    return _json(ApiError(400, code, message, details))


def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _json(ApiError(404, "not_found", f"no route {request.url.path!r}; see {OPENAPI_PATH}"))
    headers = dict(exc.headers or {})
    return _json(ApiError(exc.status_code, "http_error", str(exc.detail), headers=headers))


def _mapped(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, ApiError):
        return _json(exc)
    if isinstance(exc, InvalidParameters):
        return _json(ApiError(400, "invalid_parameters", str(exc), list(exc.details)))
    if isinstance(exc, UnknownJobType):
        return _json(ApiError(404, "unknown_job_type", str(exc), list(exc.valid)))
    if isinstance(exc, JobNotFound):
        return _json(ApiError(404, "job_not_found", str(exc)))
    if isinstance(exc, JobConflict):
        return _json(ApiError(409, "conflict", str(exc), [{"status": exc.status}]))
    if isinstance(exc, ConfigurationError):
        log.error("http: the app cannot start", extra={"path": request.url.path, "error": str(exc)})
        return _json(ApiError(503, "startup", str(exc), list(getattr(exc, "problems", []))))
    if isinstance(exc, StoreUnavailable | TransportError):
        log.warning("http: dependency unavailable", extra={"path": request.url.path, "error": str(exc)})
        return _json(ApiError(503, "unavailable", str(exc)))
    log.exception("http: unexpected error", extra={"path": request.url.path}, exc_info=exc)
    return _json(ApiError(500, "internal_error", "unexpected error; see the logs"))


def _add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    for kind in (ApiError, InvalidParameters, UnknownJobType, JobNotFound, JobConflict, ConfigurationError,
                 StoreUnavailable, TransportError, Exception):
        app.add_exception_handler(kind, _mapped)
