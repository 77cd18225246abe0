"""What every HTTP route shares: the context it runs against, the one error shape and JSON bodies."""

from __future__ import annotations

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


async def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON object body; an empty body is `{}`. Refuses other media types, non-objects, NaN."""
    body = await request.body()
    if not body:
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


_RULES = frozenset({"value_error", "assertion_error"})  # raised by a model's own validators


def integral(value: Any) -> Any:
    """`value` with whole-number floats as ints: JSON Schema counts 3.0 as an integer, strict Pydantic does not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


def parse_body(model: type[M], data: dict[str, Any], *, code: str = "invalid_body", what: str = "the body") -> M:
    """`data` held to `model` as JSON is typed (strict: `false` is no integer, "5" no number), so a body the
    OpenAPI document accepts is accepted and one it refuses is refused. 400 naming each bad field when the body
    breaks the schema; 422 when it fits the schema and only breaks the model's own rules."""
    try:
        return model.model_validate_json(json.dumps(integral(data)), strict=True)
    except ValidationError as exc:
        errors = exc.errors()
        details = [{"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]} for e in errors]
        fields = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        status = 422 if all(e["type"] in _RULES for e in errors) else 400
        raise ApiError(status, code, f"invalid {what}: {fields}", details) from None


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
