"""All or nothing per run: a failed gate or a load failing mid-way leaves every warehouse table as it was."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from core.errors import PermanentError
from core.jobs import PreviousResults
from core.models import TaskResultRow, TaskStatus

INJECT_FAILURE = """
CREATE SEQUENCE inserted_rows;
CREATE FUNCTION fail_mid_load() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('inserted_rows') > 10 THEN
        RAISE EXCEPTION 'injected failure after 10 rows';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER fail_mid_load BEFORE INSERT ON warehouse.trustee_performance
FOR EACH ROW EXECUTE FUNCTION fail_mid_load();
"""
SNAPSHOT = "SELECT * FROM warehouse.trustee_performance ORDER BY report_date, plan_code, portfolio_code"


def test_delete_insert_is_atomic_under_a_failure_mid_load(runner, data_root, warehouse):
    data_root()
    first = runner.run({"domains": ["trustee_performance"], "execute": True})
    assert first.error is None
    before = warehouse.execute(SNAPSHOT).fetchall()
    assert len(before) == first.report["domains"]["trustee_performance"]["output"] > 10
    warehouse.execute(INJECT_FAILURE)

    second = runner.run({"domains": ["trustee_performance"], "execute": True, "max_files": 3})

    assert isinstance(second.error, PermanentError)
    assert "injected failure after 10 rows" in str(second.error)
    assert warehouse.execute("SELECT last_value FROM inserted_rows").fetchone()[0] == 11, "it failed mid-insert"
    assert warehouse.execute(SNAPSHOT).fetchall() == before, "the delete was rolled back with the insert"
    assert second.report["outcome"] == "failed"
    assert second.report["errors"][0]["message"].startswith("load warehouse.trustee_performance")


def test_a_failed_load_can_be_retried(runner, data_root, warehouse, table_rows):
    data_root()
    runner.run({"domains": ["trustee_performance"], "execute": True})
    warehouse.execute(INJECT_FAILURE)
    assert runner.run({"domains": ["trustee_performance"], "execute": True, "max_files": 2}).error is not None
    warehouse.execute("DROP TRIGGER fail_mid_load ON warehouse.trustee_performance")
    retried = runner.run({"domains": ["trustee_performance"], "execute": True, "max_files": 2})
    assert retried.error is None
    rows = retried.report["domains"]["trustee_performance"]["output"]
    assert table_rows("warehouse.trustee_performance") == rows
    assert retried.results[5][0]["tables"][0]["deleted"] == rows


def test_lost_staging_is_detected_before_loading(runner, data_root, warehouse, task_registry, table_rows):
    data_root()
    params = runner.parameters({"domains": ["trustee_performance"], "execute": True})
    run = runner.run(params, stop_before=5)
    gate = PreviousResults(4, [TaskResultRow("t0", 0, TaskStatus.COMPLETED, run.results[4][0])])
    [spec] = runner.job.build_tasks(runner.job.stage(5), params, gate)
    [(staging,)] = warehouse.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'ingest_staging' "
        "AND table_name LIKE 'trustee_performance_%'"
    ).fetchall()
    warehouse.execute(f'DELETE FROM ingest_staging."{staging}" WHERE _source_row = 5')
    context = runner.env.context(run.job_id, 5)
    with pytest.raises(PermanentError, match="staged rows but the process stage reported"):
        task_registry.get("ingest.load")(spec.parameters, context)
    assert table_rows("warehouse.trustee_performance") == -1


def _snapshot(warehouse: psycopg.Connection[Any], tables: list[str]) -> dict[str, list[str] | None]:
    out: dict[str, list[str] | None] = {}
    for table in tables:
        exists = (warehouse.execute("SELECT to_regclass(%s)", (table,)).fetchone() or [None])[0]
        out[table] = sorted(map(repr, warehouse.execute(f"SELECT * FROM {table}").fetchall())) if exists else None
    return out


WAREHOUSE = ["warehouse.annuity_performance", "warehouse.annuity_income", "warehouse.trustee_performance",
             "warehouse.annual_award", "warehouse.plans", "warehouse.portfolios", "warehouse.company_reference"]
ALL = ["annuity_performance", "annuity_income", "trustee_performance", "annual_award"]


def test_a_load_failing_mid_way_changes_no_table_at_all(runner, data_root, warehouse):
    """References and the facts loaded before the failing table are rolled back with it."""
    data_root()
    first = runner.run({"domains": ["annual_award", "trustee_performance"], "execute": True})
    assert first.error is None
    warehouse.execute(INJECT_FAILURE)
    before = _snapshot(warehouse, WAREHOUSE)

    run = runner.run({"domains": ALL, "execute": True})

    assert isinstance(run.error, PermanentError) and "injected failure" in str(run.error)
    assert warehouse.execute("SELECT last_value FROM inserted_rows").fetchone()[0] == 11, "it failed mid-insert"
    assert _snapshot(warehouse, WAREHOUSE) == before, "facts and references exactly as they were"
    assert run.report["mode"] == "not loaded"


def test_a_failed_gate_changes_no_table_at_all(runner, data_root, data_sources, warehouse):
    data_root()
    assert runner.run({"domains": ["annual_award"], "execute": True}).error is None
    before = _snapshot(warehouse, WAREHOUSE)
    data_sources(lambda c: c["domains"]["trustee_performance"]["quality"].update(max_drift=0.0))
    run = runner.run({"domains": ALL, "execute": True})
    assert isinstance(run.error, PermanentError) and "quality gate failed for trustee_performance" in str(run.error)
    assert _snapshot(warehouse, WAREHOUSE) == before
    assert run.report["domains"]["trustee_performance"]["quality"]["passed"] is False
    assert run.report["mode"] == "not loaded"
