"""An executed ingest of the sample workbooks, run by the engine's workers with every connection through PgBouncer:
COPY into staging, transaction-scoped advisory locks, delete+insert loads and the report all work in transaction
pooling mode."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from core.models import JobStatus
from tests.integration.engine_helpers import run_to_end
from triggers.runtime import Runtime

DOMAINS = ["annuity_performance", "annuity_income", "trustee_performance", "annual_award"]


@pytest.fixture
def ingest_runtime(runtime: Runtime) -> Iterator[Runtime]:
    yield runtime


def _warehouse(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        names = [row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'warehouse' ORDER BY 1")]
        counts: dict[str, int] = {}
        for name in names:
            row = conn.execute(
                psycopg.sql.SQL("SELECT count(*) FROM warehouse.{}").format(psycopg.sql.Identifier(name))
            ).fetchone()
            counts[name] = row[0] if row else 0
        return counts


def test_an_executed_ingest_loads_the_warehouse_through_pgbouncer(
    ingest_runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    runtime = ingest_runtime
    assert runtime.settings.pgbouncer and runtime.database.conninfo != database_url
    job_id = runtime.engine.submit("ingest", {"domains": DOMAINS, "execute": True}).job.job_id
    job = run_to_end(runtime, job_id, timeout=180, concurrency=3)
    assert job.status is JobStatus.COMPLETED, json.dumps(job.error)
    loaded = _warehouse(database_url)
    for domain in DOMAINS:
        assert loaded.get(domain, 0) > 0, f"{domain} loaded"
    assert list((tmp_path / "reports").glob("*/report.json")), "the report was written"
