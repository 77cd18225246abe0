"""HTTP protocol hygiene in front of the routes, as one ASGI middleware: body size limit (also for chunked
bodies), HEAD as GET without a body, OPTIONS and 405 with a full `Allow`."""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from triggers.http_base import ApiError

Routes = Callable[[], list[BaseRoute]]


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(routes: list[BaseRoute], scope: Scope) -> set[str]:
    """Every method some route answers at the request's path (GET implies HEAD); empty if no route has it."""
    methods = {
        method for method in METHODS
        if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)
    }
    if "GET" in methods:
        methods.add("HEAD")
    return methods | {"OPTIONS"} if methods else methods


def _error(exc: ApiError) -> Response:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


class ProtocolMiddleware:
    def __init__(self, app: ASGIApp, routes: Routes, max_body: int) -> None:
        self.app = app
        self.routes = routes
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"].upper()
        path = scope["path"]
        allowed = allowed_methods(self.routes(), scope)
        if allowed and method not in allowed:
            listed = ", ".join(sorted(allowed))
            await _error(ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}; allowed: {listed}",
                                  [{"allowed": sorted(allowed)}], {"Allow": listed}))(scope, receive, send)
            return
        if method == "OPTIONS" and allowed:
            await Response(status_code=204, headers={"Allow": ", ".join(sorted(allowed))})(scope, receive, send)
            return
        limit = self.max_body
        length = _content_length(scope)
        if length is not None and length > limit:
            error = ApiError(413, "payload_too_large", f"the body is {length} bytes; the limit is {limit}",
                             headers={"Connection": "close"})
            await _error(error)(scope, receive, send)
            return
        receive = _limited(receive, limit)
        if method == "HEAD":
            scope = {**scope, "method": "GET"}
            send = _without_body(send)
        await self.app(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _limited(receive: Receive, limit: int) -> Receive:
    """`receive` that refuses a body growing past `limit` (a chunked body has no Content-Length to check)."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise ApiError(413, "payload_too_large", f"the body is over the limit of {limit} bytes",
                               headers={"Connection": "close"})
        return message

    return wrapped


def _without_body(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return wrapped
