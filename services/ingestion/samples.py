"""Generator of realistic, messy workbooks for every domain: the checked-in sample set and benchmark data.

Messy means: title rows (merged) above the header, header labels with stray spaces and odd case, merged
plan-name cells, dates as Excel dates, serial numbers and text in several formats, numbers as text with
thousands separators or percent signs, names with stray whitespace, lower-case codes, a blank row, a
duplicate key, a value of the wrong type and a totals row.

    python -m services.ingestion.samples sample-set --out sample_data
    python -m services.ingestion.samples benchmark --out /tmp/bench --rows 200000 --workbooks 20
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openpyxl
from openpyxl.utils import get_column_letter

from services.ingestion.sample_layouts import LAYOUTS, Layout, month_end

EXCEL_EPOCH = dt.date(1899, 12, 30)


def _date_variant(value: dt.date, r: int) -> Any:
    variant = r % 5
    if variant == 0:
        return dt.datetime(value.year, value.month, value.day)
    if variant == 1:
        return (value - EXCEL_EPOCH).days
    if variant == 2:
        return value.strftime("%Y/%m/%d")
    if variant == 3:
        return value.strftime("%d.%m.%Y")
    return f"{value.year}年{value.month}月{value.day}日"


def messy_row(layout: Layout, row: list[Any], r: int) -> list[Any]:
    out = list(row)
    date = out[layout.date_column]
    if isinstance(date, dt.date):
        out[layout.date_column] = _date_variant(date, r)
    for c in layout.number_columns:
        if isinstance(out[c], float) and r % 3 == 0:
            out[c] = f"{out[c]:,.2f}"
    for c in layout.percent_columns:
        if isinstance(out[c], float) and r % 2 == 1:
            out[c] = f"{out[c] * 100:.2f}%"
    for c in layout.name_columns:
        if isinstance(out[c], str) and r % 4 == 0:
            out[c] = "  " + out[c].replace(" ", "   ") + " "
    for c in layout.code_columns:
        if isinstance(out[c], str) and r % 6 == 0:
            out[c] = out[c].lower() + " "
    return out


def build_rows(
    layout: Layout, count: int, period: str, rng: random.Random, *, start: int = 0, messy: bool = True
) -> list[list[Any]]:
    """`count` data rows, plus (when messy) a blank row, a duplicate, a wrong type and a totals row."""
    report = month_end(period)
    clean = [layout.make_row(rng, start + i, report) for i in range(count)]
    rows = [messy_row(layout, row, i) if messy else row for i, row in enumerate(clean)]
    if not messy or count < 4:
        return rows
    first_number = layout.number_columns[0]
    rows[count // 3][first_number] = "TBD"
    rows.append(list(rows[1]))
    rows.insert(count // 2, [None] * len(layout.headers))
    totals: list[Any] = [None] * len(layout.headers)
    totals[0] = "Total"
    for c in layout.number_columns:
        totals[c] = round(sum(r[c] for r in clean if isinstance(r[c], float)), 2)
    rows.append(totals)
    return rows


def _headers(layout: Layout, messy: bool) -> list[str]:
    headers = list(layout.headers)
    if messy:
        headers[1] = f" {headers[1]}  "
        headers[-1] = headers[-1].upper()
    return headers


def _merge_runs(sheet: Any, column: int, first_row: int, values: Sequence[Any]) -> None:
    """Merge vertical runs of equal values in one column (as report writers do with group labels)."""
    letter = get_column_letter(column + 1)
    start = 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start] or values[start] is None:
            if i - start > 1 and values[start] is not None:
                sheet.merge_cells(f"{letter}{first_row + start}:{letter}{first_row + i - 1}")
            start = i


def write_workbook(path: Path, layout: Layout, rows: list[list[Any]], period: str, *, messy: bool = True,
                   write_only: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook = openpyxl.Workbook(write_only=write_only)
    sheet = workbook.create_sheet(layout.sheet) if write_only else workbook.active
    if not write_only:
        sheet.title = layout.sheet
        workbook.create_sheet("Notes").append(["Generated sample data; figures are fictitious."])
    width = len(layout.headers)
    if messy:
        sheet.append([f"{layout.title} — Acme Pension Services"])
        sheet.append([f"Reporting period: {period}", None, None, "Currency: CNY"])
        sheet.append([])
    sheet.append(_headers(layout, messy))
    first_data_row = 5 if messy else 2
    for row in rows:
        sheet.append(row)
    if messy and not write_only:
        sheet.merge_cells(start_row=1, start_column=1, end_row=1, end_column=width)
        if layout.merge_column is not None:
            _merge_runs(sheet, layout.merge_column, first_data_row, [r[layout.merge_column] for r in rows])
    workbook.save(path)
    return path


SAMPLE_SET: tuple[tuple[str, str, str, int, int], ...] = (
    ("annuity_performance", "V1/annuity_performance_2024-05.xlsx", "2024-05", 30, 0),
    ("annuity_performance", "V2/annuity_performance_2024-06_east.xlsx", "2024-06", 40, 0),
    ("annuity_performance", "V2/annuity_performance_2024-06_west.xlsx", "2024-06", 40, 1000),
    ("annuity_income", "V1/annuity_income_2024-06.xlsx", "2024-06", 48, 0),
    ("trustee_performance", "V1/trustee_returns_2024-06.xlsx", "2024-06", 30, 0),
    ("annual_award", "annual_awards_2024.xlsx", "2024-12", 24, 0),
)


def generate_sample_set(root: Path, seed: int = 20240630) -> list[Path]:
    """The small checked-in set under `sample_data/` (a few workbooks, well under 300 KB)."""
    written = []
    for domain, relative, period, count, start in SAMPLE_SET:
        layout = LAYOUTS[domain]
        rng = random.Random(f"{seed}:{relative}")
        rows = build_rows(layout, count, period, rng, start=start)
        written.append(write_workbook(root / domain / relative, layout, rows, period))
    return written


def generate_benchmark(
    folder: Path, rows: int = 200_000, workbooks: int = 20, *, domain: str = "annuity_performance",
    period: str = "2024-06", seed: int = 7, messy: bool = True,
) -> list[Path]:
    """`rows` data rows spread over `workbooks` files at `folder/<domain>/V1/`; keys unique across files.

    Point the data root at `folder` (`COREMACHINE_DATA_ROOT` or `IngestSettings(data_root=...)`) and ingest
    `domain` with `max_files >= workbooks`.
    """
    layout = LAYOUTS[domain]
    per_file = [rows // workbooks + (1 if i < rows % workbooks else 0) for i in range(workbooks)]
    written, start = [], 0
    for i, count in enumerate(per_file):
        rng = random.Random(f"{seed}:{i}")
        data = build_rows(layout, count, period, rng, start=start, messy=messy)
        name = f"{domain}_{period}_part{i + 1:03d}.xlsx"
        written.append(write_workbook(folder / domain / "V1" / name, layout, data, period, messy=messy,
                                      write_only=True))
        start += count
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.ingestion.samples", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sample = sub.add_parser("sample-set", help="write the small sample set")
    sample.add_argument("--out", type=Path, default=Path("sample_data"))
    bench = sub.add_parser("benchmark", help="write N rows across M workbooks")
    bench.add_argument("--out", type=Path, required=True)
    bench.add_argument("--rows", type=int, default=200_000)
    bench.add_argument("--workbooks", type=int, default=20)
    bench.add_argument("--domain", default="annuity_performance", choices=sorted(LAYOUTS))
    args = parser.parse_args(argv)
    if args.command == "sample-set":
        paths = generate_sample_set(args.out)
    else:
        paths = generate_benchmark(args.out, args.rows, args.workbooks, domain=args.domain)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
