"""Reading a sheet's rows: calamine (Rust) for xlsx, xlsm, xls and ods; the csv module for csv.

`open_sheet(path, sheet, file_format)` yields a `SheetRows`: the sheet's real name, the 1-based sheet row of the
first row, and an iterator of rows (lists, empty cells as None) that Python materialises one row at a time.
Calamine loads a whole sheet at once, so a very large xlsx/xlsm sheet is read in slices (`xlsx_slices`).
Formula cells read as their cached values (what the workbook's author last saw); a formula without one reads as
empty, and `formulas.formulas_without_value` tells those apart from truly empty cells.

The format is the domain's `source.format` (data_sources.yml), or the file's extension when that is `auto`.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import python_calamine as calamine

from core.errors import PermanentError
from services.ingestion.xlsx_slices import large_sheet_part, sliced_rows

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
Cell = str | int | float | bool | dt.date | dt.datetime | dt.time | dt.timedelta | None


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


class FileFormat(StrEnum):
    AUTO = "auto"
    XLSX = "xlsx"
    XLSM = "xlsm"
    XLS = "xls"
    ODS = "ods"
    CSV = "csv"


WORKBOOK_FORMATS = frozenset({FileFormat.XLSX, FileFormat.XLSM, FileFormat.XLS, FileFormat.ODS})


def format_of(path: Path, configured: FileFormat = FileFormat.AUTO) -> FileFormat:
    """The configured format, or the one the extension names (`auto`)."""
    if configured is not FileFormat.AUTO:
        return configured
    try:
        return FileFormat(path.suffix.lower().lstrip("."))
    except ValueError:
        raise SheetError(str(path), "", f"unsupported file type {path.suffix!r}; "
                         f"expected one of {', '.join(f for f in FileFormat if f != FileFormat.AUTO)}") from None


@dataclass(frozen=True, slots=True)
class SheetRows:
    name: str
    first_row: int  # 1-based sheet row of the first row
    rows: Iterator[list[Cell]]
    file_format: FileFormat
    first_column: int = 0  # 0-based sheet column of each row's first cell


def _blank_to_none(row: list[Any]) -> list[Cell]:
    return [None if v == "" else v for v in row]


def pick_sheet(names: list[str], wanted: str | None, file: str) -> str:
    """The sheet called `wanted` (exactly, else ignoring case and punctuation); the first when None."""
    if wanted is None:
        return names[0]
    if wanted in names:
        return wanted
    by_key = {normalise_label(n): n for n in names}
    found = by_key.get(normalise_label(wanted))
    if found is None:
        raise SheetError(file, wanted, f"no sheet {wanted!r}; sheets are {names}")
    return found


@contextmanager
def open_sheet(path: Path, sheet: str | None, file_format: FileFormat = FileFormat.AUTO) -> Iterator[SheetRows]:
    """The rows of one sheet (a csv file is one sheet named after the file)."""
    file = str(path)
    kind = format_of(path, file_format)
    if not path.is_file():
        raise SheetError(file, sheet or "", "file not found")
    if kind is FileFormat.CSV:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            yield SheetRows(path.stem, 1, (_blank_to_none(r) for r in csv.reader(handle)), kind)
        return
    try:
        workbook = calamine.CalamineWorkbook.from_path(file)
    except (calamine.CalamineError, OSError, ValueError) as exc:
        raise SheetError(file, sheet or "", f"not a readable .{kind} workbook ({type(exc).__name__}: {exc})") from exc
    try:
        name = pick_sheet(list(workbook.sheet_names), sheet, file)
        large = large_sheet_part(path, name) if kind in (FileFormat.XLSX, FileFormat.XLSM) else None
        if large is not None:
            first_row, first_column, rows = sliced_rows(path, large, name)
            yield SheetRows(name, first_row, (_blank_to_none(r) for r in rows), kind, first_column)
            return
        try:
            data = workbook.get_sheet_by_name(name)
        except (calamine.CalamineError, ValueError) as exc:
            raise SheetError(file, name, f"sheet cannot be read ({type(exc).__name__}: {exc})") from exc
        start = data.start
        # iter_rows starts at the sheet's first row but at the data's first column
        yield SheetRows(name, 1, _rows(data, file, name), kind, start[1] if start else 0)
    finally:
        workbook.close()


def _rows(data: calamine.CalamineSheet, file: str, sheet: str) -> Iterator[list[Cell]]:
    try:
        for row in data.iter_rows():
            yield _blank_to_none(row)
    except (calamine.CalamineError, ValueError) as exc:
        raise SheetError(file, sheet, f"sheet cannot be read ({type(exc).__name__}: {exc})") from exc
