"""Processing one file chunk by chunk: read, cleanse and validate, stage; memory bounded by the chunk size.

A 1,000,000-row workbook is never held as a million validated models: each chunk of rows (see
`excel.CHUNK_ROWS`) is processed by the domain service and COPYed into staging before the next one is read,
all in the one transaction that replaces what an earlier attempt staged for the file. Keys repeated across
chunks are rejected in SQL at the end (the service sees duplicates within a chunk itself). Rows missing a
required value where the workbook has a formula without a cached value are reported as such.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.ingestion import staging as st
from services.ingestion.config import DomainConfig
from services.ingestion.excel import CHUNK_ROWS, HeaderSpec, SheetStream, read_sheet
from services.ingestion.formulas import formulas_without_value
from services.ingestion.models import DataSource, DomainProcessingResult, EnrichmentStats, RejectedRow
from services.ingestion.readers import FileFormat
from services.ingestion.warehouse import IngestRuntime, Warehouse

REJECTED_SAMPLE = 5
_MISSING = re.compile(r"^(?P<column>\w+): required value missing$")
_FORMULA_FORMATS = (FileFormat.XLSX, FileFormat.XLSM)


@dataclass
class FileTally:
    """Counts of one file across its chunks."""

    input: int = 0
    output: int = 0
    rejected: int = 0
    skipped: int = 0
    formula_rejects: int = 0
    unknown: dict[str, list[Any]] = field(default_factory=dict)
    enrichment: dict[str, Any] | None = None
    sample: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def add(self, result: DomainProcessingResult, rejected: list[RejectedRow]) -> None:
        self.input += result.input_count
        self.output += result.output_count
        self.rejected += len(rejected)
        self.skipped += result.skipped_count
        for key, seconds in result.timings.items():
            self.timings[key] = self.timings.get(key, 0.0) + seconds
        for name in result.unknown_names:
            seen = self.unknown.setdefault(name.name, [name.temporary_id, 0, name.first_row])
            seen[1] += name.occurrences
            seen[2] = min(seen[2], name.first_row)
        if result.enrichment is not None:
            self._add_enrichment(result.enrichment)
        room = REJECTED_SAMPLE - len(self.sample)
        self.sample.extend(r.to_json() for r in rejected[:max(room, 0)])

    def _add_enrichment(self, stats: EnrichmentStats) -> None:
        current = self.enrichment or {}
        for key, value in stats.to_json().items():
            current[key] = (current.get(key, False) or value) if isinstance(value, bool) else (
                current.get(key, 0) + value)
        self.enrichment = current


@dataclass
class FormulaCheck:
    """Which cells of the sheet are formulas without a cached value; the sheet is scanned at most once."""

    path: Path
    sheet: str
    positions: dict[str, int]
    enabled: bool
    _cells: set[tuple[int, int]] | None = None

    def explain(self, rejected: list[RejectedRow]) -> tuple[list[RejectedRow], int]:
        if not self.enabled or not any("required value missing" in r.reason for r in rejected):
            return rejected, 0
        if self._cells is None:
            self._cells = formulas_without_value(self.path, self.sheet)
        if not self._cells:
            return rejected, 0
        out, changed = [], 0
        for row in rejected:
            parts = []
            for part in row.reason.split("; "):
                match = _MISSING.match(part)
                column = match.group("column") if match else ""
                at = self.positions.get(column)
                if at is not None and row.row is not None and (row.row, at) in self._cells:
                    part = f"{column}: formula without a cached value (recalculate and save the workbook)"
                    changed += 1
                parts.append(part)
            out.append(RejectedRow(row.file, row.sheet, row.row, "; ".join(parts), row.values))
        return out, changed


def process_file(
    db: Warehouse, *, schema: str, staging: st.StagingTable, domain: DomainConfig, service: Any,
    path: Path, sheet: str | None, job_id: str, period: str | None, file_format: FileFormat,
    runtime: IngestRuntime | None = None, chunk_rows: int = CHUNK_ROWS,
) -> tuple[SheetStream, FileTally]:
    """Read, process and stage one file in one transaction. Raises `SheetError` for an unusable file."""
    started = time.perf_counter()
    tally = FileTally()
    spec = HeaderSpec.from_model(service.input_model)
    with read_sheet(path, sheet, spec, file_format, chunk_rows) as stream, st.stage_file(
        db, schema, staging, job_id, domain.name, str(path)
    ) as writer:
        source = DataSource(domain.name, path, stream.sheet, stream.header_row, job_id, period, runtime)
        formulas = FormulaCheck(path, stream.sheet, stream.positions, stream.file_format in _FORMULA_FORMATS)
        chunks, timings = 0, tally.timings
        while True:
            began = time.perf_counter()
            chunk = next(stream.chunks, None)
            timings["read"] = timings.get("read", 0.0) + time.perf_counter() - began
            if chunk is None:
                break
            chunks += 1
            result = service.process(chunk, source, domain)
            rejected, explained = formulas.explain(result.rejected)
            tally.formula_rejects += explained
            began = time.perf_counter()
            writer.records(stream.sheet, result.records, result.source_rows)
            writer.rejected((r.sheet, r.row, r.reason, r.values) for r in rejected)
            timings["stage"] = timings.get("stage", 0.0) + time.perf_counter() - began
            tally.add(result, rejected)
        writer.unknown((name, *values) for name, values in tally.unknown.items())
        if chunks > 1:
            moved = writer.reject_duplicates(domain.target.primary_key)
            tally.output -= moved
            tally.rejected += moved
    tally.timings["total"] = time.perf_counter() - started
    return stream, tally
