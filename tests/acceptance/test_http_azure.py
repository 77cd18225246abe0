"""The Azure Functions app: one ASGI function for the HTTP app beside the queue and timer triggers, called the way
the host calls it (a `func.HttpRequest` through `AsgiFunctionApp`'s middleware) on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import azure.functions as func
import pytest

import function_app
from triggers import azure_runtime
from triggers.runtime import Runtime

API_KEY, ADMIN_KEY = "api-secret", "admin-secret"
LOOP = asyncio.new_event_loop()  # the host's one event loop: the ASGI app's lifespan starts once and lives on it


@functools.cache  # FunctionApp.get_functions() raises on a second call (azure-functions 1.26.0)
def fns() -> dict[str, Any]:
    return {str(f.get_function_name()): f for f in function_app.app.get_functions()}


@pytest.fixture
def keyed_runtime(http_runtime: Runtime) -> Iterator[Runtime]:
    """The test's runtime with keys set, installed as the Functions worker's runtime."""
    keyed = Runtime(**{**http_runtime.__dict__, "settings": http_runtime.settings.model_copy(
        update={"api_key": API_KEY, "admin_key": ADMIN_KEY})})
    previous = azure_runtime.set_runtime(keyed)
    try:
        yield keyed
    finally:
        azure_runtime.set_runtime(previous)


class HostContext(func.Context):
    """The invocation context the Functions host passes (the app does not read it)."""

    invocation_id = "test-invocation"
    function_name = "http_api"
    function_directory = "."
    trace_context: Any = None
    retry_context: Any = None
    thread_local_storage: Any = None


def call(method: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None,
         params: dict[str, str] | None = None) -> tuple[int, Any, func.HttpResponse]:
    data = b"" if body is None else json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json", **(headers or {})} if data else dict(headers or {})
    query = f"?{urlencode(params)}" if params else ""
    req = func.HttpRequest(method=method, url=f"http://localhost{path}{query}", headers=all_headers,
                           params=params or {}, route_params={"route": path.removeprefix("/")}, body=data)
    response = LOOP.run_until_complete(fns()["http_api"].get_user_function()(req, HostContext()))
    payload = json.loads(response.get_body()) if response.get_body() else None
    return response.status_code, payload, response


def test_one_http_function_beside_the_queue_and_timer_triggers() -> None:
    bindings = {name: json.loads(f.get_function_json())["bindings"][0] for name, f in fns().items()}
    assert set(bindings) == {"http_api", "process_job_message", "process_task_message", "janitor"}
    http = bindings["http_api"]
    assert http["type"] == "httpTrigger" and http["route"] == "/{*route}"
    assert http["authLevel"] == "ANONYMOUS"  # the app checks its own keys, closed when a key is unset
    assert bindings["process_job_message"]["type"] == "serviceBusTrigger"
    assert bindings["janitor"]["type"] == "timerTrigger"


def test_requests_reach_the_app_with_its_keys(keyed_runtime: Runtime) -> None:
    assert call("GET", "/api/livez")[:2] == (200, {"status": "ok"})
    status, error, _ = call("POST", "/api/jobs/submit/hello_world", body={"n": 2})
    assert status == 401 and error["error"] == "unauthorized"
    status, job, response = call("POST", "/api/jobs/submit/hello_world", body={"n": 2},
                                 headers={"x-functions-key": API_KEY})
    assert status == 201 and response.headers["Location"] == job["status_url"]
    status, same, _ = call("GET", job["status_url"], params={"code": API_KEY})
    assert status == 200 and same["job_id"] == job["job_id"]
    assert call("GET", "/api/ops/deadletters", headers={"x-functions-key": API_KEY})[0] == 401
    assert call("GET", "/api/ops/deadletters", headers={"x-functions-key": ADMIN_KEY})[0] == 200
    status, spec, _ = call("GET", "/api/openapi.json")
    assert status == 200 and "/api/jobs/submit/hello_world" in spec["paths"]


def test_unset_keys_close_the_routes_on_azure(http_runtime: Runtime) -> None:
    previous = azure_runtime.set_runtime(http_runtime)  # no keys configured
    try:
        status, error, _ = call("GET", "/api/jobs")
        assert status == 401 and "COREMACHINE_API_KEY is not configured" in error["message"]
        assert call("GET", "/api/ops/deadletters")[0] == 401
        assert call("GET", "/api/livez")[0] == 200
    finally:
        azure_runtime.set_runtime(previous)
