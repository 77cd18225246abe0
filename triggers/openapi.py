"""The OpenAPI 3 description of the HTTP API, built from the route table so the two cannot drift apart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from triggers.http_base import MAX_PAGE, Auth, Route

_ERROR = {"$ref": "#/components/schemas/Error"}
_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}
_JOB_STATUSES = ["queued", "processing", "finalizing", "completed", "completed_with_errors", "failed", "cancelled"]
_TASK_STATUSES = ["queued", "running", "retry_scheduled", "completed", "failed", "cancelled"]


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_PAGE = [
    _query("limit", f"page size (1-{MAX_PAGE}, default 50)", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
    _query("cursor", "next_cursor of the previous page", {"type": "string"}),
]
_SELECTORS = [
    _query("queue", "jobs or tasks", {"type": "string", "enum": ["jobs", "tasks"]}),
    _query("job_id", "dead letters of one job", {"type": "string"}),
    _query("task_type", "dead letters of one task type", {"type": "string"}),
    _query("reason", "dead letters with this reason", {"type": "string"}),
]
_SELECTION_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "ids": {"type": "array", "items": {"type": "string"}}, "queue": {"type": "string", "enum": ["jobs", "tasks"]},
        "job_id": {"type": "string"}, "task_type": {"type": "string"}, "reason": {"type": "string"},
        "all": {"type": "boolean"}, "dry_run": {"type": "boolean"},
    },
}

_EXTRA: dict[str, dict[str, Any]] = {
    "submit_job": {
        "requestBody": {"required": False, "description": "the job's parameters",
                        "content": {"application/json": {"schema": _OBJECT}}},
        "responses": {"201": "job created", "200": "the same job was submitted before", "400": None,
                      "404": "unknown job type (details list the valid ones)", "413": None, "415": None},
    },
    "job_status": {"responses": {"200": "status, stages with task counts, timings, result or errors",
                                 "400": None, "404": None}},
    "list_jobs": {
        "parameters": [_query("status", f"comma-separated job statuses ({', '.join(_JOB_STATUSES)})",
                              {"type": "string", "example": "failed,cancelled"}),
                       _query("type", "job type", {"type": "string"}), *_PAGE],
        "responses": {"200": "a page of jobs and next_cursor", "400": None},
    },
    "list_tasks": {
        "parameters": [_query("stage", "stage number", {"type": "integer", "minimum": 1}),
                       _query("status", f"comma-separated task statuses ({', '.join(_TASK_STATUSES)})",
                              {"type": "string"}), *_PAGE],
        "responses": {"200": "a page of tasks and next_cursor", "400": None, "404": None},
    },
    "cancel_job": {
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "properties": {"reason": {"type": "string", "maxLength": 1000}}}}}},
        "responses": {"202": "cancelling: the job ends cancelled once running tasks finish", "400": None,
                      "404": None, "409": "the job is finalizing or finished", "415": None},
    },
    "retry_job": {"responses": {"202": "the failed tasks are queued again", "400": None, "404": None,
                                "409": "the job is not failed"}},
    "job_events": {"parameters": [_query("limit", "events to return (latest)", {"type": "integer", "minimum": 1})],
                   "responses": {"200": "timeline, diagnosis and dead letters", "400": None, "404": None}},
    "livez": {"responses": {"200": "alive"}},
    "readyz": {"responses": {"200": "ready", "503": "database or transport unreachable"}},
    "health": {"responses": {"200": "healthy", "503": "degraded"}},
    "openapi": {"responses": {"200": "this document"}},
    "deadletters_list": {"parameters": [*_SELECTORS, *_PAGE],
                         "responses": {"200": "a page of dead letters and next_cursor", "400": None}},
    "deadletters_replay": {
        "requestBody": {"required": True, "content": {"application/json": {"schema": _SELECTION_BODY}}},
        "responses": {"200": "the replayed (or, with dry_run, replayable) dead letters", "400": None, "415": None},
    },
    "deadletters_purge": {
        "parameters": [*_SELECTORS, _query("ids", "comma-separated dead letter ids", {"type": "string"}),
                       _query("all", "every dead letter", {"type": "boolean"}),
                       _query("dry_run", "list what would be purged", {"type": "boolean"})],
        "responses": {"200": "how many were purged (or, with dry_run, which would be)", "400": None},
    },
}

_STANDARD = {
    "400": "invalid input (details name each bad field)", "401": "key missing or wrong",
    "404": "not found", "405": "method not allowed", "409": "conflict", "413": "body too large",
    "415": "body is not JSON", "500": "unexpected error", "503": "a dependency is unavailable",
}


def _operation(route: Route) -> dict[str, Any]:
    extra = _EXTRA.get(route.name, {})
    path_params = [
        {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
        for part in route.template.split("/") if part.startswith("{")
    ]
    responses: dict[str, Any] = {}
    for code, text in extra.get("responses", {"200": "ok"}).items():
        schema = _ERROR if code >= "400" else _OBJECT
        responses[code] = {"description": text or _STANDARD[code],
                           "content": {"application/json": {"schema": schema}}}
    if route.auth is not Auth.ANONYMOUS:
        responses.setdefault("401", {"description": _STANDARD["401"],
                                     "content": {"application/json": {"schema": _ERROR}}})
    operation: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.summary,
        "parameters": path_params + list(extra.get("parameters", [])),
        "responses": responses,
        "security": [] if route.auth is Auth.ANONYMOUS else [{"functionKey": []}],
        "x-auth-level": route.auth.value,
    }
    if "requestBody" in extra:
        operation["requestBody"] = extra["requestBody"]
    return operation


def build_spec(routes: Sequence[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.0.3",
        "info": {"title": "CoreMachine", "version": "0.1.0",
                 "description": "Jobs → stages → tasks. Every error has the shape {error, message, details}."},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {
                "Error": {"type": "object", "required": ["error", "message", "details"], "properties": {
                    "error": {"type": "string"}, "message": {"type": "string"},
                    "details": {"type": "array", "items": {}}}},
            },
            "securitySchemes": {"functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"}},
        },
    }

