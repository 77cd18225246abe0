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

from core.artifacts import ArtifactNotFound, ArtifactStore
from core.jobs import FinalizeContext
from core.models import JobStatus
from services.ingestion import staging as st
from services.ingestion.dberrors import warehouse_errors
from services.ingestion.warehouse import IngestRuntime, Warehouse, table

log = logging.getLogger(__name__)

DISCOVER, PROCESS, REFERENCES, QUALITY, LOAD = 1, 2, 3, 4, 5
REJECTS_PER_FILE = 1000
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


def run_mode(context: FinalizeContext) -> str:
    """'plan only', 'loaded' (the load transaction committed) or 'not loaded' (execute, but the run failed)."""
    if not context.parameters.get("execute"):
        return "plan only"
    loaded = context.outcome is not JobStatus.FAILED and any(
        r.get("mode") == "loaded" for r in _results(context, LOAD))
    return "loaded" if loaded else "not loaded"


def _gate(store: ArtifactStore, job_id: str, domain: str) -> dict[str, Any] | None:
    """A failed gate's report (the gate stops the run, so it is kept as an artifact, not a task result)."""
    try:
        loaded: dict[str, Any] = json.loads(store.get(f"{job_id}/quality_{domain}.json"))
    except ArtifactNotFound:
        return None
    return loaded


def build_report(context: FinalizeContext, runtime: IngestRuntime) -> dict[str, Any]:
    params = context.parameters
    catalog = runtime.catalog()
    mode = run_mode(context)
    domains: dict[str, dict[str, Any]] = {d: {"domain": d} for d in params.get("domains", [])}
    for name, entry in domains.items():
        if name in catalog.names():
            entry["table"] = catalog.domain(name).target.qualified
    for found in _results(context, DISCOVER):
        domains[found["domain"]].update(
            folder=found.get("folder"), version=found.get("version"), files_matched=found.get("matched"),
            files_selected=len(found.get("files", [])),
        )
    processed = _results(context, PROCESS)
    for name, entry in domains.items():
        entry.update(summarise(name, processed))
        entry["file_results"] = [
            {**r, "loaded": int(r.get("output", 0)) if mode == "loaded" else 0}
            for r in processed if r.get("domain") == name
        ]
    for result in _results(context, REFERENCES):
        domains[result["domain"]]["references"] = result.get("references", [])
    for result in _results(context, QUALITY):
        domains[result["domain"]]["quality"] = result.get("quality")
    for name, entry in domains.items():
        if entry.get("quality") is None and (failed := _gate(runtime.artifacts, context.job_id, name)):
            entry["quality"] = failed
    loads = _results(context, LOAD)
    return {
        "job_id": context.job_id,
        "outcome": context.outcome.value,
        "mode": mode,
        "parameters": {k: v for k, v in params.items() if k != "inputs"},
        "inputs": [{"domain": i["domain"], **f} for i in params.get("inputs", []) for f in i.get("files", [])],
        "domains": domains,
        "tables": [t for r in loads for t in r.get("tables", [])],
        "references": [t for r in loads for t in r.get("references", [])],
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


def export_staged(db: Any, store: ArtifactStore, job_id: str, schema: str) -> dict[str, dict[str, int]]:
    """`<job_id>/rejected_rows.csv` and `<job_id>/unknown_names.csv` from staging (header only when empty).

    Answers the rows written per file and domain: {"rejected_rows": {domain: n}, "unknown_names": {domain: n}}.
    """
    counts: dict[str, dict[str, int]] = {}
    for name, statement, header in (
        (st.REJECTED, "rejected_rows_of_job", ["domain", "file", "sheet", "row", "reason", "values"]),
        (st.UNKNOWN_NAMES, "unknown_names_of_job", ["domain", "name", "temporary_id", "occurrences", "first_file"]),
    ):
        rows: list[Sequence[Any]] = []
        if st.table_columns(db, schema, name):
            rows = db.conn.execute(db.q(statement, table=table(schema, name)), (job_id,)).fetchall()
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


def _rejects_by_file(db: Warehouse, schema: str, job_id: str) -> dict[str, list[dict[str, Any]]]:
    """Per file, its rejected rows (sheet, row, reason), the first REJECTS_PER_FILE of them."""
    out: dict[str, list[dict[str, Any]]] = {}
    if not st.table_columns(db, schema, st.REJECTED):
        return out
    rows = db.conn.execute(db.q("rejected_rows_per_file", table=table(schema, st.REJECTED)),
                           (job_id, REJECTS_PER_FILE)).fetchall()
    for file, sheet, row, reason in rows:
        out.setdefault(file, []).append({"sheet": sheet, "row": row, "reason": reason})
    return out


def finalize_run(context: FinalizeContext) -> dict[str, Any]:
    """Write the report files, clear staging, answer the compact report."""
    runtime = IngestRuntime.of(context.services)
    settings, store = runtime.settings, runtime.artifacts
    report = build_report(context, runtime)
    catalog = runtime.catalog()
    staging_tables = [
        st.StagingTable.for_domain(settings.staging_schema, d, catalog.service(d).output_model)
        for d in report["domains"] if d in catalog.names()
    ]
    with runtime.warehouse() as db, warehouse_errors("finalize"):
        exported = export_staged(db, store, context.job_id, settings.staging_schema)
        rejects = _rejects_by_file(db, settings.staging_schema, context.job_id)
        if not settings.keep_staging:
            st.purge_job(db, settings.staging_schema, context.job_id, staging_tables)
    for entry in report["domains"].values():
        for result in entry.get("file_results", []):
            result["rejected_rows"] = rejects.get(result.get("file", ""), [])
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
    """One row per domain for the CLI's summary table: quality pass/fail, and what was loaded (or would be)."""
    loads = {t.get("table"): t for t in result.get("tables", [])}
    rows = []
    for name, entry in result.get("domains", {}).items():
        target = entry.get("table", "")
        load = loads.get(target, {})
        quality = entry.get("quality") or {}
        rows.append({
            "domain": name, "files": entry.get("files", 0), "input": entry.get("input", 0),
            "output": entry.get("output", 0), "rejected": entry.get("rejected", 0), "skipped": entry.get("skipped", 0),
            "unknown_names": entry.get("unknown_names", 0),
            "quality": ("pass" if quality.get("passed") else "fail") if quality else "-",
            "table": target, "mode": result.get("mode"),
            "rows": load.get("rows", 0) if result.get("mode") != "not loaded" else 0,
            "replaced": load.get("deleted", load.get("would_delete", 0)),
        })
    return rows
