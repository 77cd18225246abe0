"""Task handlers of the `ingest` job: discover → process → references → quality → load (finalize is the job's).

Task parameters and results are small JSON; processed records travel through the staging tables in
PostgreSQL, keyed by job id and file. Nothing is written to the warehouse before the load stage, which writes
the whole run in one transaction. Handlers find the warehouse, settings and report store in
`IngestRuntime.of(context.services)`, put there by the composition root.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from core.errors import PermanentError
from core.registry import TaskContext, register_task
from services.ingestion import loader, quality, references
from services.ingestion import staging as st
from services.ingestion.catalog import DomainCatalog
from services.ingestion.dberrors import warehouse_errors
from services.ingestion.manifest import DomainInputs, check_present, check_unchanged
from services.ingestion.processing import process_file
from services.ingestion.readers import SheetError
from services.ingestion.report import json_bytes
from services.ingestion.warehouse import IngestRuntime

log = logging.getLogger(__name__)


def mode(execute: bool) -> str:
    return "loaded" if execute else "plan only"


def _staging(runtime: IngestRuntime, catalog: DomainCatalog, domain: str) -> st.StagingTable:
    return st.StagingTable.for_domain(runtime.settings.staging_schema, domain, catalog.service(domain).output_model)


@register_task("ingest.discover")
def discover(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """params: a domain's submitted inputs, sheet → the files to read (each still there), with their sheet."""
    catalog = IngestRuntime.of(context.services).catalog()
    sheet = params.pop("sheet", None)
    execute = bool(params.pop("execute", False))
    inputs = DomainInputs.model_validate(params)
    domain = catalog.domain(inputs.domain)
    check_present(inputs)
    sheet = sheet or domain.source.sheet
    log.info("ingest files discovered", extra={
        "stage": "discover", "domain": domain.name, "mode": mode(execute), "folder": inputs.folder,
        "version": inputs.version, "matched": inputs.matched, "selected": len(inputs.files),
    })
    return {
        "domain": domain.name, "folder": inputs.folder, "version": inputs.version, "matched": inputs.matched,
        "files": [{**f.model_dump(), "sheet": sheet} for f in inputs.files],
    }


@register_task("ingest.process")
def process(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """params: domain, path, sha256, sheet, period → counts; records, rejects and unknown names go to staging."""
    runtime = IngestRuntime.of(context.services)
    catalog = runtime.catalog()
    domain = catalog.domain(params["domain"])
    path = Path(params["path"])
    if params.get("sha256"):
        check_unchanged(path, params["sha256"])
    staging = _staging(runtime, catalog, domain.name)
    schema = runtime.settings.staging_schema
    try:
        with runtime.warehouse() as db, warehouse_errors(f"staging {path.name}"):
            st.ensure_base_tables(db, schema)
            st.ensure_staging_table(db, staging)
            stream, tally = process_file(
                db, schema=schema, staging=staging, domain=domain, service=catalog.service(domain.name),
                path=path, sheet=params.get("sheet"), job_id=context.job_id, period=params.get("period"),
                file_format=domain.source.file_format, runtime=runtime,
            )
    except SheetError as exc:
        return _file_error(runtime, context, catalog, domain.name, exc)
    summary: dict[str, Any] = {
        "domain": domain.name, "file": str(path), "sheet": stream.sheet, "header_row": stream.header_row,
        "format": stream.file_format.value, "input": tally.input, "output": tally.output,
        "rejected": tally.rejected, "skipped": tally.skipped, "unknown_names": len(tally.unknown),
        "formula_without_value": tally.formula_rejects, "unmapped_columns": stream.unmapped, "file_error": None,
        "rejected_sample": [_json_safe(r) for r in tally.sample], "enrichment": tally.enrichment,
        "timings": {k: round(v, 4) for k, v in tally.timings.items()},
    }
    log.info("ingest file processed", extra={
        "stage": "process", "mode": mode(bool(params.get("execute"))), "seconds": summary["timings"]["total"],
        **{k: v for k, v in summary.items() if k not in ("rejected_sample", "timings", "enrichment")},
    })
    return summary


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(value, default=str))
    return loaded


def _file_error(
    runtime: IngestRuntime, context: TaskContext, catalog: DomainCatalog, domain: str, exc: SheetError
) -> dict[str, Any]:
    """A workbook that cannot be used is reported (file, sheet, row, reason), not retried; the gate decides."""
    schema = runtime.settings.staging_schema
    staging = _staging(runtime, catalog, domain)
    with runtime.warehouse() as db, warehouse_errors(f"staging {exc.file}"):
        st.ensure_base_tables(db, schema)
        st.ensure_staging_table(db, staging)
        st.replace_file(db, schema, staging, context.job_id, domain, exc.file, exc.sheet, [], [],
                        [(exc.sheet, exc.row, exc.reason, {})], [])
    log.warning("ingest file rejected", extra={"stage": "process", "domain": domain, "file": exc.file,
                                                "sheet": exc.sheet, "reason": exc.reason})
    return {
        "domain": domain, "file": exc.file, "sheet": exc.sheet, "header_row": None, "input": 0, "output": 0,
        "rejected": 0, "skipped": 0, "unknown_names": 0, "unmapped_columns": [], "file_error": exc.reason,
        "rejected_sample": [{"file": exc.file, "sheet": exc.sheet, "row": exc.row, "reason": exc.reason}],
        "enrichment": None, "timings": {},
    }


@register_task("ingest.references")
def count_references(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """params: domain, summary → per reference table the keys the run would add (read only); summary passed on."""
    runtime = IngestRuntime.of(context.services)
    catalog = runtime.catalog()
    domain = catalog.domain(params["domain"])
    staging = _staging(runtime, catalog, domain.name)
    results = []
    with runtime.warehouse() as db, warehouse_errors(f"references {domain.name}"):
        st.ensure_staging_table(db, staging)
        for ref in domain.references:
            results.append(references.count_missing(db, ref, staging, context.job_id))
    log.info("ingest references counted", extra={
        "stage": "references", "domain": domain.name, "missing": {r["table"]: r["missing"] for r in results},
    })
    return {"domain": domain.name, "references": results, "summary": params.get("summary", {})}


@register_task("ingest.quality")
def quality_gate(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """params: domain, summary → the quality report; raises PermanentError (failing the job) when a rule fails."""
    runtime = IngestRuntime.of(context.services)
    catalog = runtime.catalog()
    domain = catalog.domain(params["domain"])
    summary = params.get("summary", {})
    staging = _staging(runtime, catalog, domain.name)
    with runtime.warehouse() as db, warehouse_errors(f"quality {domain.name}"):
        st.ensure_staging_table(db, staging)
        nulls = quality.null_counts(db, staging, context.job_id, domain.quality.required_columns)
        duplicates = (quality.duplicate_keys(db, staging, context.job_id, domain.target.primary_key)
                      if domain.quality.unique_key else [])
    report = quality.evaluate(domain, summary, nulls, duplicates)
    extra = {"stage": "quality", "domain": domain.name, "mode": mode(bool(params.get("execute"))),
             "passed": report["passed"], "failed": report["failed"], "rows": summary.get("output")}
    if not report["passed"]:
        url = runtime.artifacts.put(f"{context.job_id}/quality_{domain.name}.json", json_bytes(report),
                                    "application/json")
        log.error("ingest quality gate failed", extra={**extra, "report": url})
        details = "; ".join(c["detail"] for c in report["checks"] if not c["passed"])
        raise PermanentError(f"quality gate failed for {domain.name}: {details} (report: {url})")
    log.info("ingest quality gate passed", extra=extra)
    return {"domain": domain.name, "quality": report, "summary": summary}


@register_task("ingest.load")
def load(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """params: domains, execute, expected_rows (per domain) → the plan, or what the one load transaction did."""
    runtime = IngestRuntime.of(context.services)
    catalog = runtime.catalog()
    execute = bool(params.get("execute"))
    sources = [loader.LoadSource(catalog.domain(d), _staging(runtime, catalog, d)) for d in params["domains"]]
    expected: dict[str, int] = {}
    for source in sources:
        table = source.config.target.qualified
        expected[table] = expected.get(table, 0) + int(params.get("expected_rows", {}).get(source.domain, 0))
    with runtime.warehouse() as db, warehouse_errors("load"):
        for source in sources:
            st.ensure_staging_table(db, source.staging)
        if execute:
            result = loader.load_run(db, sources, context.job_id, expected)
        else:
            result = loader.plan_run(db, sources, context.job_id, expected)
    log.info("ingest run loaded" if execute else "ingest load planned", extra={
        "stage": "load", "domains": params["domains"], "mode": mode(execute),
        "rows": {t["table"]: t["rows"] for t in result["tables"]},
    })
    return result
