"""Bad rows and bad files are reported with file, sheet, row and reason; nothing else is lost."""

from __future__ import annotations

import csv
from pathlib import Path

from core.errors import PermanentError

ALL = ["annuity_performance", "annuity_income", "trustee_performance", "annual_award"]


def read_csv(path: str) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_rejected_rows_are_reported_and_every_other_row_loads(runner, data_root, table_rows):
    data_root()
    run = runner.run({"domains": ALL, "execute": True})
    assert run.error is None
    for result in run.results[2]:
        assert result["input"] == result["output"] + result["rejected"] + result["skipped"]
        assert result["rejected"] == 2 and result["skipped"] == 2
        for sample in result["rejected_sample"]:
            assert sample["file"] == result["file"] and sample["sheet"] == result["sheet"]
            assert isinstance(sample["row"], int) and sample["reason"]
    for domain in ALL:
        outputs = sum(r["output"] for r in run.results[2] if r["domain"] == domain)
        assert table_rows(f"warehouse.{domain}") == outputs
    rejected = read_csv(run.report["files"]["rejected_rows"])
    assert len(rejected) == sum(r["rejected"] for r in run.results[2])
    reasons = {(Path(r["file"]).name, r["sheet"], int(r["row"])): r["reason"] for r in rejected}
    assert reasons[("annuity_income_2024-06.xlsx", "Income", 21)] == "fee_income: cannot read 'TBD'"
    duplicate = reasons[("trustee_returns_2024-06.xlsx", "Returns", 36)]
    assert duplicate.startswith("duplicate primary key") and duplicate.endswith("first at row 6")
    assert all(r["values"].startswith("{") for r in rejected)


def test_an_unreadable_workbook_is_reported_and_stops_the_load(runner, data_root, table_rows):
    root = data_root()
    broken = root / "annual_award" / "annual_awards_broken.xlsx"
    broken.write_bytes(b"PK\x03\x04 not really a workbook")
    run = runner.run({"domains": ["annual_award"], "execute": True})
    errors = {r["file"]: r["file_error"] for r in run.results[2]}
    assert "not a readable .xlsx workbook" in errors[str(broken)]
    assert isinstance(run.error, PermanentError)
    assert "quality gate failed for annual_award: 1 file(s) could not be read" in str(run.error)
    assert table_rows("warehouse.annual_award") == -1, "nothing is loaded when the gate fails"
    rejected = read_csv(run.report["files"]["rejected_rows"])
    [entry] = [r for r in rejected if r["file"] == str(broken)]
    assert entry["row"] == "" and "not a readable" in entry["reason"]
    assert len(rejected) == 3, "the good file's two rejected rows are still reported"


def test_a_sheet_missing_a_required_column_is_a_file_error(runner, data_root, data_sources):
    data_root()
    data_sources(lambda c: c["domains"]["annual_award"]["quality"].update(allow_file_errors=True))
    run = runner.run({"domains": ["annual_award"], "sheet": "Notes"})
    [result] = run.results[2]
    assert result["sheet"] == "Notes"
    assert result["file_error"].startswith("no header row")
    assert run.error is None, "allow_file_errors lets the gate pass"
