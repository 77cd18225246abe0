"""Formula cells without a cached value in an xlsx/xlsm sheet, found by scanning the sheet's XML once.

Calamine reads a formula cell as the value the workbook last calculated (`<v>`); a workbook written by a program
that never calculated it (openpyxl, most report generators) has a formula and no value, which reads as empty.
To say so instead of "required value missing", the few sheets that have missing required values are scanned for
`<c>` elements that hold an `<f>` but no `<v>`, streaming the XML out of the zip in blocks.
"""

from __future__ import annotations

import posixpath
import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

_CELL = re.compile(rb"<c\b([^>]*?)(?:/>|>(.*?)</c>)", re.DOTALL)
_REF = re.compile(rb'\br="([A-Z]{1,3})(\d+)"')
_HAS_VALUE = re.compile(rb"<v>[^<]")
_NS = {
    "m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
    "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "rel": "http://schemas.openxmlformats.org/package/2006/relationships",
}
BLOCK = 1 << 20


def column_index(letters: bytes) -> int:
    """'A' → 0, 'AB' → 27."""
    index = 0
    for letter in letters:
        index = index * 26 + (letter - 64)
    return index - 1


def _sheet_part(archive: zipfile.ZipFile, sheet: str) -> str | None:
    workbook = ElementTree.fromstring(archive.read("xl/workbook.xml"))
    rel_id = None
    for node in workbook.iterfind("m:sheets/m:sheet", _NS):
        if node.get("name") == sheet:
            rel_id = node.get(f"{{{_NS['r']}}}id")
    if rel_id is None:
        return None
    rels = ElementTree.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    for rel in rels.iterfind("rel:Relationship", _NS):
        if rel.get("Id") == rel_id:
            target = rel.get("Target", "")
            return target.lstrip("/") if target.startswith("/") else posixpath.normpath(f"xl/{target}")
    return None


def formulas_without_value(path: Path, sheet: str) -> set[tuple[int, int]]:
    """(1-based row, 0-based column) of every formula cell with no cached value; empty if none or not xlsx."""
    found: set[tuple[int, int]] = set()
    try:
        with zipfile.ZipFile(path) as archive:
            part = _sheet_part(archive, sheet)
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
