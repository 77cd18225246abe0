"""The local server (`coremachine serve`) over real HTTP on 127.0.0.1: routes, key checks, size limits."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from triggers.http_base import ApiContext
from triggers.runtime import Runtime
from triggers.serve import ApiServer, make_server

ADMIN_KEY = "admin-secret"
API_KEY = "api-secret"


@pytest.fixture
def server(http_runtime: Runtime) -> Iterator[ApiServer]:
    settings = http_runtime.settings.model_copy(
        update={"admin_key": ADMIN_KEY, "api_key": API_KEY, "http_max_body_bytes": 4096}
    )
    context = ApiContext.from_runtime(http_runtime)
    context = ApiContext(**{**context.__dict__, "settings": settings})
    srv = make_server(context)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def request(srv: ApiServer, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
            ) -> tuple[int, Any]:
    host, port = srv.server_address[0], srv.server_address[1]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        assert response.getheader("Content-Type") == "application/json"
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_binds_loopback_on_an_ephemeral_port(server: ApiServer) -> None:
    assert server.server_address[0] == "127.0.0.1" and server.server_address[1] > 0
    assert request(server, "GET", "/api/livez") == (200, {"status": "ok"})
    status, spec = request(server, "GET", "/api/openapi.json")
    assert status == 200 and "/api/jobs/submit/{job_type}" in spec["paths"]


def test_job_routes_need_the_api_key_when_one_is_set(server: ApiServer) -> None:
    body = json.dumps({"n": 1}).encode()
    json_type = {"Content-Type": "application/json"}
    status, error = request(server, "POST", "/api/jobs/submit/drill_continue", body, json_type)
    assert status == 401 and error["error"] == "unauthorized"
    status, created = request(server, "POST", "/api/jobs/submit/drill_continue", body,
                              {**json_type, "x-functions-key": API_KEY})
    assert status == 201
    status, job = request(server, "GET", f"/api/jobs/status/{created['job_id']}?code={API_KEY}")
    assert status == 200 and job["job_id"] == created["job_id"]
    assert request(server, "GET", "/api/health", headers={"x-functions-key": ADMIN_KEY})[0] == 200


def test_admin_routes_need_the_admin_key(server: ApiServer) -> None:
    assert request(server, "GET", "/api/ops/deadletters")[0] == 401
    assert request(server, "GET", "/api/ops/deadletters", headers={"x-functions-key": API_KEY})[0] == 401
    status, page = request(server, "GET", "/api/ops/deadletters", headers={"x-functions-key": ADMIN_KEY})
    assert status == 200 and page == {"dead_letters": [], "next_cursor": None}


def test_errors_keep_one_shape(server: ApiServer) -> None:
    key = {"x-functions-key": API_KEY}
    for method, path, body, headers, expected in [
        ("GET", "/api/nowhere", None, key, 404),
        ("GET", "/elsewhere", None, key, 404),
        ("PUT", "/api/jobs", None, key, 405),
        ("GET", "/api/jobs/status/xyz", None, key, 400),
        ("POST", "/api/jobs/submit/drill_continue", b"x" * 5000, {**key, "Content-Type": "application/json"}, 413),
        ("POST", "/api/jobs/submit/drill_continue", b"<n/>", {**key, "Content-Type": "text/xml"}, 415),
        ("POST", "/api/jobs/submit/cancel", b"{}", {**key, "Content-Type": "application/json"}, 404),
    ]:
        status, error = request(server, method, path, body, headers)
        assert status == expected, (method, path, error)
        assert set(error) == {"error", "message", "details"}
