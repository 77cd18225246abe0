"""Reading one worksheet into a DataFrame: sheet lookup, header-row detection and column mapping.

Workbooks are read with openpyxl in read-only mode (values only, formulas as their cached values) and turned
into a pandas DataFrame whose columns are the input model's field names and whose index is the 1-based sheet
row. Title rows above the header, stray whitespace and case in header labels are tolerated; merged cells read
as a value in their top-left cell and empties elsewhere (domains fill such columns down).
"""

from __future__ import annotations

import re
import unicodedata
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
from pydantic import AliasChoices, BaseModel

from core.errors import PermanentError
from services.ingestion.gc import gc_paused

HEADER_SCAN_ROWS = 30
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


class SheetError(PermanentError):
    """The workbook or sheet cannot be used at all: unreadable, no such sheet, no header, missing columns."""

    def __init__(self, file: str, sheet: str, reason: str, row: int | None = None) -> None:
        self.file = file
        self.sheet = sheet
        self.row = row
        self.reason = reason
        where = f"{file} [{sheet}]" + (f" row {row}" if row else "")
        super().__init__(f"{where}: {reason}")


def normalise_label(value: Any) -> str:
    """Header label key: NFKC, lower case, punctuation and whitespace removed ('Plan  Code:' → 'plancode')."""
    if value is None:
        return ""
    text = unicodedata.normalize("NFKC", str(value)).lower()
    return _NON_WORD.sub("", text)


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


@dataclass(frozen=True, slots=True)
class SheetTable:
    frame: pd.DataFrame
    sheet: str
    header_row: int
    unmapped: list[str]


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


def _pick_sheet(names: list[str], wanted: str | None, file: str) -> str:
    if wanted is None:
        return names[0]
    if wanted in names:
        return wanted
    by_key = {normalise_label(n): n for n in names}
    found = by_key.get(normalise_label(wanted))
    if found is None:
        raise SheetError(file, wanted, f"no sheet {wanted!r}; sheets are {names}")
    return found


def read_rows(path: Path, sheet: str | None) -> tuple[str, list[tuple[Any, ...]]]:
    """All rows of one sheet (trailing empty rows dropped), with the sheet's real name."""
    file = str(path)
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True, keep_links=False)
    except FileNotFoundError as exc:
        raise SheetError(file, sheet or "", "file not found") from exc
    except (zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        raise SheetError(file, sheet or "", f"not a readable .xlsx workbook ({type(exc).__name__}: {exc})") from exc
    try:
        name = _pick_sheet(list(workbook.sheetnames), sheet, file)
        worksheet = workbook[name]
        worksheet.reset_dimensions()
        with gc_paused():
            rows = list(worksheet.iter_rows(min_row=1, values_only=True))
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
        raise SheetError(file, sheet or "", f"sheet cannot be read ({type(exc).__name__}: {exc})") from exc
    finally:
        workbook.close()
    while rows and all(v is None for v in rows[-1]):
        rows.pop()
    return name, rows


def to_table(rows: list[tuple[Any, ...]], spec: HeaderSpec, file: str, sheet: str) -> SheetTable:
    """Find the header, map its labels to fields and build the frame of the rows below it."""
    header_index = detect_header(rows, spec)
    if header_index < 0:
        expected = ", ".join(spec.required or spec.fields)
        raise SheetError(file, sheet, f"no header row in the first {HEADER_SCAN_ROWS} rows (expected {expected})")
    header = rows[header_index]
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
        raise SheetError(file, sheet, f"missing required column(s): {', '.join(missing)}", row=header_index + 1)
    body = rows[header_index + 1 :]
    data: dict[str, list[Any]] = {}
    with gc_paused():
        for field in spec.fields:
            at = positions.get(field)
            if at is None:
                data[field] = [None] * len(body)
            else:
                data[field] = [row[at] if at < len(row) else None for row in body]
    index = pd.RangeIndex(header_index + 2, header_index + 2 + len(body), name="row")
    frame = pd.DataFrame({k: pd.Series(v, index=index, dtype=object) for k, v in data.items()}, index=index)
    return SheetTable(frame, sheet, header_index + 1, unmapped)


def read_table(path: Path, sheet: str | None, spec: HeaderSpec) -> SheetTable:
    name, rows = read_rows(path, sheet)
    return to_table(rows, spec, str(path), name)
