"""Warehouse keys are real constraints; keys repeated across chunks and formulas without values are reported."""

from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path

import openpyxl

from services.ingestion import staging as st
from services.ingestion.processing import process_file
from services.ingestion.readers import FileFormat
from services.ingestion.sample_layouts import LAYOUTS
from services.ingestion.samples import build_rows, write_workbook

KEYS = "SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass AND indisunique"


def test_every_warehouse_table_enforces_its_primary_key(runner, data_root, warehouse):
    data_root()
    run = runner.run({"domains": ["annuity_income", "annual_award"], "execute": True})
    assert run.error is None
    for table in ("warehouse.annuity_income", "warehouse.annual_award"):
        assert warehouse.execute(KEYS, (table,)).fetchone()[0] == 1, table
    row = warehouse.execute(
        "SELECT _source_file, _source_sheet, _source_row, _job_id, _loaded_at FROM warehouse.annual_award LIMIT 1"
    ).fetchone()
    assert row[0].endswith("annual_awards_2024.xlsx") and row[1] == "Awards" and row[2] > 0
    assert row[3] == run.job_id and row[4] is not None


def test_a_table_from_before_keys_were_enforced_gets_its_key_and_lineage(runner, data_root, warehouse):
    data_root()
    first = runner.run({"domains": ["annual_award"], "execute": True})
    warehouse.execute("ALTER TABLE warehouse.annual_award DROP CONSTRAINT annual_award_pkey")
    warehouse.execute("ALTER TABLE warehouse.annual_award DROP COLUMN _source_sheet, DROP COLUMN _loaded_at")
    assert warehouse.execute(KEYS, ("warehouse.annual_award",)).fetchone()[0] == 0
    again = runner.run({"domains": ["annual_award"], "execute": True, "max_files": 3})
    assert again.error is None
    assert warehouse.execute(KEYS, ("warehouse.annual_award",)).fetchone()[0] == 1
    count = warehouse.execute("SELECT count(*), count(_source_sheet) FROM warehouse.annual_award").fetchone()
    assert count == (first.report["domains"]["annual_award"]["output"],) * 2


def _messy_performance(path: Path, rows: int, seed: int) -> tuple[Path, list[list[object]]]:
    layout = LAYOUTS["annuity_performance"]
    data = build_rows(layout, rows, "2024-06", random.Random(seed))
    return write_workbook(path, layout, data, "2024-06"), data


def test_keys_repeated_across_chunks_are_rejected_once(data_root, tmp_path, ingest_env):
    data_root()
    path, _ = _messy_performance(tmp_path / "perf.xlsx", 60, 5)
    runtime = ingest_env.runtime
    catalog = runtime.catalog()
    domain = catalog.domain("annuity_performance")
    staging = st.StagingTable.for_domain("ingest_staging", domain.name, catalog.service(domain.name).output_model)
    with runtime.warehouse() as conn:
        st.ensure_base_tables(conn, "ingest_staging")
        st.ensure_staging_table(conn, staging)
        results = {}
        for chunk_rows in (7, 1000):
            job = f"job-{chunk_rows}"
            _, tally = process_file(conn, schema="ingest_staging", staging=staging, domain=domain,
                                    service=catalog.service(domain.name), path=path, sheet="Performance",
                                    job_id=job, period=None, file_format=FileFormat.AUTO, runtime=runtime,
                                    chunk_rows=chunk_rows)
            reasons = conn.conn.execute(
                "SELECT source_row, reason FROM ingest_staging.rejected_rows WHERE job_id = %s ORDER BY 1", (job,)
            ).fetchall()
            results[chunk_rows] = (tally.input, tally.output, tally.rejected, tally.skipped, reasons)
            assert st.count_rows(conn, staging, job) == tally.output
    assert results[7] == results[1000], "chunking changes nothing a report shows"
    assert any(reason.startswith("duplicate primary key") for _, reason in results[7][4])


def test_a_formula_without_cached_value_is_reported_as_such(runner, data_root):
    root = data_root()
    folder = root / "annuity_performance" / "V9"
    path, _ = _messy_performance(folder / "annuity_performance_2024-07.xlsx", 12, 6)


    book = openpyxl.load_workbook(path)
    book["Performance"]["H6"] = "=G6*1.01"  # Closing Assets of the second data row (header at row 4)
    book.save(path)
    run = runner.run({"domains": ["annuity_performance"]})
    with open(run.report["files"]["rejected_rows"], encoding="utf-8", newline="") as handle:
        rejected = [r for r in csv.DictReader(handle) if r["row"] == "6"]
    assert [r["reason"] for r in rejected] == [
        "ending_assets: formula without a cached value (recalculate and save the workbook)"]
    shutil.rmtree(folder)


