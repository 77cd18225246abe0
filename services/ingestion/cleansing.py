"""Vectorised cleansing of raw sheet columns: blanks, totals, text, names, codes, numbers, percents, dates.

Every cleaner takes a raw object Series (values as the reader returned them: str, int, float, date, datetime, None)
and returns `Cleaned(values, invalid)`: the typed values (missing as NaN/None/NaT) and a mask of cells that
held something but could not be parsed. Work is done per column with pandas, not per row in Python; only
cells of an unusual type (numbers in a text column, say) go through a per-value conversion.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import numpy as np
import pandas as pd

NULL_TOKENS = frozenset({"", "-", "--", "—", "–", "n/a", "na", "#n/a", "null", "none", "nan"})  # noqa: RUF001
TOTAL_PATTERN = r"(?i)\s*(grand\s*total|sub-?\s*total|totals?|sum|合计|总计|小计)\s*[:：]?\s*"  # noqa: RUF001
EXCEL_EPOCH = pd.Timestamp("1899-12-30")
MAX_EXCEL_SERIAL = 2958465
DAY_FORMATS = (
    "%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d", "%d.%m.%Y", "%d/%m/%Y", "%d-%m-%Y", "%Y年%m月%d日",
    "%d %b %Y", "%d %B %Y", "%b %d, %Y", "%B %d, %Y", "%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M:%S",
)
MONTH_FORMATS = ("%Y-%m", "%Y/%m", "%Y%m", "%Y年%m月", "%b %Y", "%B %Y")
_NUMBER_NOISE = str.maketrans("", "", " \t\u00a0,，_'¥$€£%()+")  # noqa: RUF001
_NUMBER_TYPES = [int, float, np.int64, np.float64]
_TOTAL = re.compile(TOTAL_PATTERN)


class Cleaned(NamedTuple):
    values: pd.Series
    invalid: pd.Series


Cleaner = Callable[[pd.Series], Cleaned]
_T = TypeVar("_T")


def per_unique(strings: pd.Series, fn: Callable[[Any], _T]) -> pd.Series:
    """`fn` applied once per distinct value (factorised), spread back over the Series.

    Sheet columns repeat a few values (names, codes, dates) many times; this keeps the Python work
    proportional to the distinct values, not the rows.
    """
    codes, uniques = pd.factorize(strings, use_na_sentinel=True)
    mapped = np.empty(len(uniques) + 1, dtype=object)
    mapped[:-1] = [fn(u) for u in uniques]
    mapped[-1] = None
    return pd.Series(mapped[codes], index=strings.index)


class _Kinds(NamedTuple):
    strings: pd.Series
    numbers: pd.Series
    others: pd.Series
    blank: pd.Series


def _is_null_token(value: str) -> bool:
    return value.strip().lower() in NULL_TOKENS


def _kinds(s: pd.Series) -> _Kinds:
    """Split a raw column by cell type (text, number, other) and mark blanks, looking at each type once."""
    types = s.map(type)
    is_str = types.isin([str]).to_numpy()
    is_number = types.isin(_NUMBER_TYPES).to_numpy()
    blank_mask = s.isna().to_numpy(copy=True)
    strings = s[is_str]
    if len(strings):
        null_tokens = per_unique(strings, _is_null_token).to_numpy(dtype=bool)
        blank_mask[is_str] = null_tokens
        strings = strings[~null_tokens]
    others = s[~is_str & ~is_number & ~blank_mask]
    return _Kinds(strings, s[is_number], others, pd.Series(blank_mask, index=s.index))


def blank(s: pd.Series) -> pd.Series:
    """Missing, empty, whitespace or a null token such as '-', 'N/A'."""
    return _kinds(s).blank


def blank_rows(frame: pd.DataFrame) -> pd.Series:
    """Rows whose every cell is blank (each column is only checked on rows still blank so far)."""
    mask = pd.Series(True, index=frame.index, dtype=bool)
    for column in frame.columns:
        candidates = mask[mask]
        if candidates.empty:
            break
        mask.loc[candidates.index] = blank(frame.loc[candidates.index, column]).to_numpy()
    return mask


def _is_total(value: str) -> bool:
    return len(value) < 40 and _TOTAL.fullmatch(value) is not None


def total_rows(frame: pd.DataFrame) -> pd.Series:
    """Rows with a cell that reads 'Total', 'Subtotal', 'Grand total', '合计' and the like."""
    mask = pd.Series(False, index=frame.index, dtype=bool)
    for column in frame.columns:
        s = frame[column]
        strings = s[s.map(type).isin([str]).to_numpy()]
        if len(strings):
            hits = per_unique(strings, _is_total).to_numpy(dtype=bool)
            mask.loc[strings.index[hits]] = True
    return mask


def fill_down(s: pd.Series) -> pd.Series:
    """Blank cells take the value above (vertically merged cells)."""
    return s.where(~blank(s)).ffill()


def _scalar_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time():
        return value.date().isoformat()
    return str(value)


def _clean_text(value: str) -> str:
    return unicodedata.normalize("NFKC", value).strip()


def _clean_name(value: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", value).split())


def _clean_code(value: str) -> str:
    return "".join(unicodedata.normalize("NFKC", value).split()).upper()


def _textual(s: pd.Series, fn: Callable[[str], str]) -> Cleaned:
    kinds = _kinds(s)
    out = pd.Series(None, index=s.index, dtype=object)
    if len(kinds.strings):
        out.loc[kinds.strings.index] = per_unique(kinds.strings, fn)
    rest = pd.concat([kinds.numbers, kinds.others])
    if len(rest):
        out.loc[rest.index] = per_unique(rest.map(_scalar_text), fn)
    empty = out.isna() | (out == "")
    return Cleaned(out.where(~empty, None), pd.Series(False, index=s.index, dtype=bool))


def text(s: pd.Series) -> Cleaned:
    """Trimmed, NFKC-normalised text; blanks become None."""
    return _textual(s, _clean_text)


def name(s: pd.Series) -> Cleaned:
    """Text with inner whitespace collapsed to one space ('  Acme   Pension ' → 'Acme Pension')."""
    return _textual(s, _clean_name)


def code(s: pd.Series) -> Cleaned:
    """Upper case, no whitespace ('p 001 ' → 'P001')."""
    return _textual(s, _clean_code)


def parse_number(value: str) -> float:
    """'1,234.50' → 1234.5, '5.2%' → 0.052, '(1,000)' → -1000.0, '¥ 2,000' → 2000.0; NaN when unreadable."""
    text = unicodedata.normalize("NFKC", value).strip()
    negative = text.startswith("(") and text.endswith(")")
    percent = text.endswith("%")
    digits = text.translate(_NUMBER_NOISE)
    try:
        number = float(digits)
    except ValueError:
        return math.nan
    if negative:
        number = -number
    return number / 100.0 if percent else number


def number(s: pd.Series) -> Cleaned:
    """Floats from numbers or text with thousands separators, currency signs, '%' (÷100) and (negatives)."""
    kinds = _kinds(s)
    out = pd.Series(np.nan, index=s.index, dtype="float64")
    if len(kinds.numbers):
        out.loc[kinds.numbers.index] = kinds.numbers.astype("float64")
    if len(kinds.strings):
        out.loc[kinds.strings.index] = per_unique(kinds.strings, parse_number).astype("float64")
    invalid = ~kinds.blank & out.isna()
    return Cleaned(out, invalid)


def integer(s: pd.Series) -> Cleaned:
    values, invalid = number(s)
    fractional = values.notna() & (values % 1 != 0)
    return Cleaned(values.where(~fractional), invalid | fractional)


def _serials(numbers: pd.Series) -> pd.Series:
    """Excel serial day numbers (and 8-digit yyyymmdd numbers) to timestamps; others NaT."""
    values = numbers.astype("float64")
    out = pd.Series(pd.NaT, index=numbers.index, dtype="datetime64[ns]")
    ymd = values.between(19000101, 29991231) & (values % 1 == 0)
    if ymd.any():
        as_text = values[ymd].astype("int64").astype(str)
        out.loc[as_text.index] = pd.to_datetime(as_text, format="%Y%m%d", errors="coerce")
    serial = values.between(1, MAX_EXCEL_SERIAL) & ~ymd
    if serial.any():
        days = np.floor(values[serial].to_numpy())
        out.loc[serial.index[serial.to_numpy()]] = EXCEL_EPOCH + pd.to_timedelta(days, unit="D")
    return out


def _parse_date_strings(strings: pd.Series) -> pd.Series:
    cleaned = strings.str.normalize("NFKC").str.strip()
    out = pd.Series(pd.NaT, index=strings.index, dtype="datetime64[ns]")
    digits = cleaned[cleaned.str.fullmatch(r"\d{5}(\.0+)?")]
    if len(digits):
        out.loc[digits.index] = _serials(pd.to_numeric(digits))
    remaining = cleaned[out.isna()]
    for fmt in DAY_FORMATS:
        if not len(remaining):
            break
        parsed = pd.to_datetime(remaining, format=fmt, errors="coerce")
        hit = parsed.notna()
        out.loc[parsed.index[hit.to_numpy()]] = parsed[hit]
        remaining = remaining[~hit]
    for fmt in MONTH_FORMATS:
        if not len(remaining):
            break
        parsed = pd.to_datetime(remaining, format=fmt, errors="coerce")
        hit = parsed.notna()
        out.loc[parsed.index[hit.to_numpy()]] = parsed[hit] + pd.offsets.MonthEnd(0)
        remaining = remaining[~hit]
    return out


def date(s: pd.Series) -> Cleaned:
    """Dates from Excel dates, Excel serial numbers, yyyymmdd numbers and text in several formats.

    Text such as '30/06/2024' is read day first; month-only text ('2024-06', '2024年6月') means month end.
    Values are `datetime.date` objects (None when missing).
    """
    kinds = _kinds(s)
    stamps = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns]")
    moments = kinds.others[kinds.others.map(type).isin([dt.datetime, pd.Timestamp, dt.date]).to_numpy()]
    if len(moments):
        stamps.loc[moments.index] = pd.to_datetime(moments.map(_to_datetime))
    if len(kinds.numbers):
        stamps.loc[kinds.numbers.index] = _serials(kinds.numbers)
    if len(kinds.strings):
        codes, uniques = pd.factorize(kinds.strings)
        parsed = _parse_date_strings(pd.Series(uniques, dtype=object)).to_numpy()
        stamps.loc[kinds.strings.index] = parsed[codes]
    invalid = ~kinds.blank & stamps.isna()
    values = pd.Series(None, index=s.index, dtype=object)
    present = stamps[stamps.notna()]
    if len(present):
        codes, uniques = pd.factorize(present)
        values.loc[present.index] = pd.DatetimeIndex(uniques).date[codes]
    return Cleaned(values, invalid)


def _to_datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime(value.year, value.month, value.day)


def normalise_text(value: str) -> str:
    """The scalar twin of `name` (for names typed into configuration or tests)."""
    return " ".join(unicodedata.normalize("NFKC", value).split())
