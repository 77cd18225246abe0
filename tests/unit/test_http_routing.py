"""The HTTP layer's pure parts: routing, the local key check, selectors, cursors and the OpenAPI document."""

from __future__ import annotations

import pytest

from core.errors import InvalidTransition
from core.models import JobStatus
from core.states import JOB_TRANSITIONS, OPERATOR_TRANSITIONS, check_operator_transition, operator_sources
from triggers import openapi
from triggers.http_admin import parse_selection
from triggers.http_api import ROUTES, ROUTES_BY_NAME, check_key, match
from triggers.http_base import ApiError, Request, decode_cursor, encode_cursor


@pytest.mark.parametrize(("method", "path", "name", "params"), [
    ("POST", "/api/jobs/submit/cancel", "submit_job", {"job_type": "cancel"}),
    ("GET", "/api/jobs/status/abc", "job_status", {"job_id": "abc"}),
    ("GET", "/api/jobs/status/tasks", "job_status", {"job_id": "tasks"}),
    ("GET", "/api/jobs/x%2Fy/tasks", "list_tasks", {"job_id": "x/y"}),
    ("POST", "/api/jobs/abc/retry", "retry_job", {"job_id": "abc"}),
    ("GET", "/api/jobs/", "list_jobs", {}),
    ("DELETE", "/api/ops/deadletters", "deadletters_purge", {}),
    ("POST", "/api/ops/deadletters/replay", "deadletters_replay", {}),
])
def test_match_prefers_literal_segments(method: str, path: str, name: str, params: dict[str, str]) -> None:
    route, found = match(method, path)
    assert (route.name, found) == (name, params)


def test_unknown_paths_and_methods() -> None:
    for path in ("/api/nope", "/jobs", "/api/jobs/status", "/api/jobs/status//"):
        with pytest.raises(ApiError) as caught:
            match("GET", path)
        assert caught.value.status == 404
    with pytest.raises(ApiError) as caught:
        match("PATCH", "/api/ops/deadletters")
    assert caught.value.status == 405 and caught.value.details == [{"allowed": ["DELETE", "GET"]}]


def test_key_check_per_auth_level() -> None:
    admin, job, probe = ROUTES_BY_NAME["deadletters_list"], ROUTES_BY_NAME["job_status"], ROUTES_BY_NAME["livez"]
    anonymous = Request("GET", "/")
    with_api = Request("GET", "/", headers={"x-functions-key": "k1"})
    with_admin = Request("GET", "/", query={"code": "k2"})
    check_key(probe, anonymous, "k1", "k2")
    check_key(job, with_api, "k1", "k2")
    check_key(job, with_admin, "k1", "k2")
    check_key(admin, with_admin, "k1", "k2")
    check_key(admin, anonymous, None, None)  # no keys configured: open, as Azure is locally
    for route, req in ((job, anonymous), (admin, anonymous), (admin, with_api)):
        with pytest.raises(ApiError) as caught:
            check_key(route, req, "k1", "k2")
        assert caught.value.status == 401


def test_selection_rules_match_the_cli() -> None:
    assert parse_selection({"ids": "1, 2"}, require_choice=True).selector.ids == ("1", "2")
    assert parse_selection({"queue": "tasks"}, require_choice=True).selector.queue == "tasks"
    assert parse_selection({"all": "true", "dry_run": True}, require_choice=True).dry_run
    for bad in ({}, {"all": "maybe"}, {"queue": "other"}, {"ids": [1]}, {"colour": "red"}, {"job_id": 5}):
        with pytest.raises(ApiError) as caught:
            parse_selection(bad, require_choice=True)
        assert caught.value.status == 400


def test_cursor_round_trip_and_garbage() -> None:
    cursor = encode_cursor({"stage": 2, "index": 7})
    assert decode_cursor(Request("GET", "/", query={"cursor": cursor})) == {"stage": 2, "index": 7}
    for garbage in ("!!", "bm90IGpzb24", encode_cursor({"a": 1})[:-3] + "A", "WzFd"):
        try:
            decoded = decode_cursor(Request("GET", "/", query={"cursor": garbage}))
        except ApiError as exc:
            assert exc.status == 400
        else:
            assert isinstance(decoded, dict)


def test_openapi_documents_exactly_the_route_table() -> None:
    spec = openapi.build_spec(ROUTES)
    documented = {(p, m.upper()) for p, ops in spec["paths"].items() for m in ops}
    assert documented == {(r.path, r.method) for r in ROUTES}
    assert len({r.name for r in ROUTES}) == len(ROUTES)
    for route in ROUTES:
        assert not route.template.startswith("admin"), "Azure reserves routes that begin with admin"


def test_retry_is_an_operator_transition_only() -> None:
    assert JobStatus.PROCESSING not in JOB_TRANSITIONS[JobStatus.FAILED]
    assert OPERATOR_TRANSITIONS[JobStatus.FAILED] == {JobStatus.PROCESSING}
    assert operator_sources(JobStatus.PROCESSING) == {JobStatus.FAILED}
    check_operator_transition(JobStatus.FAILED, JobStatus.PROCESSING)
    for status in (JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.PROCESSING):
        with pytest.raises(InvalidTransition):
            check_operator_transition(status, JobStatus.PROCESSING)
