"""Reading inputs with calamine and the csv module: formats, cached formula values, reports safe to open."""

from __future__ import annotations

import csv
import io
import random
import zipfile
from pathlib import Path

import openpyxl
import pytest

from services.ingestion import xlsx_slices
from services.ingestion.domains.annuity_performance import AnnuityPerformanceRow
from services.ingestion.excel import HeaderSpec, read_sheet, read_table
from services.ingestion.formulas import formulas_without_value
from services.ingestion.readers import FileFormat, SheetError, format_of
from services.ingestion.report import csv_bytes, safe_cell
from services.ingestion.sample_layouts import LAYOUTS
from services.ingestion.samples import build_rows, write_workbook


def _formula_workbook(path: Path, cached: str | None) -> Path:
    """Sheet 'Data': header Plan Code / Amount; row 2 a literal, row 3 a formula (with or without a cached value)."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Data"
    sheet.append(["Plan Code", "Amount"])
    sheet.append(["P1", 20])
    sheet.append(["P2", "=B2*2"])
    book.save(path)
    if cached is not None:
        with zipfile.ZipFile(path) as source:
            parts = {name: source.read(name) for name in source.namelist()}
        xml = parts["xl/worksheets/sheet1.xml"].decode()
        assert "<f>B2*2</f><v></v>" in xml or "<f>B2*2</f><v />" in xml or "<f>B2*2</f>" in xml
        xml = xml.replace("<f>B2*2</f><v></v>", f"<f>B2*2</f><v>{cached}</v>").replace(
            "<f>B2*2</f><v />", f"<f>B2*2</f><v>{cached}</v>")
        if f"<v>{cached}</v>" not in xml:
            xml = xml.replace("<f>B2*2</f>", f"<f>B2*2</f><v>{cached}</v>")
        parts["xl/worksheets/sheet1.xml"] = xml.encode()
        with zipfile.ZipFile(path, "w") as target:
            for name, data in parts.items():
                target.writestr(name, data)
    return path




def _pair_spec() -> HeaderSpec:
    return HeaderSpec({"plancode": "plan_code", "amount": "amount"}, ("plan_code", "amount"), ("plan_code", "amount"))


def test_a_formula_reads_as_its_cached_value(tmp_path):
    path = _formula_workbook(tmp_path / "cached.xlsx", cached="40")
    table = read_table(path, "Data", _pair_spec())
    assert table.frame.loc[3, "amount"] == 40
    assert formulas_without_value(path, "Data") == set()


def test_a_formula_without_cached_value_is_found(tmp_path):
    path = _formula_workbook(tmp_path / "uncached.xlsx", cached=None)
    table = read_table(path, "Data", _pair_spec())
    assert table.frame.loc[3, "amount"] is None
    assert formulas_without_value(path, "Data") == {(3, 1)}


def test_csv_and_xlsm_read_like_xlsx(tmp_path):
    layout = LAYOUTS["annuity_performance"]
    rows = build_rows(layout, 12, "2024-06", random.Random(3), messy=False)
    xlsx = write_workbook(tmp_path / "perf.xlsx", layout, rows, "2024-06", messy=False)
    xlsm = tmp_path / "perf.xlsm"
    xlsm.write_bytes(xlsx.read_bytes())
    with (tmp_path / "perf.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(layout.headers)
        writer.writerows(rows)
    spec = HeaderSpec.from_model(AnnuityPerformanceRow)
    frames = {}
    for name in ("perf.xlsx", "perf.xlsm", "perf.csv"):
        table = read_table(tmp_path / name, None if name.endswith("csv") else "Performance", spec)
        assert table.header_row == 1 and len(table.frame) == 12
        frames[name] = table.frame
    assert list(frames["perf.csv"]["portfolio_code"]) == list(frames["perf.xlsx"]["portfolio_code"])
    assert list(frames["perf.xlsm"]["portfolio_code"]) == list(frames["perf.xlsx"]["portfolio_code"])
    assert format_of(tmp_path / "a.ODS") is FileFormat.ODS
    with pytest.raises(SheetError, match="unsupported file type"):
        format_of(tmp_path / "a.txt")


def test_chunks_keep_sheet_row_numbers(tmp_path):
    layout = LAYOUTS["annuity_performance"]
    rows = build_rows(layout, 25, "2024-06", random.Random(4), messy=False)
    path = write_workbook(tmp_path / "perf.xlsx", layout, rows, "2024-06", messy=False)
    with read_sheet(path, "Performance", HeaderSpec.from_model(AnnuityPerformanceRow), chunk_rows=10) as stream:
        chunks = list(stream.chunks)
    assert [len(c) for c in chunks] == [10, 10, 5]
    assert [c.index[0] for c in chunks] == [2, 12, 22]
    assert chunks[2].loc[26, "portfolio_code"] == rows[24][3]


@pytest.mark.parametrize("text", ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd"])
def test_csv_cells_that_excel_would_run_are_escaped(text):
    assert safe_cell(text) == "'" + text
    written = list(csv.reader(io.StringIO(csv_bytes(["name", "n"], [(text, -5)]).decode("utf-8"), newline="")))
    assert written[1] == ["'" + text, "-5"], "numbers stay numbers"


def test_plain_text_is_left_alone():
    assert safe_cell("Acme Ltd") == "Acme Ltd"
    assert safe_cell(3.5) == 3.5


def test_rows_keep_sheet_numbers_when_the_data_starts_below_and_right(tmp_path):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Data"
    sheet["C3"], sheet["D3"] = "Plan Code", "Amount"
    sheet["C4"], sheet["D4"] = "P1", 5
    path = tmp_path / "offset.xlsx"
    book.save(path)
    table = read_table(path, "Data", _pair_spec())
    assert table.header_row == 3 and list(table.frame.index) == [4]
    assert table.frame.loc[4, "plan_code"] == "P1"


@pytest.mark.parametrize("rows_per_slice", [1, 7, 1000])
def test_a_large_sheet_read_in_slices_reads_like_a_small_one(tmp_path, monkeypatch, rows_per_slice):
    layout = LAYOUTS["annuity_performance"]
    rows = build_rows(layout, 60, "2024-06", random.Random(5))
    path = write_workbook(tmp_path / "perf.xlsx", layout, rows, "2024-06", write_only=True)
    spec = HeaderSpec.from_model(AnnuityPerformanceRow)
    whole = read_table(path, "Performance", spec)
    monkeypatch.setattr(xlsx_slices, "LARGE_SHEET_BYTES", 1)
    monkeypatch.setattr(xlsx_slices, "ROWS_PER_SLICE", rows_per_slice)
    assert xlsx_slices.large_sheet_part(path, "Performance") == "xl/worksheets/sheet1.xml"
    sliced = read_table(path, "Performance", spec)
    assert sliced.header_row == whole.header_row == 4
    assert sliced.frame.equals(whole.frame)
