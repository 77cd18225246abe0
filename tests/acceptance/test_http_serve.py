"""The local server (`coremachine serve`: uvicorn) over real HTTP on 127.0.0.1: keys, limits, protocol edges."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from triggers.http_base import ApiContext
from triggers.runtime import Runtime
from triggers.serve import ApiServer, make_server

ADMIN_KEY = "admin-secret"
API_KEY = "api-secret"
JSON_TYPE = {"Content-Type": "application/json"}


@pytest.fixture
def server(http_runtime: Runtime) -> Iterator[ApiServer]:
    settings = http_runtime.settings.model_copy(
        update={"admin_key": ADMIN_KEY, "api_key": API_KEY, "http_max_body_bytes": 4096}
    )
    context = ApiContext(**{**ApiContext.from_runtime(http_runtime).__dict__, "settings": settings})
    srv = make_server(context).start()
    try:
        yield srv
    finally:
        srv.stop()


def request(srv: ApiServer, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
            ) -> tuple[int, Any, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        if raw:
            assert response.getheader("Content-Type") == "application/json"
        return response.status, json.loads(raw) if raw else None, response
    finally:
        conn.close()


def test_binds_loopback_on_an_ephemeral_port(server: ApiServer) -> None:
    assert server.host == "127.0.0.1" and server.port > 0
    assert request(server, "GET", "/api/livez")[:2] == (200, {"status": "ok"})
    status, spec, _ = request(server, "GET", "/api/openapi.json")
    assert status == 200 and "/api/jobs/submit/drill_continue" in spec["paths"]


def test_job_routes_need_the_api_key_when_one_is_set(server: ApiServer) -> None:
    body = json.dumps({"n": 1}).encode()
    status, error, _ = request(server, "POST", "/api/jobs/submit/drill_continue", body, JSON_TYPE)
    assert status == 401 and error["error"] == "unauthorized"
    status, created, _ = request(server, "POST", "/api/jobs/submit/drill_continue", body,
                                 {**JSON_TYPE, "x-functions-key": API_KEY})
    assert status == 201
    status, job, _ = request(server, "GET", f"/api/jobs/status/{created['job_id']}?code={API_KEY}")
    assert status == 200 and job["job_id"] == created["job_id"]
    assert request(server, "GET", "/api/health", headers={"x-functions-key": ADMIN_KEY})[0] == 200


def test_admin_routes_need_the_admin_key(server: ApiServer) -> None:
    assert request(server, "GET", "/api/ops/deadletters")[0] == 401
    assert request(server, "GET", "/api/ops/deadletters", headers={"x-functions-key": API_KEY})[0] == 401
    status, page, _ = request(server, "GET", "/api/ops/deadletters", headers={"x-functions-key": ADMIN_KEY})
    assert status == 200 and page == {"dead_letters": [], "next_cursor": None}


def test_errors_keep_one_shape(server: ApiServer) -> None:
    key = {"x-functions-key": API_KEY}
    for method, path, body, headers, expected in [
        ("GET", "/api/nowhere", None, key, 404),
        ("GET", "/elsewhere", None, key, 404),
        ("PUT", "/api/jobs", None, key, 405),
        ("TRACE", "/api/jobs", None, key, 405),
        ("GET", "/api/jobs/status/xyz", None, key, 400),
        ("GET", "/api/jobs?type=a%00", None, key, 400),
        ("POST", "/api/jobs/submit/drill_continue", b"x" * 5000, {**key, **JSON_TYPE}, 413),
        ("POST", "/api/jobs/submit/drill_continue", b"<n/>", {**key, "Content-Type": "text/xml"}, 415),
        ("POST", "/api/jobs/submit/drill_continue", b'{"tag": "a\\u0000"}', {**key, **JSON_TYPE}, 400),
        ("POST", "/api/jobs/submit/cancel", b"{}", {**key, **JSON_TYPE}, 404),
    ]:
        status, error, _ = request(server, method, path, body, headers)
        assert status == expected, (method, path, error)
        assert set(error) == {"error", "message", "details"}


def test_head_options_and_allow(server: ApiServer) -> None:
    status, body, response = request(server, "HEAD", "/api/livez")
    assert status == 200 and body is None and int(response.getheader("Content-Length") or 0) > 0
    status, body, response = request(server, "OPTIONS", "/api/ops/deadletters")
    assert status == 204 and response.getheader("Allow") == "GET, HEAD, OPTIONS"
    status, body, response = request(server, "OPTIONS", "/api/ops/deadletters/purge")
    assert status == 204 and response.getheader("Allow") == "OPTIONS, POST"
    status, error, response = request(server, "DELETE", "/api/ops/deadletters", headers={"x-functions-key": ADMIN_KEY})
    assert status == 405 and response.getheader("Allow") == "GET, HEAD, OPTIONS"
    assert error["details"] == [{"allowed": ["GET", "HEAD", "OPTIONS"]}]


def _chunked(body: bytes, size: int = 7) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size))
    return out + b"0\r\n\r\n"


def _raw(server: ApiServer, payload: bytes) -> bytes:
    """Send raw bytes; read until the server closes (the last request says `Connection: close`)."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_chunked_body_is_read_whole_and_the_next_request_is_not_its_leftovers(server: ApiServer) -> None:
    body = json.dumps({"n": 2, "tag": "chunked"}).encode()
    head = (f"POST /api/jobs/submit/drill_continue HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"x-functions-key: {API_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    second = b"GET /api/livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = _raw(server, head + _chunked(body) + second)
    assert answer.count(b"HTTP/1.1 ") == 2, answer
    first = answer.split(b"HTTP/1.1 ")[1]
    assert first.startswith(b"201")
    created = json.loads(first.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0])
    status, job, _ = request(server, "GET", f"/api/jobs/status/{created['job_id']}",
                             headers={"x-functions-key": API_KEY})
    assert status == 200 and job["parameters"]["tag"] == "chunked" and job["parameters"]["n"] == 2


def test_a_chunked_body_over_the_limit_is_refused(server: ApiServer) -> None:
    head = (f"POST /api/jobs/submit/drill_continue HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"x-functions-key: {API_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    body = json.dumps({"tag": "x" * 5000}).encode()
    answer = _raw(server, head.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + _chunked(body, 1000))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
