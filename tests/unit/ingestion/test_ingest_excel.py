"""Reading workbooks: header detection under title rows, messy labels, merged cells, bad files."""

from __future__ import annotations

import random

import openpyxl
import pytest
from pydantic import BaseModel

from services.ingestion.domains.annuity_income import AnnuityIncomeRow
from services.ingestion.domains.annuity_performance import AnnuityPerformanceRow
from services.ingestion.domains.fields import RawCell, header
from services.ingestion.excel import HeaderSpec, SheetError, detect_header, normalise_label, read_table
from services.ingestion.sample_layouts import LAYOUTS
from services.ingestion.samples import build_rows, write_workbook


class Pair(BaseModel):
    code: RawCell = header("Plan Code", "计划代码")
    amount: RawCell = header("Amount")
    note: RawCell = header("Note", required=False)


def test_labels_ignore_case_spaces_and_punctuation():
    assert normalise_label("  Plan  Code: ") == normalise_label("plan_code") == "plancode"
    assert normalise_label("计划代码") == "计划代码"


def test_header_found_below_title_rows():
    rows = [("Report",), (), ("Period", "2024-06"), ("plan code ", "AMOUNT", "Other"), ("P1", 3, "x")]
    assert detect_header(rows, HeaderSpec.from_model(Pair)) == 3


def test_no_header_when_required_labels_are_absent():
    assert detect_header([("a", "b"), ("c", "d")], HeaderSpec.from_model(Pair)) == -1


def test_generated_messy_workbook_reads_with_sheet_row_numbers(tmp_path):
    layout = LAYOUTS["annuity_performance"]
    rows = build_rows(layout, 12, "2024-06", random.Random(1))
    path = write_workbook(tmp_path / "perf.xlsx", layout, rows, "2024-06")
    table = read_table(path, "performance", HeaderSpec.from_model(AnnuityPerformanceRow))
    assert table.sheet == "Performance"
    assert table.header_row == 4
    assert table.frame.index[0] == 5
    assert len(table.frame) == len(rows)
    assert table.frame.loc[5, "portfolio_code"] == rows[0][3]
    below = next(i for i in range(1, len(rows)) if rows[i][2] is not None and rows[i][2] == rows[i - 1][2])
    assert table.frame["plan_name"].iloc[below] is None, "a merged cell reads as empty below its first cell"
    assert table.frame["plan_name"].iloc[below - 1] == rows[below][2]


def test_missing_sheet_names_the_sheets(tmp_path):
    path = tmp_path / "one.xlsx"
    workbook = openpyxl.Workbook()
    workbook.active.title = "Data"
    workbook.save(path)
    with pytest.raises(SheetError, match=r"no sheet 'Income'.*\['Data'\]"):
        read_table(path, "Income", HeaderSpec.from_model(AnnuityIncomeRow))


def test_missing_required_column_names_the_column_and_row(tmp_path):
    path = tmp_path / "cols.xlsx"
    workbook = openpyxl.Workbook()
    workbook.active.append(["Title"])
    workbook.active.append(["Plan Code", "Note"])
    workbook.active.append(["P1", "n"])
    workbook.save(path)
    with pytest.raises(SheetError) as info:
        read_table(path, None, HeaderSpec.from_model(Pair))
    assert info.value.row == 2
    assert "amount" in info.value.reason


def test_not_a_workbook_is_a_sheet_error(tmp_path):
    path = tmp_path / "broken.xlsx"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(SheetError, match=r"not a readable \.xlsx workbook"):
        read_table(path, None, HeaderSpec.from_model(Pair))
