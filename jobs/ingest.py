"""ingest: one generic job for every data domain in `config/data_sources.yml`.

Stages: discover (a task per domain) → process (a task per file) → backfill references (a task per domain)
→ quality gate (a task per domain) → load (a task per target table); finalize writes the run report.
Plan-only (the default) does everything but write the warehouse; `execute=true` loads.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import Field, field_validator

from core.jobs import FinalizeContext, JobDefinition, JobParameters, PreviousResults, Stage
from core.models import JSON, FailurePolicy
from services.ingestion.catalog import load_catalog
from services.ingestion.report import finalize_run, summarise


class IngestParameters(JobParameters):
    domains: list[str] = Field(min_length=1, max_length=100, description="Domains to ingest (data_sources.yml)")
    period: str | None = Field(None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="Only files of YYYY-MM")
    max_files: int | None = Field(None, ge=1, le=10_000, description="At most this many files per domain")
    execute: bool = Field(False, description="Write the warehouse; plan-only when false")
    sheet: str | None = Field(None, min_length=1, max_length=100, description="Sheet name overriding the domain's")

    @field_validator("domains", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("domains")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        valid = load_catalog().names()
        unknown = [d for d in value if d not in valid]
        if unknown:
            names = ", ".join(repr(d) for d in unknown)
            raise ValueError(f"unknown domain {names}; valid domains: {', '.join(valid)}")
        return list(dict.fromkeys(value))


class Ingest(JobDefinition):
    job_type = "ingest"
    description = "Ingest Excel workbooks of one or more data domains into the warehouse."
    Parameters = IngestParameters
    stages = (
        Stage("discover", "ingest.discover", max_attempts=2, timeout_seconds=120),
        Stage("process", "ingest.process", max_attempts=3, timeout_seconds=1800),
        Stage("backfill", "ingest.backfill", max_attempts=3, timeout_seconds=600),
        Stage("quality", "ingest.quality", max_attempts=2, timeout_seconds=600),
        Stage("load", "ingest.load", max_attempts=3, timeout_seconds=1800),
    )
    failure_policy = FailurePolicy.FAIL_FAST

    def __init__(self) -> None:
        load_catalog()  # a broken data_sources.yml stops start-up here, naming the file and field

    def create_tasks(self, stage: Stage, params: Any, previous: PreviousResults) -> Iterable[JSON]:
        if stage.number == 1:
            return [{"domain": d, "period": params.period, "max_files": params.max_files, "sheet": params.sheet,
                     "execute": params.execute} for d in params.domains]
        if stage.number == 2:
            return [{"domain": found["domain"], "path": f["path"], "sheet": f["sheet"], "period": params.period,
                     "execute": params.execute} for found in previous.results() for f in found["files"]]
        if stage.number == 3:
            processed = previous.results()
            return [{"domain": d, "execute": params.execute, "summary": summarise(d, processed)}
                    for d in params.domains]
        if stage.number == 4:
            return [{"domain": r["domain"], "summary": r["summary"], "execute": params.execute}
                    for r in previous.results()]
        catalog = load_catalog()
        tables: dict[str, list[str]] = {}
        expected: dict[str, int] = {}
        for result in previous.results():
            table = catalog.domain(result["domain"]).target.qualified
            tables.setdefault(table, []).append(result["domain"])
            expected[table] = expected.get(table, 0) + int(result.get("summary", {}).get("output", 0))
        return [{"table": t, "domains": ds, "execute": params.execute, "expected_rows": expected[t]}
                for t, ds in tables.items()]

    def finalize(self, context: FinalizeContext) -> JSON:
        return finalize_run(context)
