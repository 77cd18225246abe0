"""Reading one sheet as DataFrames: header-row detection, column mapping, chunks of rows for bounded memory.

Rows come from `readers.open_sheet` (calamine for workbooks, the csv module for csv). The header is the row
within the first rows that names the most input fields; title rows above it, stray whitespace and case in its
labels are tolerated. Below it, rows are cut into DataFrames of at most `chunk_rows` rows whose columns are the
input model's field names and whose index is the 1-based sheet row. Merged cells read as a value in their
top-left cell and empties elsewhere (domains fill such columns down).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import AliasChoices, BaseModel

from services.ingestion.readers import Cell, FileFormat, SheetError, normalise_label, open_sheet

HEADER_SCAN_ROWS = 30
CHUNK_ROWS = 20_000
__all__ = ["CHUNK_ROWS", "HeaderSpec", "SheetError", "SheetStream", "SheetTable", "detect_header",
           "normalise_label", "read_sheet", "read_table"]


@dataclass(frozen=True, slots=True)
class HeaderSpec:
    """Which header labels map to which input field, and which fields a sheet must have."""

    labels: dict[str, str]
    required: tuple[str, ...]
    fields: tuple[str, ...]

    @classmethod
    def from_model(cls, model: type[BaseModel]) -> HeaderSpec:
        labels: dict[str, str] = {}
        for name, info in model.model_fields.items():
            candidates: list[str] = [name]
            if info.alias:
                candidates.append(info.alias)
            alias = info.validation_alias
            if isinstance(alias, str):
                candidates.append(alias)
            elif isinstance(alias, AliasChoices):
                candidates.extend(c for c in alias.choices if isinstance(c, str))
            for candidate in candidates:
                labels.setdefault(normalise_label(candidate), name)
        required = tuple(n for n, info in model.model_fields.items() if info.is_required())
        return cls(labels, required, tuple(model.model_fields))


def detect_header(rows: Sequence[Sequence[Any]], spec: HeaderSpec, scan: int = HEADER_SCAN_ROWS) -> int:
    """0-based index of the row within the first `scan` rows that names the most input fields.

    A header must name at least half of the required fields (and at least one); -1 when no row does.
    """
    best, best_hits = -1, 0
    needed = max(1, (len(spec.required) + 1) // 2)
    for index, row in enumerate(rows[:scan]):
        named = {spec.labels.get(normalise_label(cell)) for cell in row if cell is not None}
        named.discard(None)
        required_hits = sum(1 for f in spec.required if f in named)
        hits = len(named)
        if (required_hits >= needed or (not spec.required and hits)) and hits > best_hits:
            best, best_hits = index, hits
    return best


@dataclass(frozen=True, slots=True)
class Columns:
    """Where each input field sits in the sheet's rows, found from the header row."""

    positions: dict[str, int]
    unmapped: list[str]
    header_row: int

    @classmethod
    def from_header(cls, header: Sequence[Any], spec: HeaderSpec, header_row: int, file: str, sheet: str) -> Columns:
        positions: dict[str, int] = {}
        unmapped: list[str] = []
        for position, cell in enumerate(header):
            field = spec.labels.get(normalise_label(cell))
            if field is not None and field not in positions:
                positions[field] = position
            elif cell is not None and str(cell).strip():
                unmapped.append(str(cell).strip())
        missing = [f for f in spec.required if f not in positions]
        if missing:
            raise SheetError(file, sheet, f"missing required column(s): {', '.join(missing)}", row=header_row)
        return cls(positions, unmapped, header_row)

    def frame(self, rows: list[list[Cell]], first_row: int, fields: tuple[str, ...]) -> pd.DataFrame:
        """The rows as an object DataFrame of the input fields, indexed by sheet row."""
        index = pd.RangeIndex(first_row, first_row + len(rows), name="row")
        width = max(self.positions.values(), default=0) + 1
        padded = [r if len(r) >= width else r + [None] * (width - len(r)) for r in rows]
        data: dict[str, pd.Series] = {}
        present = [f for f in fields if f in self.positions]
        if present and padded:
            picked = operator.itemgetter(*(self.positions[f] for f in present))
            columns = list(zip(*map(picked, padded), strict=True)) if len(present) > 1 else [
                tuple(map(picked, padded))]
        else:
            columns = [() for _ in present]
        by_field = dict(zip(present, columns, strict=True))
        for field in fields:
            values = by_field.get(field)
            data[field] = pd.Series(list(values) if values is not None else [None] * len(rows), index=index,
                                    dtype=object)
        return pd.DataFrame(data, index=index)


@dataclass(frozen=True, slots=True)
class SheetStream:
    """One sheet below its header, as DataFrames of at most `chunk_rows` rows."""

    sheet: str
    header_row: int
    unmapped: list[str]
    chunks: Iterator[pd.DataFrame]
    file_format: FileFormat
    positions: dict[str, int]  # input field → 0-based sheet column


@dataclass(frozen=True, slots=True)
class SheetTable:
    frame: pd.DataFrame
    sheet: str
    header_row: int
    unmapped: list[str]


@contextmanager
def read_sheet(
    path: Path, sheet: str | None, spec: HeaderSpec, file_format: FileFormat = FileFormat.AUTO,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[SheetStream]:
    """Find the header of one sheet and stream the rows below it in chunks (the file stays open meanwhile)."""
    file = str(path)
    with open_sheet(path, sheet, file_format) as source:
        head = list(itertools.islice(source.rows, HEADER_SCAN_ROWS))
        index = detect_header(head, spec)
        if index < 0:
            expected = ", ".join(spec.required or spec.fields)
            raise SheetError(file, source.name,
                             f"no header row in the first {HEADER_SCAN_ROWS} rows (expected {expected})")
        header_row = source.first_row + index
        columns = Columns.from_header(head[index], spec, header_row, file, source.name)
        rest = itertools.chain(head[index + 1 :], source.rows)

        def chunks() -> Iterator[pd.DataFrame]:
            first = header_row + 1
            while batch := list(itertools.islice(rest, chunk_rows)):
                yield columns.frame(batch, first, spec.fields)
                first += len(batch)

        positions = {f: source.first_column + p for f, p in columns.positions.items()}
        yield SheetStream(source.name, header_row, columns.unmapped, chunks(), source.file_format, positions)


def read_table(
    path: Path, sheet: str | None, spec: HeaderSpec, file_format: FileFormat = FileFormat.AUTO
) -> SheetTable:
    """The whole sheet below its header as one DataFrame (small files, tests)."""
    with read_sheet(path, sheet, spec, file_format) as stream:
        frames = list(stream.chunks)
    if not frames:
        frames = [Columns({}, [], stream.header_row).frame([], stream.header_row + 1, spec.fields)]
    frame = pd.concat(frames) if len(frames) > 1 else frames[0]
    return SheetTable(frame, stream.sheet, stream.header_row, stream.unmapped)
