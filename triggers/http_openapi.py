"""The OpenAPI document: FastAPI's, completed with the request bodies the routes read themselves and the error
responses every operation can give, so that the document states the whole contract."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from triggers.http_base import JSON_TYPE, NO_NUL_PATTERN, BodyModels, ErrorBody

REF = "#/components/schemas/{model}"
_ERROR_REF = {"$ref": REF.format(model="ErrorBody")}
_ERRORS = {
    "400": "invalid input (details name each bad field)",
    "401": "key missing or wrong",
    "413": "body too large",
    "415": "body is not JSON",
    "503": "the database or the transport is unavailable",
}
_NO_DATABASE = {"livez"}
_ANONYMOUS = {"livez", "readyz"}


def build(app: FastAPI, bodies: BodyModels, description: str) -> dict[str, Any]:
    spec = get_openapi(title=app.title, version=app.version, description=description, routes=app.routes)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["ErrorBody"] = ErrorBody.model_json_schema(ref_template=REF)
    refs = _body_schemas(bodies, schemas)
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
            _complete(operation, refs)
    return spec


def _body_schemas(bodies: BodyModels, schemas: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Add the request models to the components; strings in them may not hold NUL (PostgreSQL text cannot)."""
    if not bodies.models:
        return {}
    keyed: list[tuple[type[BaseModel], Literal["validation"]]] = [(m, "validation") for m, _ in bodies.models.values()]
    refs, top = models_json_schema(keyed, ref_template=REF)
    for name, schema in top.get("$defs", {}).items():
        _forbid_nul(schema)
        schemas[name] = schema
    return {op: {"ref": dict(refs[(model, "validation")]), "required": required}
            for op, (model, required) in bodies.models.items()}


def _forbid_nul(schema: Any) -> None:
    if isinstance(schema, dict):
        if schema.get("type") == "string" and not {"pattern", "enum", "const", "format"} & set(schema):
            schema["pattern"] = NO_NUL_PATTERN
        for value in schema.values():
            _forbid_nul(value)
    elif isinstance(schema, list):
        for item in schema:
            _forbid_nul(item)


def _complete(operation: dict[str, Any], refs: dict[str, dict[str, Any]]) -> None:
    op_id = operation.get("operationId", "")
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if responses.get("422", {}).get("description") == "Validation Error":
        del responses["422"]  # FastAPI's own; its validation errors answer 400 here
    codes: set[str] = set()
    if op_id in refs:
        body = refs[op_id]
        operation["requestBody"] = {"required": body["required"], "content": {JSON_TYPE: {"schema": body["ref"]}}}
        codes |= {"400", "413", "415"}
    if operation.get("parameters"):
        codes.add("400")
    if op_id not in _ANONYMOUS and operation.get("security"):
        codes.add("401")
    if op_id not in _NO_DATABASE:
        codes.add("503")
    for code in sorted(codes):
        responses.setdefault(code, {"description": _ERRORS[code]})
    for code, response in responses.items():
        if (code >= "400" and code != "503") or (code == "503" and "content" not in response):
            response["content"] = {JSON_TYPE: {"schema": _ERROR_REF}}
