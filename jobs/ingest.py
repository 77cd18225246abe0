"""ingest: one generic job for every data domain in `config/data_sources.yml`.

Stages: discover (a task per domain: the submitted input files are still there) → process (a task per file:
check its hash, read, cleanse, stage) → references (a task per domain: what the run would add, read only) →
quality gate (a task per domain) → load (one task: the whole run in one transaction, or its plan); finalize
writes the run report. Plan-only (the default) writes nothing to the warehouse; `execute=true` loads.

A run's identity includes its inputs: on submit, `prepare` finds each domain's files and adds their paths,
sizes and SHA-256 hashes to the parameters, so the same parameters over the same files are the same job and a
changed, added or removed file is a new one. Validation never reads a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import Field, field_validator, model_validator

from core.errors import PermanentError
from core.jobs import FinalizeContext, JobDefinition, JobParameters, PreviousResults, Stage
from core.models import JSON, FailurePolicy
from core.services import Services
from services.ingestion.manifest import DomainInputs, build_manifest
from services.ingestion.report import finalize_run, summarise


class IngestParameters(JobParameters):
    domains: list[str] = Field(min_length=1, max_length=100, description="Domains to ingest (data_sources.yml)")
    period: str | None = Field(None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="Only files of YYYY-MM")
    max_files: int | None = Field(None, ge=1, le=10_000, description="At most this many files per domain")
    execute: bool = Field(False, description="Write the warehouse; plan-only when false")
    sheet: str | None = Field(None, min_length=1, max_length=100, description="Sheet name overriding the domain's")
    inputs: list[DomainInputs] = Field(
        default_factory=list,
        description="Per domain, the input files with sizes and SHA-256 hashes; added on submit when not given",
    )

    @field_validator("domains", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("domains")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _inputs_match_domains(self) -> IngestParameters:
        named = [i.domain for i in self.inputs]
        if named and sorted(named) != sorted(self.domains):
            raise ValueError(f"inputs are for {named}; they must be one entry per domain of {self.domains}")
        return self


class Ingest(JobDefinition):
    job_type = "ingest"
    description = "Ingest Excel workbooks (and csv) of one or more data domains into the warehouse."
    Parameters = IngestParameters
    stages = (
        Stage("discover", "ingest.discover", max_attempts=2, timeout_seconds=120),
        Stage("process", "ingest.process", max_attempts=3, timeout_seconds=1800),
        Stage("references", "ingest.references", max_attempts=3, timeout_seconds=600),
        Stage("quality", "ingest.quality", max_attempts=2, timeout_seconds=600),
        Stage("load", "ingest.load", max_attempts=3, timeout_seconds=1800),
    )
    failure_policy = FailurePolicy.FAIL_FAST

    def prepare(self, parameters: Mapping[str, Any], services: Services) -> Mapping[str, Any]:
        """Add the input manifest (unless given): every domain's files with sizes and hashes."""
        if parameters.get("inputs"):
            return parameters
        return {**parameters, "inputs": build_manifest(parameters, services)}

    def create_tasks(self, stage: Stage, params: Any, previous: PreviousResults) -> Iterable[JSON]:
        if stage.number == 1:
            if not params.inputs:
                raise PermanentError("ingest has no input manifest: submit it through CoreMachine.submit, "
                                     "which adds every domain's files with their hashes")
            return [{**i.model_dump(mode="json"), "sheet": params.sheet, "execute": params.execute}
                    for i in params.inputs]
        if stage.number == 2:
            return [{"domain": found["domain"], "path": f["path"], "sheet": f["sheet"], "sha256": f["sha256"],
                     "period": params.period, "execute": params.execute}
                    for found in previous.results() for f in found["files"]]
        if stage.number == 3:
            processed = previous.results()
            return [{"domain": d, "execute": params.execute, "summary": summarise(d, processed)}
                    for d in params.domains]
        if stage.number == 4:
            return [{"domain": r["domain"], "summary": r["summary"], "execute": params.execute}
                    for r in previous.results()]
        expected = {r["domain"]: int(r.get("summary", {}).get("output", 0)) for r in previous.results()}
        return [{"domains": params.domains, "execute": params.execute, "expected_rows": expected}]

    def finalize(self, context: FinalizeContext) -> JSON:
        return finalize_run(context)
