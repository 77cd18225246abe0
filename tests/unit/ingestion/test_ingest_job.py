"""The ingest job: parameters and how each stage's tasks are built from the previous stage's results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from core.errors import InvalidParameters, PermanentError
from core.jobs import PreviousResults
from core.models import TaskResultRow, TaskStatus
from jobs.ingest import Ingest
from tests.unit.ingestion.services import ingest_services


def previous(stage: int, results: Sequence[dict[str, Any]]) -> PreviousResults:
    return PreviousResults(stage, [TaskResultRow(f"t{i}", i, TaskStatus.COMPLETED, r) for i, r in enumerate(results)])


def build(
    stage_number: int, params: dict[str, Any], results: Sequence[dict[str, Any]] = ()
) -> list[tuple[str, dict[str, Any]]]:
    job = Ingest()
    return [(s.task_type, s.parameters) for s in job.build_tasks(job.stage(stage_number), params,
                                                                   previous(stage_number - 1, results))]


def submitted(raw: dict[str, Any]) -> dict[str, Any]:
    job = Ingest()
    return job.validate_parameters(job.prepare(raw, ingest_services()))


def test_parameters_defaults_single_domain_and_the_input_manifest():
    params = submitted({"domains": "annuity_income"})
    inputs = params.pop("inputs")
    assert params == {"domains": ["annuity_income"], "period": None, "max_files": None, "execute": False,
                      "sheet": None}
    [income] = inputs
    assert income["domain"] == "annuity_income" and income["version"] == "V1" and income["matched"] == 1
    [file] = income["files"]
    assert file["path"].endswith("annuity_income_2024-06.xlsx") and len(file["sha256"]) == 64 and file["size"] > 0
    again = submitted({"domains": ["annuity_income", "annuity_income"]})
    assert again["domains"] == ["annuity_income"] and again["inputs"] == inputs


def test_inputs_must_match_the_domains_and_a_run_needs_them():
    bare = Ingest().validate_parameters({"domains": ["annual_award"]})
    assert bare["inputs"] == [], "a pre-check without the submit path's manifest still validates"
    with pytest.raises(PermanentError, match="no input manifest"):
        build(1, bare)
    params = submitted({"domains": ["annual_award"]})
    with pytest.raises(InvalidParameters, match="one entry per domain"):
        Ingest().validate_parameters({**params, "domains": ["annual_award", "annuity_income"]})


@pytest.mark.parametrize(
    ("raw", "field"),
    [({"domains": []}, "domains"), ({"domains": ["annual_award"], "period": "2024-13"}, "period"),
     ({"domains": ["annual_award"], "max_files": 0}, "max_files"), ({"domains": ["x"], "nope": 1}, "nope")],
)
def test_bad_parameters_name_the_field(raw, field):
    with pytest.raises(InvalidParameters) as info:
        Ingest().validate_parameters({**raw, "inputs": []})
    assert field in [d["field"] for d in info.value.details]


def test_stages_fan_out_per_domain_file_domain_domain_then_one_load():
    params = submitted(
        {"domains": ["annuity_performance", "annual_award"], "max_files": 2, "execute": True}
    )
    discover = build(1, params)
    assert [(t, p["domain"], len(p["files"]), p["execute"]) for t, p in discover] == [
        ("ingest.discover", "annuity_performance", 2, True), ("ingest.discover", "annual_award", 1, True)]
    found = [
        {"domain": "annuity_performance",
         "files": [{"path": "a.xlsx", "sheet": "P", "sha256": "1" * 64},
                   {"path": "b.xlsx", "sheet": "P", "sha256": "2" * 64}]},
        {"domain": "annual_award", "files": [{"path": "c.xlsx", "sheet": "A", "sha256": "3" * 64}]},
    ]
    process = build(2, params, found)
    assert [p["path"] for _, p in process] == ["a.xlsx", "b.xlsx", "c.xlsx"]
    assert process[2] == ("ingest.process", {"domain": "annual_award", "path": "c.xlsx", "sheet": "A",
                                             "sha256": "3" * 64, "period": None, "execute": True})
    processed = [
        {"domain": "annuity_performance", "file": "a.xlsx", "input": 10, "output": 8, "rejected": 1, "skipped": 1},
        {"domain": "annuity_performance", "file": "b.xlsx", "file_error": "broken", "input": 0},
        {"domain": "annual_award", "file": "c.xlsx", "input": 5, "output": 5},
    ]
    references = build(3, params, processed)
    assert [(t, p["domain"]) for t, p in references] == [
        ("ingest.references", "annuity_performance"), ("ingest.references", "annual_award")]
    summary = references[0][1]["summary"]
    assert (summary["files"], summary["input"], summary["output"], summary["rejected"]) == (2, 10, 8, 1)
    assert summary["file_errors"] == [{"file": "b.xlsx", "sheet": None, "reason": "broken"}]
    gate = build(4, params, [{"domain": d, "summary": {"files": 1}} for d in params["domains"]])
    assert gate[1] == ("ingest.quality", {"domain": "annual_award", "summary": {"files": 1}, "execute": True})
    load = build(5, params, [{"domain": d, "summary": {"output": 7}} for d in params["domains"]])
    assert load == [("ingest.load", {"domains": ["annuity_performance", "annual_award"], "execute": True,
                                     "expected_rows": {"annuity_performance": 7, "annual_award": 7}})]
