"""The run report: per-domain summaries between stages, and at finalize a JSON report plus CSVs.

Finalize writes `<reports_dir>/<job_id>/report.json`, `rejected_rows.csv` and `unknown_names.csv` (from
staging), then clears the job's staging rows. The job result is the compact form of the report; the CLI
renders `summary_rows(result)` as its table.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.jobs import FinalizeContext
from services.ingestion import runtime
from services.ingestion import staging as st
from services.ingestion.catalog import load_catalog
from services.ingestion.dberrors import warehouse_errors
from services.ingestion.queries import query, table

log = logging.getLogger(__name__)

DISCOVER, PROCESS, BACKFILL, QUALITY, LOAD = 1, 2, 3, 4, 5
_COUNTS = ("input", "output", "rejected", "skipped", "unknown_names")
_ENRICHMENT_COUNTS = ("names", "from_reference", "from_provider", "temporary", "lookups_used")


def summarise(domain: str, processed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Totals of one domain's process results, and its file errors."""
    mine = [r for r in processed if r.get("domain") == domain]
    summary: dict[str, Any] = {"files": len(mine), **{k: sum(int(r.get(k, 0)) for r in mine) for k in _COUNTS}}
    summary["file_errors"] = [
        {"file": r["file"], "sheet": r.get("sheet"), "reason": r["file_error"]} for r in mine if r.get("file_error")
    ]
    stats = [r["enrichment"] for r in mine if r.get("enrichment")]
    if stats:
        summary["enrichment"] = {k: sum(int(s.get(k, 0)) for s in stats) for k in _ENRICHMENT_COUNTS}
        summary["enrichment"]["budget_exhausted"] = any(s.get("budget_exhausted") for s in stats)
    return summary


def _results(context: FinalizeContext, stage: int) -> list[dict[str, Any]]:
    previous = context.stage_results.get(stage)
    return [dict(r) for r in previous.results()] if previous is not None else []


def build_report(context: FinalizeContext) -> dict[str, Any]:
    params = context.parameters
    domains: dict[str, dict[str, Any]] = {d: {"domain": d} for d in params.get("domains", [])}
    for found in _results(context, DISCOVER):
        domains[found["domain"]].update(
            folder=found.get("folder"), version=found.get("version"), files_matched=found.get("matched"),
            files_selected=len(found.get("files", [])),
        )
    processed = _results(context, PROCESS)
    for name, entry in domains.items():
        entry.update(summarise(name, processed))
        entry["file_results"] = [r for r in processed if r.get("domain") == name]
    for result in _results(context, BACKFILL):
        domains[result["domain"]]["references"] = result.get("references", [])
    for result in _results(context, QUALITY):
        domains[result["domain"]]["quality"] = result.get("quality")
    return {
        "job_id": context.job_id,
        "outcome": context.outcome.value,
        "mode": "executed" if params.get("execute") else "plan-only",
        "parameters": dict(params),
        "domains": domains,
        "tables": _results(context, LOAD),
        "errors": [dict(e) for e in context.errors],
    }


def _write_csv(path: Path, header: list[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def export_staged(conn: Any, directory: Path, job_id: str, schema: str) -> dict[str, dict[str, int]]:
    """rejected_rows.csv and unknown_names.csv from staging (empty files when there is nothing).

    Answers the rows written per file and domain: {"rejected_rows": {domain: n}, "unknown_names": {domain: n}}.
    """
    counts: dict[str, dict[str, int]] = {}
    for name, statement, header in (
        (st.REJECTED, "rejected_rows_of_job", ["domain", "file", "sheet", "row", "reason", "values"]),
        (st.UNKNOWN_NAMES, "unknown_names_of_job", ["domain", "name", "temporary_id", "occurrences", "first_file"]),
    ):
        rows: list[Sequence[Any]] = []
        if st.table_columns(conn, schema, name):
            rows = conn.execute(query(statement, table=table(schema, name)), (job_id,)).fetchall()
        if name == st.REJECTED:
            rows = [(*r[:5], json.dumps(r[5], ensure_ascii=False, default=str)) for r in rows]
        _write_csv(directory / f"{name}.csv", header, rows)
        per_domain: dict[str, int] = {}
        for row in rows:
            per_domain[row[0]] = per_domain.get(row[0], 0) + 1
        counts[name] = per_domain
    return counts


def compact(report: Mapping[str, Any]) -> dict[str, Any]:
    """The job result: the report without per-file detail and SQL text."""
    domains = {
        name: {k: v for k, v in entry.items() if k != "file_results"} for name, entry in report["domains"].items()
    }
    tables = [{k: v for k, v in t.items() if k != "sql"} for t in report["tables"]]
    return {**{k: v for k, v in report.items() if k not in ("domains", "tables")}, "domains": domains,
            "tables": tables}


def finalize_run(context: FinalizeContext) -> dict[str, Any]:
    """Write the report files, clear staging, answer the compact report."""
    settings = runtime.settings()
    report = build_report(context)
    directory = settings.reports_dir / context.job_id
    directory.mkdir(parents=True, exist_ok=True)
    catalog = load_catalog()
    staging_tables = [
        st.StagingTable.for_domain(settings.staging_schema, d, catalog.service(d).output_model)
        for d in report["domains"] if d in catalog.names()
    ]
    with runtime.connection() as conn, warehouse_errors("finalize"):
        exported = export_staged(conn, directory, context.job_id, settings.staging_schema)
        if not settings.keep_staging:
            st.purge_job(conn, settings.staging_schema, context.job_id, staging_tables)
    report["files"] = {
        "report": str(directory / "report.json"),
        "rejected_rows": str(directory / f"{st.REJECTED}.csv"),
        "unknown_names": str(directory / f"{st.UNKNOWN_NAMES}.csv"),
    }
    for domain, entry in report["domains"].items():
        entry["unknown_names"] = exported[st.UNKNOWN_NAMES].get(domain, 0)
    report["exported"] = {name: sum(per_domain.values()) for name, per_domain in exported.items()}
    (directory / "report.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False, default=str), encoding="utf-8"
    )
    log.info("ingest report written", extra={"stage": "finalize", "mode": report["mode"],
                                              "report_dir": str(directory), **report["exported"]})
    return compact(report)


def summary_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per domain for the CLI's summary table."""
    loads = {t.get("table"): t for t in result.get("tables", [])}
    rows = []
    for name, entry in result.get("domains", {}).items():
        target = load_catalog().domain(name).target.qualified if name in load_catalog().names() else ""
        load = loads.get(target, {})
        quality = entry.get("quality") or {}
        rows.append({
            "domain": name, "files": entry.get("files", 0), "input": entry.get("input", 0),
            "output": entry.get("output", 0), "rejected": entry.get("rejected", 0), "skipped": entry.get("skipped", 0),
            "unknown_names": entry.get("unknown_names", 0), "quality": "pass" if quality.get("passed") else
            ("fail" if quality else "-"), "table": target, "mode": load.get("mode", result.get("mode")),
            "rows": load.get("rows", 0), "replaced": load.get("deleted", load.get("would_delete", 0)),
        })
    return rows
