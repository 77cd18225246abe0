"""`coremachine ingest` end to end through the engine: plan-only writes nothing, --execute loads the sample set."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from services.ingestion.config import data_sources_path
from triggers.cli import main


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name in ("COREMACHINE_DATA_SOURCES", "COREMACHINE_DATA_ROOT", "COREMACHINE_JOB_PACKAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COREMACHINE_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COREMACHINE_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("COREMACHINE_LOG_LEVEL", "WARNING")
    yield database_url


def warehouse_tables(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'warehouse' ORDER BY 1")]
        return {n: conn.execute(f'SELECT count(*) FROM warehouse."{n}"').fetchone()[0] for n in names}  # type: ignore[index]


DOMAINS = ["annuity_performance", "annuity_income", "trustee_performance", "annual_award"]


def test_plan_only_then_execute_through_the_engine(cli_env: str, tmp_path: Path) -> None:
    args = [a for d in DOMAINS for a in ("--domain", d)]
    assert main(["ingest", *args]) == 0
    assert sum(warehouse_tables(cli_env).values()) == 0, "plan-only writes nothing to the warehouse"
    assert main(["ingest", *args, "--execute"]) == 0
    loaded = warehouse_tables(cli_env)
    for domain in DOMAINS:
        assert loaded.get(domain, 0) > 0, f"{domain} loaded"
    reports = list((tmp_path / "reports").glob("*/report.json"))
    assert len(reports) == 2 and all((r.parent / "rejected_rows.csv").exists() for r in reports)
    assert main(["ingest", *args, "--execute"]) == 0, "the same submission again is the same job"
    assert warehouse_tables(cli_env) == loaded


def test_unknown_domain_exits_2_naming_the_valid_ones(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", "--domain", "nope"]) == 2
    out = capsys.readouterr().err
    assert "unknown domain 'nope'" in out and "annuity_performance" in out


def test_summary_says_fail_and_not_loaded_for_a_failed_gate_then_loaded(
    cli_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = yaml.safe_load(data_sources_path().read_text(encoding="utf-8"))
    config["domains"]["annual_award"]["quality"]["max_drift"] = 0.0
    strict = tmp_path / "data_sources.yml"
    strict.write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.setenv("COREMACHINE_DATA_SOURCES", str(strict))
    assert main(["ingest", "--domain", "annual_award", "--execute"]) == 1
    out = capsys.readouterr().out
    assert "not loaded: the run failed" in out and re.search(r"annual_award +1 +27 +23 +2 +2 +0 +fail", out)
    assert warehouse_tables(cli_env) == {}
    monkeypatch.delenv("COREMACHINE_DATA_SOURCES")
    assert main(["ingest", "--domain", "annual_award"]) == 0
    out = capsys.readouterr().out
    assert "plan only: nothing written" in out and re.search(r"annual_award .* pass", out)
    assert main(["ingest", "--domain", "annual_award", "--execute", "--max-files", "5"]) == 0, "another job"
    out = capsys.readouterr().out
    assert "ingest (loaded)" in out and warehouse_tables(cli_env)["annual_award"] == 23


def test_rerun_runs_the_same_job_again_over_unchanged_inputs(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ingest", "--domain", "annual_award", "--execute"]) == 0
    first = capsys.readouterr().out
    job_id = re.search(r"[0-9a-f]{64}", first)
    assert job_id is not None
    assert main(["ingest", "--domain", "annual_award", "--execute"]) == 0
    assert job_id.group(0) in capsys.readouterr().out, "unchanged inputs: the same job"
    assert main(["ingest", "--domain", "annual_award", "--execute", "--rerun"]) == 0
    out = capsys.readouterr().out
    assert f"job {job_id.group(0)}: round 1 started over the same inputs" in out
    assert "ingest (loaded)" in out
    with psycopg.connect(cli_env) as conn:
        rounds = conn.execute("SELECT retry_round FROM jobs WHERE job_id = %s", (job_id.group(0),)).fetchone()
        loaded = conn.execute("SELECT count(DISTINCT _job_id), count(*) FROM warehouse.annual_award").fetchone()
    assert rounds is not None and rounds[0] == 1, "one job, its second round"
    assert loaded == (1, 23), "the rerun replaced its own rows"
