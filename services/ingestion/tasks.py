"""Task handlers of the `ingest` job: discover → process → backfill → quality → load (finalize is the job's).

Task parameters and results are small JSON; processed records travel through the staging tables in
PostgreSQL, keyed by job id and file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from core.errors import PermanentError
from core.registry import TaskContext, register_task
from services.ingestion import loader, quality, references, runtime
from services.ingestion import staging as st
from services.ingestion.catalog import DomainCatalog, load_catalog
from services.ingestion.dberrors import warehouse_errors
from services.ingestion.discovery import discover as find_files
from services.ingestion.processing import process_file
from services.ingestion.readers import SheetError
from services.ingestion.report import json_bytes

log = logging.getLogger(__name__)


def _mode(execute: bool) -> str:
    return "executed" if execute else "plan-only"


def _staging(catalog: DomainCatalog, domain: str) -> st.StagingTable:
    schema = runtime.settings().staging_schema
    return st.StagingTable.for_domain(schema, domain, catalog.service(domain).output_model)


@register_task("ingest.discover")
def discover(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """params: domain, period, max_files, sheet → the files to read, each with its sheet."""
    catalog = load_catalog()
    domain = catalog.domain(params["domain"])
    found = find_files(domain.name, domain.source, catalog.data_root(), period=params.get("period"),
                       max_files=params.get("max_files"))
    sheet = params.get("sheet") or domain.source.sheet
    log.info("ingest files discovered", extra={
        "stage": "discover", "domain": domain.name, "mode": _mode(bool(params.get("execute"))),
        "folder": str(found.folder), "version": found.version,
        "matched": found.matched, "selected": len(found.files),
    })
    return {
        "domain": domain.name, "folder": str(found.folder), "version": found.version, "matched": found.matched,
        "files": [{"path": str(p), "sheet": sheet} for p in found.files],
    }


@register_task("ingest.process")
def process(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """params: domain, path, sheet, period → counts; records, rejected rows and unknown names go to staging."""
    catalog = load_catalog()
    domain = catalog.domain(params["domain"])
    path = Path(params["path"])
    settings = runtime.settings()
    staging = _staging(catalog, domain.name)
    try:
        with runtime.connection() as conn, warehouse_errors(f"staging {path.name}"):
            st.ensure_base_tables(conn, settings.staging_schema)
            st.ensure_staging_table(conn, staging)
            stream, tally = process_file(
                conn, schema=settings.staging_schema, staging=staging, domain=domain,
                service=catalog.service(domain.name), path=path, sheet=params.get("sheet"), job_id=context.job_id,
                period=params.get("period"), file_format=domain.source.file_format,
            )
    except SheetError as exc:
        return _file_error(context, catalog, domain.name, exc)
    summary: dict[str, Any] = {
        "domain": domain.name, "file": str(path), "sheet": stream.sheet, "header_row": stream.header_row,
        "format": stream.file_format.value, "input": tally.input, "output": tally.output,
        "rejected": tally.rejected, "skipped": tally.skipped, "unknown_names": len(tally.unknown),
        "formula_without_value": tally.formula_rejects, "unmapped_columns": stream.unmapped, "file_error": None,
        "rejected_sample": [_json_safe(r) for r in tally.sample], "enrichment": tally.enrichment,
        "timings": {k: round(v, 4) for k, v in tally.timings.items()},
    }
    log.info("ingest file processed", extra={
        "stage": "process", "mode": _mode(bool(params.get("execute"))), "seconds": summary["timings"]["total"],
        **{k: v for k, v in summary.items() if k not in ("rejected_sample", "timings", "enrichment")},
    })
    return summary


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(value, default=str))
    return loaded


def _file_error(context: TaskContext, catalog: DomainCatalog, domain: str, exc: SheetError) -> dict[str, Any]:
    """A workbook that cannot be used is reported (file, sheet, row, reason), not retried; the gate decides."""
    schema = runtime.settings().staging_schema
    staging = _staging(catalog, domain)
    with runtime.connection() as conn, warehouse_errors(f"staging {exc.file}"):
        st.ensure_base_tables(conn, schema)
        st.ensure_staging_table(conn, staging)
        st.replace_file(conn, schema, staging, context.job_id, domain, exc.file, exc.sheet, [], [],
                        [(exc.sheet, exc.row, exc.reason, {})], [])
    log.warning("ingest file rejected", extra={"stage": "process", "domain": domain, "file": exc.file,
                                                "sheet": exc.sheet, "reason": exc.reason})
    return {
        "domain": domain, "file": exc.file, "sheet": exc.sheet, "header_row": None, "input": 0, "output": 0,
        "rejected": 0, "skipped": 0, "unknown_names": 0, "unmapped_columns": [], "file_error": exc.reason,
        "rejected_sample": [{"file": exc.file, "sheet": exc.sheet, "row": exc.row, "reason": exc.reason}],
        "enrichment": None, "timings": {},
    }


@register_task("ingest.backfill")
def backfill(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """params: domain, execute, summary → reference rows inserted (or missing, plan-only); summary passed on."""
    catalog = load_catalog()
    domain = catalog.domain(params["domain"])
    execute = bool(params.get("execute"))
    staging = _staging(catalog, domain.name)
    results = []
    with runtime.connection() as conn, warehouse_errors(f"backfill {domain.name}"):
        st.ensure_staging_table(conn, staging)
        for ref in domain.references:
            outcome = references.backfill(conn, ref, staging, context.job_id, execute=execute)
            results.append(outcome)
            log.info("ingest references backfilled", extra={
                "stage": "backfill", "domain": domain.name, "table": ref.qualified, "mode": _mode(execute),
                "rows": outcome.get("inserted", outcome.get("missing")),
            })
    return {"domain": domain.name, "references": results, "summary": params.get("summary", {})}


@register_task("ingest.quality")
def quality_gate(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """params: domain, summary → the quality report; raises PermanentError (failing the job) when a rule fails."""
    catalog = load_catalog()
    domain = catalog.domain(params["domain"])
    summary = params.get("summary", {})
    staging = _staging(catalog, domain.name)
    with runtime.connection() as conn, warehouse_errors(f"quality {domain.name}"):
        st.ensure_staging_table(conn, staging)
        nulls = quality.null_counts(conn, staging, context.job_id, domain.quality.required_columns)
        duplicates = (quality.duplicate_keys(conn, staging, context.job_id, domain.target.primary_key)
                      if domain.quality.unique_key else [])
    report = quality.evaluate(domain, summary, nulls, duplicates)
    extra = {"stage": "quality", "domain": domain.name, "mode": _mode(bool(params.get("execute"))),
             "passed": report["passed"], "failed": report["failed"], "rows": summary.get("output")}
    if not report["passed"]:
        path = _write_quality_report(context.job_id, domain.name, report)
        log.error("ingest quality gate failed", extra={**extra, "report": path})
        details = "; ".join(c["detail"] for c in report["checks"] if not c["passed"])
        raise PermanentError(f"quality gate failed for {domain.name}: {details} (report: {path})")
    log.info("ingest quality gate passed", extra=extra)
    return {"domain": domain.name, "quality": report, "summary": summary}


def _write_quality_report(job_id: str, domain: str, report: dict[str, Any]) -> str:
    """The failed gate's report as `<job_id>/quality_<domain>.json` in the artifact store; answers its url."""
    return runtime.artifacts().put(f"{job_id}/quality_{domain}.json", json_bytes(report), "application/json")


@register_task("ingest.load")
def load(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """params: table, domains, execute, expected_rows → plan (SQL and counts) or the executed load's counts."""
    catalog = load_catalog()
    domains = [catalog.domain(d) for d in params["domains"]]
    target = domains[0].target
    execute = bool(params.get("execute"))
    sources = [loader.LoadSource(d.name, _staging(catalog, d.name)) for d in domains]
    with runtime.connection() as conn, warehouse_errors(f"load {target.qualified}"):
        for source in sources:
            st.ensure_staging_table(conn, source.staging)
        expected = params.get("expected_rows")
        if execute:
            result = loader.execute(conn, target, sources, context.job_id, expected)
        else:
            result = loader.plan(conn, target, sources, context.job_id, expected)
    log.info("ingest table loaded" if execute else "ingest load planned", extra={
        "stage": "load", "table": target.qualified, "domains": params["domains"], "mode": _mode(execute),
        "load_mode": target.load_mode.value, "rows": result["rows"],
    })
    return {**result, "domains": params["domains"]}
