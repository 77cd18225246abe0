"""The run report: per-domain summaries between stages, and at finalize a JSON report plus CSVs.

Finalize writes `<job_id>/report.json`, `rejected_rows.csv` and `unknown_names.csv` (from staging) through the
runtime's artifact store (a local folder, or Blob Storage on Azure), then clears the job's staging rows. The job
result is the compact form of the report; the CLI renders `summary_rows(result)` as its table.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from core.artifacts import ArtifactStore
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


FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR first) gets a leading `'`."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def csv_bytes(header: list[str], rows: Sequence[Sequence[Any]]) -> bytes:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow([safe_cell(h) for h in header])
    writer.writerows([safe_cell(v) for v in row] for row in rows)
    return text.getvalue().encode("utf-8")


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str).encode("utf-8")


def export_staged(conn: Any, store: ArtifactStore, job_id: str, schema: str) -> dict[str, dict[str, int]]:
    """`<job_id>/rejected_rows.csv` and `<job_id>/unknown_names.csv` from staging (header only when empty).

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
        store.put(f"{job_id}/{name}.csv", csv_bytes(header, rows), "text/csv; charset=utf-8")
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
    store = runtime.artifacts()
    report = build_report(context)
    catalog = load_catalog()
    staging_tables = [
        st.StagingTable.for_domain(settings.staging_schema, d, catalog.service(d).output_model)
        for d in report["domains"] if d in catalog.names()
    ]
    with runtime.connection() as conn, warehouse_errors("finalize"):
        exported = export_staged(conn, store, context.job_id, settings.staging_schema)
        if not settings.keep_staging:
            st.purge_job(conn, settings.staging_schema, context.job_id, staging_tables)
    report["files"] = {
        "report": store.url(f"{context.job_id}/report.json"),
        "rejected_rows": store.url(f"{context.job_id}/{st.REJECTED}.csv"),
        "unknown_names": store.url(f"{context.job_id}/{st.UNKNOWN_NAMES}.csv"),
    }
    for domain, entry in report["domains"].items():
        entry["unknown_names"] = exported[st.UNKNOWN_NAMES].get(domain, 0)
    report["exported"] = {name: sum(per_domain.values()) for name, per_domain in exported.items()}
    location = store.put(f"{context.job_id}/report.json", json_bytes(report), "application/json")
    log.info("ingest report written", extra={"stage": "finalize", "mode": report["mode"],
                                              "report": location, **report["exported"]})
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
