"""What every HTTP route shares: the context it runs against, the one error shape, JSON bodies and cursors."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, Field, ValidationError

from core.engine import CoreMachine
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
JOB_ID_PATTERN = "^[0-9a-f]{64}$"
NO_NUL_PATTERN = "^[^\\x00]*$"

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class ApiContext:
    """Everything a route may touch, taken from the composition root's Runtime."""

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


ContextProvider = Callable[[], ApiContext]


def _context(request: Request) -> ApiContext:
    provider: ContextProvider = request.app.state.context_provider
    return provider()


Context = Annotated[ApiContext, Depends(_context)]


class ErrorBody(BaseModel):
    """The one error shape: a stable code, a sentence for people, and details naming each bad field."""

    error: str = Field(description="stable machine-readable code, e.g. invalid_parameters")
    message: str
    details: list[Any] = Field(description="per-field problems ({field, message}) or other specifics")


class ApiError(Exception):
    """An answer other than success, in the one error shape."""

    def __init__(
        self, status: int, code: str, message: str, details: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return ErrorBody(error=self.code, message=self.message, details=self.details).model_dump()


def encode_cursor(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(raw: str | None) -> dict[str, Any] | None:
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


async def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON object body; an absent body is `{}`. Refuses other media types, non-objects, NaN."""
    body = await request.body()
    if not body.strip():
        return {}
    content_type = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if content_type != JSON_TYPE and not (content_type.startswith("application/") and content_type.endswith("+json")):
        raise ApiError(415, "unsupported_media_type",
                       f"the body must be JSON (Content-Type: {JSON_TYPE}), got {content_type or 'no content type'!r}")
    try:
        value = json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if _has_nul(value):
        raise ApiError(400, "invalid_json", "the body contains a NUL character (\\u0000), which cannot be stored")
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_body", f"the body must be a JSON object, got {type(value).__name__}")
    return value


JsonObject = Annotated[dict[str, Any], Depends(json_object)]


def parse_body(model: type[M], data: dict[str, Any]) -> M:
    """`data` as `model`, or a 400 naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, "invalid_body", "the body does not fit the request schema", [
            {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "message": err["msg"]} for err in exc.errors()
        ]) from None


class BodyModels:
    """Request bodies each operation documents: the routes read JSON themselves (one parse, our error shape),
    so the OpenAPI document gets their models from here rather than from FastAPI's body parameters."""

    def __init__(self) -> None:
        self.models: dict[str, tuple[type[BaseModel], bool]] = {}

    def add(self, operation_id: str, model: type[BaseModel], *, required: bool) -> None:
        self.models[operation_id] = (model, required)


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
