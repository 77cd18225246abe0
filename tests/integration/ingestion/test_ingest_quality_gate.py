"""The quality gate fails the job, with a report, before anything is loaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from core.errors import PermanentError


def test_duplicate_keys_across_files_fail_the_gate(runner, data_root, table_rows, ingest_env):
    root = data_root()
    folder = root / "annuity_performance" / "V2"
    shutil.copy(folder / "annuity_performance_2024-06_east.xlsx", folder / "annuity_performance_2024-06_copy.xlsx")
    run = runner.run({"domains": ["annuity_performance", "annual_award"], "execute": True})
    assert isinstance(run.error, PermanentError)
    assert "quality gate failed for annuity_performance" in str(run.error)
    assert "appear more than once across files" in str(run.error)
    assert table_rows("warehouse.annuity_performance") == -1
    assert table_rows("warehouse.annual_award") == -1, "fail fast: no domain is loaded"
    assert table_rows("warehouse.plans") == -1, "references are written only with the run's load, after the gate"
    assert run.report["mode"] == "not loaded"
    assert run.report["domains"]["annuity_performance"]["quality"]["passed"] is False
    report = json.loads(ingest_env.runtime.artifacts.get(f"{run.job_id}/quality_annuity_performance.json"))
    [unique] = [c for c in report["checks"] if c["rule"] == "unique_key"]
    assert not unique["passed"] and unique["duplicates"][0]["copies"] == 2
    assert Path(run.report["files"]["report"]).is_file(), "the run report is still written"


def test_row_count_drift_beyond_tolerance_fails(runner, data_root, data_sources):
    data_root()
    data_sources(lambda c: c["domains"]["annual_award"]["quality"].update(max_drift=0.01))
    run = runner.run({"domains": ["annual_award"]})
    assert isinstance(run.error, PermanentError)
    assert "source rows became records" in str(run.error)
    assert "tolerance 1.0%" in str(run.error)
