"""What the generated workbooks of each domain look like: sheet, title, header labels and a row generator.

Rows come out clean (dates as `date`, numbers as floats); `samples.py` makes them messy.
"""

from __future__ import annotations

import calendar
import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PLANS = [
    ("P001", "Acme Manufacturing Pension Plan"), ("P002", "Northwind Staff Annuity"),
    ("P003", "Contoso Retirement Scheme"), ("P004", "Fabrikam Enterprise Annuity"),
    ("P005", "Globex Employees Pension"), ("P006", "Initech Occupational Annuity"),
    ("P007", "Umbrella Group Pension Plan"), ("P008", "Stark Industries Annuity Trust"),
    ("P009", "Wayne Enterprises Pension"), ("P010", "Tyrell Corporation Annuity"),
]
COMPANIES = [
    ("C100101", "Acme Manufacturing Co., Ltd."), ("C100102", "Northwind Traders"),
    ("C100103", "Contoso Holdings"), ("C100104", "Fabrikam Industries"), ("C100105", "Globex Corporation"),
    ("C100106", "Initech Software"), ("C100107", "Umbrella Logistics"), ("C100108", "Stark Industries"),
    ("C100109", "Wayne Enterprises"), ("C100110", "Tyrell Corporation"), ("C100111", "Cyberdyne Systems"),
    ("C100112", "Soylent Foods"), ("C100113", "Massive Dynamic"), ("C100114", "Hooli Technologies"),
    ("C100115", "Vandelay Imports"), ("C100116", "Pied Piper Data"),
]
TRUSTEES = ["First Pension Trustees", "Harbour Trust Company", "Summit Fiduciary Services"]
AWARDS = ["Best Enterprise Annuity", "Pension Innovation Award", "Member Service Excellence",
          "Sustainable Investment Prize", "Digital Pension Platform"]
REGIONS = ["North", "South", "East", "West", "Central"]
BUSINESS_TYPES = ["Enterprise Annuity", "Occupational Annuity", "Pension Product"]


def month_end(period: str) -> dt.date:
    year, month = (int(p) for p in period.split("-"))
    return dt.date(year, month, calendar.monthrange(year, month)[1])


RowMaker = Callable[[random.Random, int, dt.date], list[Any]]


@dataclass(frozen=True)
class Layout:
    sheet: str
    title: str
    headers: list[str]
    make_row: RowMaker
    date_column: int
    number_columns: tuple[int, ...]
    percent_columns: tuple[int, ...]
    name_columns: tuple[int, ...]
    code_columns: tuple[int, ...]
    merge_column: int | None = None


def _performance(rng: random.Random, i: int, report: dt.date) -> list[Any]:
    plan_code, plan_name = PLANS[(i // 4) % len(PLANS)]
    _, company = COMPANIES[rng.randrange(len(COMPANIES))]
    opening = round(rng.uniform(1e6, 5e8), 2)
    contributions = round(opening * rng.uniform(0.0, 0.05), 2)
    benefits = round(opening * rng.uniform(0.0, 0.03), 2)
    income = round(opening * rng.uniform(-0.02, 0.04), 2)
    closing = round(opening + contributions - benefits + income, 2)
    return [report, plan_code, plan_name, f"{plan_code}-PF{i:06d}", company, BUSINESS_TYPES[i % 3],
            opening, closing, contributions, benefits, income, round(rng.uniform(-0.05, 0.12), 4)]


def _income(rng: random.Random, i: int, report: dt.date) -> list[Any]:
    plan_code, _ = PLANS[i % len(PLANS)]
    company_id, company = COMPANIES[i % len(COMPANIES)]
    line = ["EA", "OA", "PP"][(i // 80) % 3]
    fee = round(rng.uniform(1e3, 2e6), 2)
    return [report, plan_code, company_id, company, line, fee, round(fee * 0.7, 2), round(fee * 0.1, 2)]


def _trustee(rng: random.Random, i: int, report: dt.date) -> list[Any]:
    plan_code, _ = PLANS[i % len(PLANS)]
    ret = round(rng.uniform(-0.04, 0.1), 4)
    return [report, plan_code, f"{plan_code}-PF{i:06d}", TRUSTEES[i % len(TRUSTEES)], ret,
            round(ret - rng.uniform(-0.01, 0.01), 4), round(rng.uniform(1e6, 3e8), 2)]


def _award(rng: random.Random, i: int, report: dt.date) -> list[Any]:
    plan_code, _ = PLANS[i % len(PLANS)]
    _, company = COMPANIES[i % len(COMPANIES)]
    award = AWARDS[(i // len(COMPANIES)) % len(AWARDS)]
    when = report - dt.timedelta(days=rng.randrange(0, 120))
    year = report.year + (i // (len(COMPANIES) * len(AWARDS)))
    return [year, when, award, company, plan_code, REGIONS[i % len(REGIONS)], round(rng.uniform(1e4, 5e5), 2)]


LAYOUTS: dict[str, Layout] = {
    "annuity_performance": Layout(
        sheet="Performance", title="Annuity Performance Report",
        headers=["Report Date", "Plan Code", "Plan Name", "Portfolio Code", "Client Name", "Business Type",
                 "Opening Assets", "Closing Assets", "Contributions", "Benefits Paid", "Investment Income",
                 "Annualised Return"],
        make_row=_performance, date_column=0, number_columns=(6, 7, 8, 9, 10), percent_columns=(11,),
        name_columns=(2, 4), code_columns=(1, 3), merge_column=2,
    ),
    "annuity_income": Layout(
        sheet="Income", title="Annuity Fee Income",
        headers=["Month", "Plan Code", "Company ID", "Client Name", "Product Line", "Fee Income",
                 "Management Fee", "Custody Fee"],
        make_row=_income, date_column=0, number_columns=(5, 6, 7), percent_columns=(),
        name_columns=(3,), code_columns=(1, 2, 4),
    ),
    "trustee_performance": Layout(
        sheet="Returns", title="Trustee Portfolio Returns",
        headers=["Report Date", "Plan Code", "Portfolio Code", "Trustee", "Return", "Benchmark", "Net Assets"],
        make_row=_trustee, date_column=0, number_columns=(6,), percent_columns=(4, 5),
        name_columns=(3,), code_columns=(1, 2),
    ),
    "annual_award": Layout(
        sheet="Awards", title="Annual Pension Awards",
        headers=["Year", "Award Date", "Award", "Recipient", "Plan Code", "Region", "Amount"],
        make_row=_award, date_column=1, number_columns=(6,), percent_columns=(),
        name_columns=(2, 3), code_columns=(4,),
    ),
}
