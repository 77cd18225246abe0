"""Property: no request, however malformed, makes the HTTP API answer 5xx or leave the one error shape."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.acceptance.test_http_api import ROUTES

QUERY_KEYS = ["limit", "cursor", "status", "type", "stage", "queue", "job_id", "task_type", "reason", "ids", "all",
              "dry_run", "code"]
CONTENT_TYPES = [None, "application/json", "application/json; charset=utf-8", "text/plain", "application/x+json",
                 "multipart/form-data"]

SAMPLE_SEGMENTS = ["0" * 64, "drill_continue", "f" * 63, "..", "%00", "a\x00b"]
segment = st.one_of(st.text(max_size=80), st.sampled_from(SAMPLE_SEGMENTS))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40) | st.just("x\x00"),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def paths(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        _, template = draw(st.sampled_from(sorted(ROUTES.values())))
        parts = [quote(draw(segment), safe="") if p.startswith("{") else p for p in template.split("/")]
        return "/".join(parts)
    return "/" + "/".join(quote(s, safe="") for s in draw(st.lists(segment, max_size=5)))


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["empty", "bytes", "json", "object"]))
    if kind == "empty":
        return b""
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    keys = st.sampled_from(["n", "tag", "\x00", "fail_index", "ids", "all", "dry_run", "job_id", "reason", "x"])
    return json.dumps(draw(st.dictionaries(keys, json_values, max_size=5))).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "TRACE"]),
    path=paths(),
    query=st.dictionaries(st.sampled_from(QUERY_KEYS) | st.text(max_size=8), st.text(max_size=40) | st.just("\x00"),
                          max_size=4),
    content_type=st.sampled_from(CONTENT_TYPES),
    body=bodies(),
)
def test_malformed_requests_never_cause_a_server_error(
    client: TestClient, method: str, path: str, query: dict[str, str], content_type: str | None, body: bytes
) -> None:
    headers: dict[str, Any] = {"Content-Type": content_type} if content_type else {}
    response = client.request(method, f"http://testserver{path}", params=query, headers=headers, content=body,
                              follow_redirects=False)
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400 and method != "HEAD":
        assert set(response.json()) == {"error", "message", "details"}


def test_found_by_the_fuzzer_nul_characters_are_refused_not_sent_to_postgresql(client: TestClient) -> None:
    json_type = {"Content-Type": "application/json"}
    for method, path, query, body in [
        ("GET", "/api/jobs", {"type": "a\x00"}, b""),
        ("GET", "/api/ops/deadletters", {"reason": "\x00"}, b""),
        ("POST", "/api/ops/deadletters/purge", {}, b'{"task_type": "\\u0000"}'),
        ("POST", "/api/jobs/submit/drill_continue", {}, b'{"tag": "a\\u0000"}'),
        ("POST", "/api/ops/deadletters/replay", {}, b'{"job_id": "\\u0000"}'),
    ]:
        response = client.request(method, path, params=query, headers=json_type, content=body)
        assert response.status_code == 400, (path, response.text)
