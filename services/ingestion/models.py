"""The domain protocol and its values: data source, rejected rows, enrichment stats, processing result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel

if TYPE_CHECKING:
    import pandas as pd

    from services.ingestion.config import DomainConfig
    from services.ingestion.warehouse import IngestRuntime


@dataclass(frozen=True, slots=True)
class DataSource:
    """Where a batch of rows came from."""

    domain: str
    path: Path
    sheet: str
    header_row: int = 1
    job_id: str = ""
    period: str | None = None
    runtime: IngestRuntime | None = None  # for domain steps that consult the warehouse (enrichment)

    @property
    def file(self) -> str:
        return str(self.path)


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A row that did not make it, with where it was and why. `row` is the 1-based sheet row (None: whole file)."""

    file: str
    sheet: str
    row: int | None
    reason: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "sheet": self.sheet, "row": self.row, "reason": self.reason,
                "values": self.values}


@dataclass(frozen=True, slots=True)
class UnknownName:
    """A company name no reference or provider could resolve; it got a temporary id."""

    name: str
    temporary_id: str
    occurrences: int
    first_row: int


@dataclass(frozen=True, slots=True)
class EnrichmentStats:
    names: int = 0
    from_reference: int = 0
    from_provider: int = 0
    temporary: int = 0
    lookups_used: int = 0
    budget_exhausted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"names": self.names, "from_reference": self.from_reference, "from_provider": self.from_provider,
                "temporary": self.temporary, "lookups_used": self.lookups_used,
                "budget_exhausted": self.budget_exhausted}


@dataclass(slots=True)
class DomainProcessingResult:
    """What a domain service made of one sheet. `input_count == output_count + rejected_count + skipped_count`;
    `source_rows[i]` is the sheet row of `records[i]`."""

    records: list[BaseModel]
    source_rows: list[int]
    input_count: int
    rejected: list[RejectedRow] = field(default_factory=list)
    skipped_count: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    enrichment: EnrichmentStats | None = None
    unknown_names: list[UnknownName] = field(default_factory=list)

    @property
    def output_count(self) -> int:
        return len(self.records)

    @property
    def rejected_count(self) -> int:
        return len(self.rejected)


@runtime_checkable
class DomainService(Protocol):
    """One per domain. `rows` has the input model's field names as columns and sheet row numbers as index."""

    @property
    def input_model(self) -> type[BaseModel]: ...

    @property
    def output_model(self) -> type[BaseModel]: ...

    def process(self, rows: pd.DataFrame, data_source: DataSource, config: DomainConfig) -> DomainProcessingResult:
        ...
