"""The Azure Functions blueprint of the HTTP API: one function per route of `http_api.ROUTES`.

Each function converts `func.HttpRequest` to the transport-independent `Request`, runs the shared handler and
converts back. The host enforces the auth level (function or admin key). The runtime comes from a provider:
by default `triggers.azure_runtime.get_runtime()`; tests install their own with `set_context_provider`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from urllib.parse import urlsplit

import azure.functions as func

from triggers import azure_runtime
from triggers.http_api import ROUTES, run_route
from triggers.http_base import JSON_TYPE, ApiContext, Auth, Request, Response, Route

bp = func.Blueprint()  # type: ignore[no-untyped-call]

_LEVELS = {Auth.ANONYMOUS: func.AuthLevel.ANONYMOUS, Auth.FUNCTION: func.AuthLevel.FUNCTION,
           Auth.ADMIN: func.AuthLevel.ADMIN}
_lock = threading.Lock()
_provider: Callable[[], ApiContext] | None = None
_cached: tuple[object, ApiContext] | None = None


def set_context_provider(provider: Callable[[], ApiContext] | None) -> None:
    """Install the source of the ApiContext (tests); None restores the default (the Azure runtime)."""
    global _provider, _cached
    with _lock:
        _provider, _cached = provider, None


def _context() -> ApiContext:
    global _cached
    if _provider is not None:
        return _provider()
    runtime = azure_runtime.get_runtime()
    with _lock:
        if _cached is None or _cached[0] is not runtime:
            _cached = (runtime, ApiContext.from_runtime(runtime))
        return _cached[1]


def to_request(req: func.HttpRequest) -> Request:
    return Request(
        method=req.method.upper(),
        path=urlsplit(req.url).path,
        query={k: v for k, v in req.params.items()},
        headers={k.lower(): v for k, v in req.headers.items()},
        body=req.get_body() or b"",
        route_params={k: v for k, v in req.route_params.items()},
    )


def _function(route: Route) -> Callable[[func.HttpRequest], func.HttpResponse]:
    def handler(req: func.HttpRequest) -> func.HttpResponse:
        try:
            context = _context()
        except azure_runtime.StartupError as exc:
            response = Response(503, {"status": "not_ready", "error": "startup", "problems": exc.problems})
        else:
            response = run_route(context, route, to_request(req))
        return func.HttpResponse(body=response.encoded(), status_code=response.status, mimetype=JSON_TYPE,
                                 headers=dict(response.headers))

    handler.__name__ = handler.__qualname__ = route.name
    return handler


for _route in ROUTES:
    bp.function_name(_route.name)(
        bp.route(route=_route.template, methods=[_route.method], auth_level=_LEVELS[_route.auth])(_function(_route))
    )
