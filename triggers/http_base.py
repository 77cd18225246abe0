"""Transport-independent HTTP types: request, response, error, route and the context handlers run against."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from core.engine import CoreMachine
from core.ids import is_job_id
from core.jobs import JobRegistry
from core.ports import Relay, Transport
from core.registry import TaskRegistry
from infrastructure.postgres.admin import PostgresAdmin
from infrastructure.postgres.database import Database
from infrastructure.postgres.store import PostgresStore
from infrastructure.settings import Settings

API_PREFIX = "/api"
JSON_TYPE = "application/json"
MAX_PAGE = 500
DEFAULT_PAGE = 50


class Auth(StrEnum):
    """Who may call a route: Azure's auth levels, enforced by the host there and by `serve` locally."""

    ANONYMOUS = "anonymous"
    FUNCTION = "function"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    route_params: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        return json.dumps(self.body, default=str, ensure_ascii=False).encode("utf-8")


class ApiError(Exception):
    """An answer other than success, in the one error shape: {"error", "message", "details"}."""

    def __init__(self, status: int, code: str, message: str, details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []

    def response(self) -> Response:
        return Response(self.status, {"error": self.code, "message": self.message, "details": self.details})


@dataclass(frozen=True)
class ApiContext:
    """Everything a handler may touch, taken from the composition root's Runtime."""

    settings: Settings
    engine: CoreMachine
    store: PostgresStore
    transport: Transport
    relay: Relay
    jobs: JobRegistry
    tasks: TaskRegistry
    database: Database
    admin: PostgresAdmin

    @classmethod
    def from_runtime(cls, runtime: Any) -> ApiContext:
        return cls(
            settings=runtime.settings, engine=runtime.engine, store=runtime.store, transport=runtime.transport,
            relay=runtime.relay, jobs=runtime.registries.jobs, tasks=runtime.registries.tasks,
            database=runtime.database, admin=PostgresAdmin(runtime.store),
        )


Handler = Callable[[ApiContext, Request], Response]


@dataclass(frozen=True, slots=True)
class Route:
    """One operation: `template` is the path below /api in Azure's syntax, e.g. `jobs/{job_id}/tasks`."""

    name: str
    method: str
    template: str
    handler: Handler
    auth: Auth = Auth.FUNCTION
    summary: str = ""

    @property
    def path(self) -> str:
        return f"{API_PREFIX}/{self.template}"


def job_id_param(req: Request) -> str:
    job_id = req.route_params.get("job_id", "")
    if not is_job_id(job_id):
        raise ApiError(400, "invalid_job_id", f"{job_id!r} is not a job id (64 lowercase hex characters)",
                       [{"field": "job_id", "message": "must be 64 lowercase hex characters"}])
    return job_id


def page_limit(req: Request) -> int:
    raw = req.query.get("limit")
    if raw is None or raw == "":
        return DEFAULT_PAGE
    if not raw.isdecimal() or not 1 <= int(raw) <= MAX_PAGE:
        raise ApiError(400, "invalid_query", f"limit must be an integer from 1 to {MAX_PAGE}",
                       [{"field": "limit", "message": f"got {raw!r}"}])
    return int(raw)


def int_param(req: Request, name: str, minimum: int = 1) -> int | None:
    raw = req.query.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdecimal() or int(raw) < minimum or int(raw) > 2**31 - 1:
        raise ApiError(400, "invalid_query", f"{name} must be an integer of at least {minimum}",
                       [{"field": name, "message": f"got {raw!r}"}])
    return int(raw)


def encode_cursor(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(req: Request) -> dict[str, Any] | None:
    raw = req.query.get("cursor")
    if not raw:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        value = None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_cursor", "cursor is not one this API returned",
                       [{"field": "cursor", "message": "pass next_cursor from the previous page unchanged"}])
    return value


def json_body(req: Request, *, empty: Any = None) -> Any:
    """The parsed JSON body; `empty` stands in for an absent body (if None, a body is required)."""
    if not req.body.strip():
        if empty is None:
            raise ApiError(400, "invalid_body", "a JSON body is required")
        return empty
    content_type = (req.header("content-type") or "").split(";", 1)[0].strip().lower()
    if content_type != JSON_TYPE and not (content_type.startswith("application/") and content_type.endswith("+json")):
        raise ApiError(415, "unsupported_media_type",
                       f"the body must be JSON (Content-Type: {JSON_TYPE}), got {content_type or 'no content type'!r}")
    try:
        value = json.loads(req.body, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if _has_nul(value):
        raise ApiError(400, "invalid_json", "the body contains a NUL character (\\u0000), which cannot be stored")
    return value


def json_object(req: Request, *, required: bool = False) -> dict[str, Any]:
    value = json_body(req, empty=None if required else {})
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_body", f"the body must be a JSON object, got {type(value).__name__}")
    return value


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def check_text(req: Request) -> None:
    """Query strings and path parameters must not carry NUL characters (PostgreSQL text cannot hold them)."""
    for where, values in (("query", req.query), ("path", req.route_params)):
        for name, value in values.items():
            if "\x00" in name or "\x00" in value:
                raise ApiError(400, "invalid_request", f"a {where} parameter contains a NUL character",
                               [{"field": name.replace("\x00", ""), "message": "contains NUL"}])
