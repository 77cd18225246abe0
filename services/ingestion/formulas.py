"""Formula cells without a cached value in an xlsx/xlsm sheet, found by scanning the sheet's XML once.

Calamine reads a formula cell as the value the workbook last calculated (`<v>`); a workbook written by a program
that never calculated it (openpyxl, most report generators) has a formula and no value, which reads as empty.
To say so instead of "required value missing", the few sheets that have missing required values are scanned for
`<c>` elements that hold an `<f>` but no `<v>`, streaming the XML out of the zip in blocks.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

from services.ingestion.xlsx_slices import sheet_part

_CELL = re.compile(rb"<c\b([^>]*?)(?:/>|>(.*?)</c>)", re.DOTALL)
_REF = re.compile(rb'\br="([A-Z]{1,3})(\d+)"')
_HAS_VALUE = re.compile(rb"<v>[^<]")
BLOCK = 1 << 20


def column_index(letters: bytes) -> int:
    """'A' → 0, 'AB' → 27."""
    index = 0
    for letter in letters:
        index = index * 26 + (letter - 64)
    return index - 1


def formulas_without_value(path: Path, sheet: str) -> set[tuple[int, int]]:
    """(1-based row, 0-based column) of every formula cell with no cached value; empty if none or not xlsx."""
    found: set[tuple[int, int]] = set()
    try:
        with zipfile.ZipFile(path) as archive:
            part = sheet_part(archive, sheet)
            if part is None:
                return found
            with archive.open(part) as stream:
                tail = b""
                while block := stream.read(BLOCK):
                    data = tail + block
                    end = data.rfind(b"</c>")
                    cut = end + 4 if end >= 0 else 0
                    _scan(data[:cut], found)
                    tail = data[cut:]
                _scan(tail, found)
    except (zipfile.BadZipFile, KeyError, OSError, ElementTree.ParseError):
        return found
    return found


def _scan(data: bytes, found: set[tuple[int, int]]) -> None:
    if b"<f" not in data:
        return
    for match in _CELL.finditer(data):
        body = match.group(2)
        if not body or b"<f" not in body or _HAS_VALUE.search(body):
            continue
        ref = _REF.search(match.group(1))
        if ref:
            found.add((int(ref.group(2)), column_index(ref.group(1))))
