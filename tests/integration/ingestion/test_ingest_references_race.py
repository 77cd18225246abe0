"""Two runs racing on shared reference tables (and duplicated deliveries of a load) insert each row once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from core.jobs import PreviousResults
from core.models import TaskResultRow, TaskStatus

RUNS = [["annuity_performance", "annuity_income"], ["trustee_performance", "annuity_income"]]
COPIES = 2


def test_two_runs_racing_on_one_reference_table_load_each_row_once(runner, data_root, warehouse, task_registry):
    data_root()
    loads = []
    for domains in RUNS:
        params = runner.parameters({"domains": domains, "execute": True})
        run = runner.run(params, stop_before=5)
        gate = PreviousResults(4, [TaskResultRow(f"t{i}", i, TaskStatus.COMPLETED, r)
                                   for i, r in enumerate(run.results[4])])
        [spec] = runner.job.build_tasks(runner.job.stage(5), params, gate)
        loads += [(run.job_id, spec.parameters)] * COPIES
    handler = task_registry.get("ingest.load")
    start = threading.Barrier(len(loads))

    def load(index: int) -> dict[str, Any]:
        job_id, params = loads[index]
        start.wait()
        return dict(handler(dict(params), runner.env.context(job_id, 5)) or {})

    with ThreadPoolExecutor(max_workers=len(loads)) as pool:
        results = list(pool.map(load, range(len(loads))))

    assert all(r["mode"] == "loaded" for r in results)
    counts = {t: warehouse.execute(f"SELECT count(*), count(DISTINCT ({k})) FROM {t}").fetchone()
              for t, k in (("warehouse.plans", "plan_code"), ("warehouse.portfolios", "portfolio_code"),
                           ("warehouse.company_reference", "company_name"))}
    assert counts["warehouse.plans"] == (10, 10)
    assert counts["warehouse.company_reference"] == (16, 16)
    portfolios = warehouse.execute(
        "SELECT count(*) FROM (SELECT portfolio_code FROM warehouse.annuity_performance "
        "UNION SELECT portfolio_code FROM warehouse.trustee_performance) p").fetchone()[0]
    assert counts["warehouse.portfolios"] == (portfolios, portfolios)
    named = warehouse.execute("SELECT count(*) FROM warehouse.plans WHERE plan_name IS NOT NULL").fetchone()[0]
    assert named == 10, "whichever run inserted a plan first, the one knowing its name filled it in"
    for table, key in (("annuity_performance", "report_date, plan_code, portfolio_code, company_id"),
                       ("annuity_income", "report_date, plan_code, company_id, product_line")):
        total, distinct = warehouse.execute(
            f"SELECT count(*), count(DISTINCT ({key})) FROM warehouse.{table}").fetchone()
        assert total == distinct > 0, table
