"""The HTTP layer's pure parts: selectors, cursors, the operator transition behind retry, route names."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from core.admin import JobPageCursor
from core.jobs import JobRegistry
from triggers.http_admin import Selection
from triggers.http_app import create_app
from triggers.http_base import ApiError
from triggers.http_jobs import JOB_CURSOR, _job_cursor, _job_cursor_text


def test_selection_rules_match_the_cli() -> None:
    assert Selection(ids=["1", "2"]).chosen().ids == ("1", "2")
    assert Selection(queue="tasks").chosen().queue == "tasks"
    assert Selection.model_validate({"all": True, "dry_run": True}).dry_run
    with pytest.raises(ApiError) as caught:
        Selection().chosen()
    assert caught.value.status == 422 and caught.value.code == "selector_required"
    for bad in ({"all": "maybe"}, {"queue": "other"}, {"ids": [1]}, {"colour": "red"}, {"job_id": 5},
                {"reason": "a\x00"}):
        with pytest.raises(ValidationError):
            Selection.model_validate(bad)


def test_job_cursor_round_trip() -> None:
    created = datetime(2026, 11, 30, 21, 5, 54, 878919, tzinfo=UTC)
    text = _job_cursor_text(created, "a" * 64)
    assert re.fullmatch(JOB_CURSOR, text)
    assert _job_cursor(text) == JobPageCursor(created, "a" * 64)


def test_no_route_begins_with_admin_which_azure_reserves() -> None:
    app = create_app(JobRegistry(), lambda: pytest.fail("no route here needs the database"), max_body_bytes=10)
    paths = set(TestClient(app).get("/api/openapi.json").json()["paths"])
    assert "/api/ops/deadletters" in paths and not any(p.startswith(("/admin", "/api/admin")) for p in paths)
