"""Cleansing: dates, numbers, percents, names, codes, blank and total rows."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest

from services.ingestion import cleansing as c


def series(*values: object) -> pd.Series:
    return pd.Series(list(values), dtype=object)


@pytest.mark.parametrize(
    "raw",
    [
        dt.datetime(2024, 6, 30), dt.date(2024, 6, 30), 45473, 45473.0, "45473", "2024-06-30", "2024/06/30",
        "2024.06.30", "30.06.2024", "30/06/2024", "2024年6月30日", " 2024-06-30 ", "20240630", 20240630,
        "30 Jun 2024", "June 30, 2024", "2024-06", "2024年6月", "2024-06-30 00:00:00",
    ],
)
def test_dates_in_every_supported_shape_read_as_the_same_day(raw):
    values, invalid = c.date(series(raw))
    assert values.iloc[0] == dt.date(2024, 6, 30)
    assert not invalid.iloc[0]


def test_unreadable_dates_are_flagged_and_blanks_are_not():
    values, invalid = c.date(series("soon", None, "  ", "-", "2024-13-45"))
    assert invalid.tolist() == [True, False, False, False, True]
    assert values.isna().all()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1234.5, 1234.5), ("1,234.50", 1234.5), (" 1 234 ", 1234.0), ("¥ 2,000", 2000.0), ("(1,000)", -1000.0),
        ("5.2%", 0.052), ("-3%", -0.03), ("\uff11\uff12\uff13", 123.0), (7, 7.0), ("+12", 12.0),
    ],
)
def test_numbers_with_separators_signs_and_percent(raw, expected):
    values, invalid = c.number(series(raw))
    assert values.iloc[0] == pytest.approx(expected)
    assert not invalid.iloc[0]


def test_wrong_type_in_a_number_column_is_invalid_and_null_tokens_are_blank():
    values, invalid = c.number(series("TBD", "n/a", "-", None, dt.datetime(2024, 1, 1)))
    assert invalid.tolist() == [True, False, False, False, True]
    assert all(math.isnan(v) for v in values)


def test_integer_rejects_fractions():
    values, invalid = c.integer(series(2024, "2,025", 2024.5))
    assert values.iloc[:2].tolist() == [2024.0, 2025.0]
    assert invalid.tolist() == [False, False, True]


def test_names_are_trimmed_normalised_and_collapsed():
    values, _ = c.name(series("  Acme   Pension\tPlan ", "\uff21\uff43\uff4d\uff45", 123.0, "", None))
    assert values.tolist() == ["Acme Pension Plan", "Acme", "123", None, None]


def test_codes_are_upper_cased_without_spaces():
    values, _ = c.code(series("p 001 ", "ea", 42.0, "  "))
    assert values.tolist() == ["P001", "EA", "42", None]


def test_blank_and_total_rows():
    frame = pd.DataFrame(
        {"a": ["x", None, "Total", " grand total: ", "Totalenergies", "合计"], "b": [1, " ", 9, 9, 2, 3]},
        dtype=object,
    )
    assert c.blank_rows(frame).tolist() == [False, True, False, False, False, False]
    assert c.total_rows(frame).tolist() == [False, False, True, True, False, True]


def test_fill_down_restores_vertically_merged_cells():
    assert c.fill_down(series("A", None, " ", "B", None)).tolist() == ["A", "A", "A", "B", "B"]


def test_per_unique_calls_once_per_distinct_value():
    calls = []

    def fn(value):
        calls.append(value)
        return value.upper()

    out = c.per_unique(series("a", "b", "a", "a"), fn)
    assert out.tolist() == ["A", "B", "A", "A"]
    assert sorted(calls) == ["a", "b"]
