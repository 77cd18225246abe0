"""The ingest measurements of `bench/fanout.py`: generated workbooks, the pandas read floor and an executed ingest.

- `generate()` writes `rows` generated rows across `workbooks` workbooks (`services.ingestion.samples`) once per
  benchmark invocation; the time it takes is not measured.
- `read_floor()` reads every workbook with `pandas.read_excel(path, sheet_name=..., engine="openpyxl")` in this
  process, one after the other: the rows per second of reading the same files and nothing else. `processes=2`
  reads them from 2 processes at once instead (a floor for the 2 workers, reported beside the headline one).
- `ingest()` submits the `ingest` job (`execute: true`) to running workers whose data root is the generated folder
  and times submit → the job's `finished_at` (server clock = this machine's clock). It checks the job completed
  and that the warehouse table holds exactly the rows the job result says it loaded.

Both rates count the GENERATED data rows (`rows`), so their ratio compares the same work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from bench.measure import wait_for_jobs
from core.services import Services
from services.ingestion.catalog import load_catalog
from services.ingestion.manifest import build_manifest
from services.ingestion.sample_layouts import LAYOUTS
from services.ingestion.samples import generate_benchmark
from services.ingestion.warehouse import IngestRuntime
from triggers.runtime import Runtime

INGEST_JOB = "ingest"
DOMAIN = "annuity_performance"


def generate(folder: Path, rows: int, workbooks: int) -> list[Path]:
    """The benchmark workbooks at `folder/annuity_performance/V1/` (the data root is `folder`)."""
    return generate_benchmark(folder, rows=rows, workbooks=workbooks, domain=DOMAIN)


def _read_one(path: Path, sheet: str) -> int:
    return len(pd.read_excel(path, sheet_name=sheet, engine="openpyxl"))


@dataclass(frozen=True)
class ReadFloorFigures:
    seconds: float
    rows: int  # generated data rows in the files (the numerator)
    frame_rows: int  # rows of the DataFrames pandas returned (title rows, blank and totals rows included)
    processes: int

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


def read_floor(paths: list[Path], rows: int, processes: int = 1) -> ReadFloorFigures:
    """Read every workbook's data sheet with pandas (openpyxl engine); sequential in this process when
    `processes == 1`, else spread over that many processes (pool start-up excluded: the pool is warmed first)."""
    sheet = LAYOUTS[DOMAIN].sheet
    if processes == 1:
        started = time.perf_counter()
        frame_rows = sum(_read_one(p, sheet) for p in paths)
        return ReadFloorFigures(time.perf_counter() - started, rows, frame_rows, 1)
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(len, [[0]] * processes))  # start the processes (and pay their imports) before timing
        started = time.perf_counter()
        frame_rows = sum(pool.map(_read_one, paths, [sheet] * len(paths)))
        seconds = time.perf_counter() - started
    return ReadFloorFigures(seconds, rows, frame_rows, processes)


@dataclass(frozen=True)
class IngestFigures:
    seconds: float
    rows: int  # generated data rows (the numerator)
    input_rows: int  # the job result's counts for the domain
    output_rows: int
    rejected_rows: int
    skipped_rows: int
    loaded_rows: int  # the load stage's rows = rows in the warehouse table afterwards
    stage_s: dict[str, float]  # per stage: completed_at - started_at; 'finalize': job finished_at - last stage

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


def manifest(runtime: Runtime, data_root: Path, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The input manifest of `params` over the generated data root (what submit adds, computed here because the
    benchmark process's own settings point at no data root)."""
    service = IngestRuntime.of(runtime.engine.services)
    local = replace(service, settings=replace(service.settings, data_root=data_root))
    return build_manifest(params, Services(local))


def ingest(
    runtime: Runtime, url: str, rows: int, workbooks: int, timeout: float, health: Callable[[], None] = lambda: None,
    *, data_root: Path,
) -> IngestFigures:
    """Submit one executed ingest of the generated workbooks; time submit → job finished; verify the load.

    Job ids derive from the parameters and the input files; each run has a fresh cluster, so one ingest per
    cluster never collides. The clock includes computing the manifest (hashing the files), as submit does."""
    params: dict[str, Any] = {"domains": [DOMAIN], "execute": True, "max_files": workbooks}
    started = time.time()
    params["inputs"] = manifest(runtime, data_root, params)
    job = runtime.engine.submit(INGEST_JOB, params).job
    finished = wait_for_jobs(url, [job.job_id], timeout, poll=0.1, health=health)
    target = load_catalog().domain(DOMAIN).target
    table = target.qualified
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT result FROM jobs WHERE job_id = %s", (job.job_id,)).fetchone()
        assert row is not None
        result: dict[str, Any] = row[0]
        warehouse_rows = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(target.db_schema, target.table))).fetchone()
        stages = conn.execute(
            "SELECT name, extract(epoch FROM completed_at - started_at)::float8,"
            " extract(epoch FROM completed_at)::float8 FROM stages WHERE job_id = %s ORDER BY stage",
            (job.job_id,),
        ).fetchall()
    entry = result["domains"][DOMAIN]
    loads = [t for t in result.get("tables", []) if t.get("table") == table]
    loaded = int(loads[0]["rows"]) if loads else -1
    counted = int(warehouse_rows[0]) if warehouse_rows else -1
    if entry.get("file_errors") or int(entry["files"]) != workbooks:
        raise RuntimeError(f"ingest read {entry['files']} of {workbooks} files: {entry.get('file_errors')}")
    if not (loaded == counted == int(entry["output"]) > 0):
        raise RuntimeError(f"ingest loaded {loaded} rows, the table has {counted}, the job output {entry['output']}")
    if int(entry["output"]) + int(entry["rejected"]) > rows + workbooks * 4:
        raise RuntimeError(f"ingest counts {entry} do not fit {rows} generated rows")
    stage_s = {str(name): float(seconds) for name, seconds, _ in stages}
    stage_s["finalize"] = finished - max(float(done) for _, _, done in stages)
    return IngestFigures(
        seconds=finished - started, rows=rows, input_rows=int(entry["input"]), output_rows=int(entry["output"]),
        rejected_rows=int(entry["rejected"]), skipped_rows=int(entry.get("skipped", 0)), loaded_rows=loaded,
        stage_s=stage_s,
    )


def clear_target(url: str) -> None:
    """Drop the domain's warehouse table, so the next ingest's load can be checked against the table alone."""
    target = load_catalog().domain(DOMAIN).target
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(target.db_schema, target.table)))
