"""Concurrent backfills (several domains, duplicated deliveries) insert each missing reference row once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from core.ids import task_id_for
from core.jobs import PreviousResults
from core.models import TaskResultRow, TaskStatus
from core.registry import TaskContext

DOMAINS = ["annuity_performance", "trustee_performance", "annuity_income"]
COPIES = 4


def test_racing_backfills_insert_each_reference_once(runner, data_root, warehouse, task_registry):
    data_root()
    params = runner.job.validate_parameters({"domains": DOMAINS, "execute": True})
    run = runner.run(params, stop_before=3)
    processed = PreviousResults(2, [TaskResultRow(f"t{i}", i, TaskStatus.COMPLETED, r)
                                    for i, r in enumerate(run.results[2])])
    specs = runner.job.build_tasks(runner.job.stage(3), params, processed) * COPIES
    handler = task_registry.get("ingest.backfill")
    start = threading.Barrier(len(specs))

    def backfill(index: int) -> dict[str, Any]:
        context = TaskContext(run.job_id, "ingest", 3, task_id_for(run.job_id, 3, index % 3), index % 3, 1, 3)
        start.wait()
        return dict(handler(specs[index].parameters, context) or {})

    with ThreadPoolExecutor(max_workers=len(specs)) as pool:
        results = list(pool.map(backfill, range(len(specs))))

    inserted: dict[str, int] = {}
    for result in results:
        for reference in result["references"]:
            inserted[reference["table"]] = inserted.get(reference["table"], 0) + reference["inserted"]
    portfolios = warehouse.execute(
        "SELECT count(DISTINCT portfolio_code) FROM (SELECT portfolio_code FROM ingest_staging."
        + _staging(warehouse, "annuity_performance")
        + " UNION ALL SELECT portfolio_code FROM ingest_staging." + _staging(warehouse, "trustee_performance")
        + ") p"
    ).fetchone()[0]
    expected = {"warehouse.plans": 10, "warehouse.portfolios": portfolios, "warehouse.company_reference": 16}
    assert inserted == expected
    for table, rows in expected.items():
        assert warehouse.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == rows


def _staging(warehouse: psycopg.Connection[Any], domain: str) -> str:
    [(name,)] = warehouse.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'ingest_staging' "
        "AND table_name LIKE %s", (f"{domain}_%",)
    ).fetchall()
    return f'"{name}"'
