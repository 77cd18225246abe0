"""Reading a very large xlsx/xlsm sheet in bounded memory: calamine over slices of the sheet's rows.

Calamine loads a whole sheet before handing out its first row (a 1,000,000-row sheet takes well over 500 MB).
For a sheet whose XML is larger than `LARGE_SHEET_BYTES`, the sheet XML is streamed out of the zip and cut at
`</row>` boundaries into slices of about `ROWS_PER_SLICE` rows; each slice becomes a small in-memory workbook
(the original's workbook, styles and shared strings, the other sheets emptied) that calamine reads at native
speed. Cells keep their `r` references, so row numbers are the sheet's; rows missing between slices come out as
empty rows and every slice's rows are aligned to the first slice's first column.
"""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import cast
from xml.etree import ElementTree

import python_calamine as calamine

LARGE_SHEET_BYTES = 48 * 1024 * 1024
ROWS_PER_SLICE = 20_000
BLOCK = 1 << 20
_SHEET_DATA = re.compile(rb"<((?:\w+:)?)sheetData\b[^>]*?(/?)>")
_DIMENSION = re.compile(rb"<(?:\w+:)?dimension\b[^>]*/>")
_ROOT = re.compile(rb"<((?:\w+:)?worksheet)\b")
_NS = {
    "m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
    "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "rel": "http://schemas.openxmlformats.org/package/2006/relationships",
}
_EMPTY_SHEET = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData/></worksheet>')


def sheet_part(archive: zipfile.ZipFile, sheet: str) -> str | None:
    """The zip member holding the worksheet named `sheet` (from workbook.xml and its relationships)."""
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


def large_sheet_part(path: Path, sheet: str, threshold: int | None = None) -> str | None:
    """The sheet's zip member when its XML is larger than `threshold` (read in slices), else None."""
    try:
        with zipfile.ZipFile(path) as archive:
            part = sheet_part(archive, sheet)
            limit = LARGE_SHEET_BYTES if threshold is None else threshold
            return part if part is not None and archive.getinfo(part).file_size > limit else None
    except (zipfile.BadZipFile, KeyError, OSError, ElementTree.ParseError):
        return None


def _slice_workbook(archive: zipfile.ZipFile, part: str, sheet_xml: bytes) -> io.BytesIO:
    """The workbook with `part` replaced by `sheet_xml` and every other worksheet emptied (stored, not deflated)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as out:
        for info in archive.infolist():
            if info.filename == part:
                out.writestr(info.filename, sheet_xml)
            elif info.filename.startswith("xl/worksheets/") and info.filename.endswith(".xml"):
                out.writestr(info.filename, _EMPTY_SHEET)
            else:
                out.writestr(info.filename, archive.read(info.filename))
    buffer.seek(0)
    return buffer


def _xml_slices(archive: zipfile.ZipFile, part: str, rows_per_slice: int) -> Iterator[bytes]:
    """Complete worksheet documents, each holding the next ~rows_per_slice `<row>` elements."""
    with archive.open(part) as stream:
        start = b""
        head = None
        while head is None:
            block = stream.read(BLOCK)
            start += block
            match = _SHEET_DATA.search(start)
            if match:
                head = match
            elif not block:
                return
        ns, empty = head.group(1), head.group(2)
        if empty:
            return
        prefix = _DIMENSION.sub(b"", start[: head.end()])
        root = _ROOT.search(prefix)
        closing = b"</" + ns + b"sheetData></" + (root.group(1) if root else b"worksheet") + b">"
        row_end = b"</" + ns + b"row>"
        data_end = b"</" + ns + b"sheetData>"
        buffer = bytearray(start[head.end():])
        counted = buffer.count(row_end)
        while True:
            block = stream.read(BLOCK)
            seam = buffer[-(len(row_end) - 1):]
            buffer += block
            if data_end in buffer[-(len(block) + len(data_end)):] or not block:
                if data_end in buffer:
                    del buffer[buffer.index(data_end):]
                while buffer:
                    cut = _cut(buffer, row_end, rows_per_slice)
                    yield prefix + bytes(buffer[:cut]) + closing
                    del buffer[:cut]
                return
            counted += (seam + block).count(row_end)
            if counted >= rows_per_slice:
                cut = _cut(buffer, row_end, rows_per_slice)
                yield prefix + bytes(buffer[:cut]) + closing
                del buffer[:cut]
                counted = buffer.count(row_end)


def _cut(body: bytes | bytearray, row_end: bytes, rows: int) -> int:
    """The end of the `rows`-th row element in `body` (or its end)."""
    at = -1
    for _ in range(rows):
        found = body.find(row_end, at + 1)
        if found < 0:
            return len(body)
        at = found
    return at + len(row_end)


def sliced_rows(
    path: Path, part: str, sheet: str, rows_per_slice: int | None = None
) -> tuple[int, int, Iterator[list[object]]]:
    """(1-based first row, 0-based first column, rows) of one sheet, read slice by slice."""
    archive = zipfile.ZipFile(path)
    slices = _xml_slices(archive, part, rows_per_slice or ROWS_PER_SLICE)

    def read(xml: bytes) -> tuple[tuple[int, int] | None, Iterator[list[object]]]:
        workbook = calamine.CalamineWorkbook.from_filelike(_slice_workbook(archive, part, xml))
        data = workbook.get_sheet_by_name(sheet)
        rows = cast(list[list[object]], data.to_python(skip_empty_area=True))  # from the data's first cell
        workbook.close()
        return data.start, iter(rows)

    first_start: tuple[int, int] | None = None
    first_rows: Iterator[list[object]] = iter(())
    for xml in slices:
        first_start, first_rows = read(xml)
        if first_start is not None:
            break
    if first_start is None:
        archive.close()
        return 1, 0, iter(())
    base_row, base_col = first_start

    def chunks() -> Iterator[tuple[tuple[int, int] | None, Iterator[list[object]]]]:
        yield first_start, first_rows
        for xml in slices:
            yield read(xml)

    def rows() -> Iterator[list[object]]:
        try:
            expected = base_row
            for start, chunk in chunks():
                if start is None:
                    continue
                yield from ([] for _ in range(max(start[0] - expected, 0)))
                offset, produced = start[1] - base_col, 0
                for row in chunk:
                    produced += 1
                    yield ([None] * offset + row) if offset > 0 else (row[-offset:] if offset < 0 else row)
                expected = start[0] + produced
        finally:
            archive.close()

    return base_row + 1, base_col, rows()
