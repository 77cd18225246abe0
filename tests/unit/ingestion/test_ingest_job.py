"""The ingest job: parameters and how each stage's tasks are built from the previous stage's results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from core.errors import InvalidParameters
from core.jobs import PreviousResults
from core.models import TaskResultRow, TaskStatus
from jobs.ingest import Ingest


def previous(stage: int, results: Sequence[dict[str, Any]]) -> PreviousResults:
    return PreviousResults(stage, [TaskResultRow(f"t{i}", i, TaskStatus.COMPLETED, r) for i, r in enumerate(results)])


def build(
    stage_number: int, params: dict[str, Any], results: Sequence[dict[str, Any]] = ()
) -> list[tuple[str, dict[str, Any]]]:
    job = Ingest()
    return [(s.task_type, s.parameters) for s in job.build_tasks(job.stage(stage_number), params,
                                                                   previous(stage_number - 1, results))]


def test_parameters_defaults_and_single_domain():
    params = Ingest().validate_parameters({"domains": "annuity_income"})
    assert params == {"domains": ["annuity_income"], "period": None, "max_files": None, "execute": False,
                      "sheet": None}
    again = Ingest().validate_parameters({"domains": ["annuity_income", "annuity_income"]})
    assert again["domains"] == ["annuity_income"]


@pytest.mark.parametrize(
    ("raw", "field"),
    [({"domains": []}, "domains"), ({"domains": ["annual_award"], "period": "2024-13"}, "period"),
     ({"domains": ["annual_award"], "max_files": 0}, "max_files"), ({"domains": ["x"], "nope": 1}, "nope")],
)
def test_bad_parameters_name_the_field(raw, field):
    with pytest.raises(InvalidParameters) as info:
        Ingest().validate_parameters(raw)
    assert field in [d["field"] for d in info.value.details]


def test_stages_fan_out_per_domain_file_domain_domain_table():
    params = Ingest().validate_parameters(
        {"domains": ["annuity_performance", "annual_award"], "max_files": 2, "execute": True, "period": "2024-06"}
    )
    discover = build(1, params)
    assert discover == [
        ("ingest.discover", {"domain": "annuity_performance", "period": "2024-06", "max_files": 2, "sheet": None,
                             "execute": True}),
        ("ingest.discover", {"domain": "annual_award", "period": "2024-06", "max_files": 2, "sheet": None,
                             "execute": True}),
    ]
    found = [
        {"domain": "annuity_performance",
         "files": [{"path": "a.xlsx", "sheet": "P"}, {"path": "b.xlsx", "sheet": "P"}]},
        {"domain": "annual_award", "files": [{"path": "c.xlsx", "sheet": "A"}]},
    ]
    process = build(2, params, found)
    assert [p["path"] for _, p in process] == ["a.xlsx", "b.xlsx", "c.xlsx"]
    assert process[2] == ("ingest.process", {"domain": "annual_award", "path": "c.xlsx", "sheet": "A",
                                             "period": "2024-06", "execute": True})
    processed = [
        {"domain": "annuity_performance", "file": "a.xlsx", "input": 10, "output": 8, "rejected": 1, "skipped": 1},
        {"domain": "annuity_performance", "file": "b.xlsx", "file_error": "broken", "input": 0},
        {"domain": "annual_award", "file": "c.xlsx", "input": 5, "output": 5},
    ]
    backfill = build(3, params, processed)
    assert [p["domain"] for _, p in backfill] == ["annuity_performance", "annual_award"]
    summary = backfill[0][1]["summary"]
    assert (summary["files"], summary["input"], summary["output"], summary["rejected"]) == (2, 10, 8, 1)
    assert summary["file_errors"] == [{"file": "b.xlsx", "sheet": None, "reason": "broken"}]
    assert backfill[0][1]["execute"] is True
    gate = build(4, params, [{"domain": d, "summary": {"files": 1}} for d in params["domains"]])
    assert gate[1] == ("ingest.quality", {"domain": "annual_award", "summary": {"files": 1}, "execute": True})
    load = build(5, params, [{"domain": d, "summary": {"output": 7}} for d in params["domains"]])
    assert load == [
        ("ingest.load", {"table": "warehouse.annuity_performance", "domains": ["annuity_performance"],
                         "execute": True, "expected_rows": 7}),
        ("ingest.load", {"table": "warehouse.annual_award", "domains": ["annual_award"], "execute": True,
                         "expected_rows": 7}),
    ]
