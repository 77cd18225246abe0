"""The generic domain service: drop blanks and totals, cleanse per column, enrich, de-duplicate, validate in bulk.

A domain module declares its input and output models, a cleaner per column and optionally a vectorised
`derive` step, and gets `process(rows, data_source, config)` from `TabularDomainService`. Every input row ends
up in exactly one of: records, rejected (with row number and reason), skipped (blank or total rows).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pandas as pd
from pydantic import BaseModel, TypeAdapter, ValidationError

from services.ingestion import cleansing
from services.ingestion.config import DomainConfig
from services.ingestion.enrichment import Enricher, EnrichmentOutcome, open_company_enricher
from services.ingestion.models import DataSource, DomainProcessingResult, EnrichmentStats, RejectedRow, UnknownName

EnricherFactory = Callable[[DomainConfig, DataSource], AbstractContextManager[Enricher]]
Derive = Callable[[pd.DataFrame, DataSource], pd.DataFrame]
MAX_REASONS_PER_ROW = 3


@dataclass(frozen=True)
class TabularDomainService:
    """A `DomainService` for one-row-per-record sheets, configured by models and per-column cleaners."""

    input_model: type[BaseModel]
    output_model: type[BaseModel]
    cleaners: Mapping[str, cleansing.Cleaner]
    fill_down: tuple[str, ...] = ()
    derive: Derive | None = None
    enricher_factory: EnricherFactory = open_company_enricher
    _adapter: TypeAdapter[list[BaseModel]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_adapter", TypeAdapter(list[self.output_model]))  # type: ignore[name-defined]

    def process(self, rows: pd.DataFrame, data_source: DataSource, config: DomainConfig) -> DomainProcessingResult:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        raw = rows
        keep = ~(cleansing.blank_rows(raw) | cleansing.total_rows(raw))
        frame = raw[keep].copy()
        skipped = int((~keep).sum())
        for column in self.fill_down:
            frame[column] = cleansing.fill_down(frame[column])

        reasons: dict[int, list[str]] = {}
        unreadable: dict[str, pd.Series] = {}
        cleaned = pd.DataFrame(index=frame.index)
        for column, cleaner in self.cleaners.items():
            values, invalid = cleaner(frame[column])
            cleaned[column] = values
            unreadable[column] = invalid
            _note(reasons, invalid, partial(_unreadable, frame, column))
        if self.derive is not None:
            cleaned = self.derive(cleaned, data_source)
        for column in config.quality.required_columns:
            missing = cleaned[column].isna() if column in cleaned else pd.Series(True, index=cleaned.index)
            if column in unreadable:
                missing &= ~unreadable[column]
            _note(reasons, missing, partial(_missing, column))
        timings["cleanse"] = time.perf_counter() - started

        enrichment: EnrichmentStats | None = None
        unknown: list[UnknownName] = []
        if config.enrichment.enabled:
            began = time.perf_counter()
            outcome = self._enrich(cleaned, reasons, data_source, config)
            enrichment, unknown = outcome.stats, outcome.unknown
            timings["enrich"] = time.perf_counter() - began

        _note_duplicates(reasons, cleaned, config.target.primary_key)
        began = time.perf_counter()
        records, record_rows = self._validate(cleaned, reasons)
        timings["validate"] = time.perf_counter() - began

        rejected = [
            RejectedRow(data_source.file, data_source.sheet, int(row), "; ".join(why[:MAX_REASONS_PER_ROW]),
                        _raw_values(raw, row))
            for row, why in sorted(reasons.items())
        ]
        timings["process"] = time.perf_counter() - started
        return DomainProcessingResult(
            records=records, source_rows=record_rows, input_count=len(raw), rejected=rejected,
            skipped_count=skipped, timings=timings, enrichment=enrichment, unknown_names=unknown,
        )

    def _enrich(
        self, cleaned: pd.DataFrame, reasons: dict[int, list[str]], data_source: DataSource, config: DomainConfig
    ) -> EnrichmentOutcome:
        settings = config.enrichment
        names = cleaned[settings.name_column]
        valid = names.notna() & ~cleaned.index.isin(list(reasons))
        missing_id = cleaned[settings.id_column].isna() if settings.id_column in cleaned else valid
        wanted = names[valid & missing_id]
        with self.enricher_factory(config, data_source) as enricher:
            outcome = enricher.resolve(wanted)
        resolved = wanted.map(outcome.ids)
        if settings.id_column not in cleaned:
            cleaned[settings.id_column] = None
        cleaned.loc[resolved.index, settings.id_column] = resolved
        return outcome

    def _validate(
        self, cleaned: pd.DataFrame, reasons: dict[int, list[str]]
    ) -> tuple[list[BaseModel], list[int]]:
        columns = list(self.output_model.model_fields)
        candidates = cleaned[~cleaned.index.isin(list(reasons))]
        present = [c for c in columns if c in candidates]
        lists = [_python_values(candidates[c]) for c in present]
        dicts = [dict(zip(present, values, strict=True)) for values in zip(*lists, strict=True)]
        row_numbers = [int(r) for r in candidates.index]
        try:
            return self._adapter.validate_python(dicts), row_numbers
        except ValidationError as exc:
            bad = _validation_reasons(exc)
        for position, why in bad.items():
            reasons.setdefault(row_numbers[position], []).extend(why)
        keep = [i for i in range(len(dicts)) if i not in bad]
        records = self._adapter.validate_python([dicts[i] for i in keep])
        return records, [row_numbers[i] for i in keep]


def _python_values(s: pd.Series) -> list[Any]:
    """Column values as Python objects with every missing value as None."""
    values = s.astype(object).tolist()
    missing = s.isna().to_numpy()
    if missing.any():
        for i in missing.nonzero()[0]:
            values[i] = None
    return values


def _unreadable(frame: pd.DataFrame, column: str, row: int) -> str:
    return f"{column}: cannot read {_show(frame.at[row, column])}"


def _missing(column: str, _row: int) -> str:
    return f"{column}: required value missing"


def _note(reasons: dict[int, list[str]], mask: pd.Series, reason: Callable[[int], str]) -> None:
    for row in mask.index[mask.to_numpy(dtype=bool)]:
        reasons.setdefault(int(row), []).append(reason(row))


def _note_duplicates(reasons: dict[int, list[str]], cleaned: pd.DataFrame, key: list[str]) -> None:
    """Later rows repeating an earlier row's primary key are rejected, naming the first row."""
    if not all(k in cleaned for k in key):
        return
    candidates = cleaned[~cleaned.index.isin(list(reasons))][key]
    duplicated = candidates.duplicated(keep="first")
    if not duplicated.any():
        return
    first = candidates.reset_index().groupby(key, dropna=False)["row"].first()
    for row in candidates.index[duplicated.to_numpy()]:
        values = tuple(candidates.loc[row, k] for k in key)
        first_row = first.loc[values if len(key) > 1 else values[0]]
        shown = ", ".join(f"{k}={_plain(v)}" for k, v in zip(key, values, strict=True))
        reasons.setdefault(int(row), []).append(f"duplicate primary key ({shown}), first at row {first_row}")


def _validation_reasons(exc: ValidationError) -> dict[int, list[str]]:
    bad: dict[int, list[str]] = {}
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        if not loc or not isinstance(loc[0], int):
            continue
        where = ".".join(str(p) for p in loc[1:]) or "record"
        bad.setdefault(loc[0], []).append(f"{where}: {error['msg']}")
    return bad


def _raw_values(raw: pd.DataFrame, row: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column, value in raw.loc[row].items():
        if value is None or (isinstance(value, float) and value != value):
            continue
        out[str(column)] = value if isinstance(value, str | int | float | bool) else str(value)
    return out


def _plain(value: Any) -> str:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
