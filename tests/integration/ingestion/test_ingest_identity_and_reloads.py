"""A run's identity includes its input files; loading the same business rows again never duplicates them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.errors import PermanentError

ALL = ["annuity_performance", "annuity_income", "trustee_performance", "annual_award"]


def test_same_files_same_job_and_any_file_change_makes_a_new_one(runner, data_root):
    root = data_root()
    folder = root / "annuity_performance" / "V2"
    raw = {"domains": ["annuity_performance"]}
    first = runner.parameters(raw)
    assert runner.parameters(raw) == first
    job = runner.job.job_id(first)
    [inputs] = first["inputs"]
    assert [f["path"].rsplit("/", 1)[-1] for f in inputs["files"]] == [
        "annuity_performance_2024-06_east.xlsx", "annuity_performance_2024-06_west.xlsx"]
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in inputs["files"])

    east = folder / "annuity_performance_2024-06_east.xlsx"
    original = east.read_bytes()
    east.write_bytes(original + b"\0")
    changed = runner.job.job_id(runner.parameters(raw))
    east.write_bytes(original)
    assert runner.job.job_id(runner.parameters(raw)) == job, "same contents again, same job"
    shutil.copy(east, folder / "annuity_performance_2024-06_north.xlsx")
    added = runner.job.job_id(runner.parameters(raw))
    (folder / "annuity_performance_2024-06_north.xlsx").unlink()
    (folder / "annuity_performance_2024-06_west.xlsx").unlink()
    removed = runner.job.job_id(runner.parameters(raw))
    assert len({job, changed, added, removed}) == 4


def test_validation_reads_no_file(runner, data_root):
    root = data_root()
    params = runner.parameters({"domains": ["annual_award"]})
    shutil.rmtree(root)
    assert runner.job.validate_parameters(params) == params, "the manifest is data; nothing is looked up"


def test_a_file_changed_after_submission_fails_the_run_clearly(runner, data_root, table_rows):
    root = data_root()
    params = runner.parameters({"domains": ["annual_award"], "execute": True})
    path = root / "annual_award" / "annual_awards_2024.xlsx"
    path.write_bytes(path.read_bytes() + b"\0")
    run = runner.run(params)
    assert isinstance(run.error, PermanentError)
    assert "changed after the run was submitted" in str(run.error) and "submit again" in str(run.error)
    assert table_rows("warehouse.annual_award") == -1


def test_the_report_lists_every_input_file_with_its_hash_and_per_file_outcomes(runner, data_root):
    data_root()
    run = runner.run({"domains": ALL, "execute": True})
    listed = {(i["domain"], i["path"].rsplit("/", 1)[-1]): i["sha256"] for i in run.report["inputs"]}
    assert len(listed) == 5 and all(len(h) == 64 for h in listed.values())
    report = json.loads(Path(run.report["files"]["report"]).read_text(encoding="utf-8"))
    assert report["inputs"] == run.report["inputs"] and report["mode"] == "loaded"
    [income] = report["domains"]["annuity_income"]["file_results"]
    assert income["input"] == income["output"] + income["rejected"] + income["skipped"]
    assert income["loaded"] == income["output"] > 0
    assert [(r["sheet"], r["row"]) for r in income["rejected_rows"]] == [("Income", 21), ("Income", 54)]
    assert all(r["reason"] for r in income["rejected_rows"])


def test_unknown_domain_and_no_files_are_invalid_parameters(runner, data_root):
    from core.errors import InvalidParameters

    data_root(copy_samples=False)
    with pytest.raises(InvalidParameters, match="unknown domain 'nope'"):
        runner.parameters({"domains": ["nope"]})
    with pytest.raises(InvalidParameters, match="does not exist"):
        runner.parameters({"domains": ["annual_award"]})


def test_demo_then_execute_one_domain_keeps_one_row_per_business_row(runner, data_root, table_rows, warehouse):
    """`make demo` (plan-only, then execute, all domains) then `ingest --domain annuity_performance --execute`."""
    data_root()
    assert runner.run({"domains": ALL}).error is None
    demo = runner.run({"domains": ALL, "execute": True})
    assert demo.error is None
    rows = demo.report["domains"]["annuity_performance"]["output"]
    assert table_rows("warehouse.annuity_performance") == rows
    temporary = warehouse.execute(
        "SELECT count(*) FROM warehouse.annuity_performance WHERE company_id LIKE 'TMP%'").fetchone()[0]
    assert temporary == 0, "names the same run's annuity_income knows got their real ids in the load"
    again = runner.run({"domains": ["annuity_performance"], "execute": True})
    assert again.error is None
    assert table_rows("warehouse.annuity_performance") == rows


@pytest.mark.parametrize("order", [["annuity_performance", "annuity_income", "annuity_performance"],
                                   ["annuity_income", "annuity_performance", "annuity_performance"]])
def test_any_order_of_domains_and_runs_yields_one_row_each(runner, data_root, table_rows, warehouse, order):
    data_root()
    outputs = {}
    for i, domain in enumerate(order):
        run = runner.run({"domains": [domain], "execute": True, "max_files": 10 + i})  # distinct jobs
        assert run.error is None
        outputs[domain] = run.report["domains"][domain]["output"]
    for domain, rows in outputs.items():
        assert table_rows(f"warehouse.{domain}") == rows, domain
    temporary = warehouse.execute(
        "SELECT count(*) FROM warehouse.annuity_performance WHERE company_id LIKE 'TMP%'").fetchone()[0]
    assert temporary == 0, "the last run resolved every name through the reference"


def test_two_runs_of_an_append_domain_load_each_row_once(runner, data_root, table_rows):
    data_root()
    first = runner.run({"domains": ["annual_award"], "execute": True})
    second = runner.run({"domains": ["annual_award"], "execute": True, "max_files": 9})
    assert first.job_id != second.job_id and second.error is None
    assert table_rows("warehouse.annual_award") == first.report["domains"]["annual_award"]["output"]
