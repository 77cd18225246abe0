"""Plan-only writes nothing; execute loads every record, backfills references, and reruns replace by key."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import psycopg

ALL = ["annuity_performance", "annuity_income", "trustee_performance", "annual_award"]
TARGETS = {d: f"warehouse.{d}" for d in ALL}


def staged_rows(warehouse: psycopg.Connection[Any]) -> int:
    tables = warehouse.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'ingest_staging'"
    ).fetchall()
    total = 0
    for (name,) in tables:
        row = warehouse.execute(f'SELECT count(*) FROM ingest_staging."{name}"').fetchone()
        total += row[0] if row else 0
    return total


def test_plan_only_writes_nothing_and_returns_the_sql_plan(runner, data_root, warehouse):
    data_root()
    run = runner.run({"domains": ALL})
    assert run.error is None
    assert warehouse.execute("SELECT to_regnamespace('warehouse')").fetchone()[0] is None, "no warehouse schema"
    loads = {t["table"]: t for t in run.results[5][0]["tables"]}
    assert set(loads) == set(TARGETS.values())
    report = run.report
    assert report["mode"] == "plan only"
    for domain, table in TARGETS.items():
        plan = loads[table]
        assert plan["mode"] == "plan only"
        assert plan["rows"] == report["domains"][domain]["output"] > 0
        assert plan["sql"][0].startswith('CREATE SCHEMA IF NOT EXISTS "warehouse"')
        assert any(s.startswith(f'INSERT INTO "warehouse"."{domain}"') for s in plan["sql"])
    assert any(s.startswith("DELETE FROM") for s in loads["warehouse.annuity_income"]["sql"])
    assert any("_source_file IN" in s for s in loads["warehouse.annual_award"]["sql"]), "append replaces by file"
    references = report["domains"]["annuity_income"]["references"]
    assert {r["table"]: r["missing"] for r in references} == {"warehouse.plans": 10,
                                                              "warehouse.company_reference": 16}
    assert staged_rows(warehouse) == 0, "finalize clears the job's staging rows"
    assert Path(report["files"]["report"]).is_file()


def test_execute_loads_every_record_and_references(runner, data_root, table_rows, warehouse):
    data_root()
    run = runner.run({"domains": ALL, "execute": True})
    assert run.error is None
    domains = run.report["domains"]
    for domain, table in TARGETS.items():
        assert table_rows(table) == domains[domain]["output"] > 0
    assert run.report["mode"] == "loaded"
    assert table_rows("warehouse.plans") == 10
    assert table_rows("warehouse.company_reference") == 16
    portfolios = warehouse.execute(
        "SELECT count(*) FROM (SELECT portfolio_code FROM warehouse.annuity_performance "
        "UNION SELECT portfolio_code FROM warehouse.trustee_performance) p"
    ).fetchone()[0]
    assert table_rows("warehouse.portfolios") == portfolios
    row = warehouse.execute(
        "SELECT report_date::text, plan_code, company_name, fee_income, _source_row, _job_id "
        "FROM warehouse.annuity_income ORDER BY _source_row LIMIT 1"
    ).fetchone()
    assert row[:3] == ("2024-06-30", "P001", "Acme Manufacturing Co., Ltd.")
    assert row[3] > 0 and row[4] == 5 and row[5] == run.job_id
    plan = warehouse.execute("SELECT plan_name FROM warehouse.plans WHERE plan_code = 'P001'").fetchone()
    assert plan == ("Acme Manufacturing Pension Plan",), "the domain with plan names supplies them"


def test_rerun_replaces_by_key_and_append_replaces_by_file(runner, data_root, table_rows):
    data_root()
    first = runner.run({"domains": ["annuity_income", "annual_award"], "execute": True})
    income, awards = (first.report["domains"][d]["output"] for d in ("annuity_income", "annual_award"))
    again = runner.run({"domains": ["annuity_income", "annual_award"], "execute": True, "max_files": 5})
    assert again.job_id != first.job_id
    loads = {t["table"]: t for t in again.results[5][0]["tables"]}
    assert loads["warehouse.annuity_income"]["deleted"] == income
    assert table_rows("warehouse.annuity_income") == income
    assert table_rows("warehouse.annual_award") == awards, "loading a file again replaces what it loaded"
    assert loads["warehouse.annual_award"]["deleted"] == awards
    plan = runner.run({"domains": ["annuity_income"]})
    assert plan.results[5][0]["tables"][0]["would_delete"] == income


def test_report_files(runner, data_root):
    data_root()
    run = runner.run({"domains": ALL})
    files = run.report["files"]
    report = json.loads(Path(files["report"]).read_text(encoding="utf-8"))
    assert report["job_id"] == run.job_id
    assert report["domains"]["annuity_performance"]["file_results"][0]["timings"]["read"] > 0
    with open(files["unknown_names"], encoding="utf-8") as handle:
        unknown = list(csv.DictReader(handle))
    assert len(unknown) == 16 == run.report["domains"]["annuity_performance"]["unknown_names"]
    assert all(u["temporary_id"].startswith("TMP") for u in unknown)
