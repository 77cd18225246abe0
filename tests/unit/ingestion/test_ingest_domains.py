"""Domain services on generated messy sheets: every row accounted for, reasons with row numbers, enrichment."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pandas as pd
import pytest

from services.ingestion.catalog import load_catalog
from services.ingestion.config import DomainConfig
from services.ingestion.domains.annuity_performance import AnnuityPerformance
from services.ingestion.enrichment import CompanyEnricher, Enricher, temporary_id
from services.ingestion.excel import HeaderSpec, SheetTable, read_table
from services.ingestion.models import DataSource, DomainProcessingResult, DomainService
from services.ingestion.pipeline import EnricherFactory, TabularDomainService
from services.ingestion.sample_layouts import LAYOUTS
from services.ingestion.samples import build_rows, write_workbook

DOMAINS = ["annuity_performance", "annuity_income", "trustee_performance", "annual_award"]


class Reference:
    def __init__(self, ids: dict[str, str]) -> None:
        self.ids = ids

    def lookup(self, names: list[str]) -> dict[str, str]:
        return {n: self.ids[n] for n in names if n in self.ids}

    def remember(self, ids: dict[str, str]) -> None:
        self.ids.update(ids)


class Provider:
    def __init__(self, ids: dict[str, str]) -> None:
        self.ids = ids
        self.asked: list[str] = []

    def lookup(self, name: str) -> str | None:
        self.asked.append(name)
        return self.ids.get(name)


class Budget:
    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self, wanted: int) -> int:
        granted = min(wanted, self.left)
        self.left -= granted
        return granted


def in_memory(
    reference: dict[str, str] | None = None, provider: Provider | None = None, budget: int = 0
) -> EnricherFactory:
    @contextmanager
    def factory(config: DomainConfig, source: DataSource) -> Iterator[Enricher]:
        yield CompanyEnricher(config.enrichment, Reference(reference or {}), provider, Budget(budget))

    return factory


def service_for(domain: str, **enricher: Any) -> DomainService:
    service = load_catalog().service(domain)
    assert isinstance(service, TabularDomainService)
    return dataclasses.replace(service, enricher_factory=in_memory(**enricher))


def run(
    domain: str, tmp_path: Path, count: int = 24, service: DomainService | None = None
) -> tuple[DomainProcessingResult, SheetTable]:
    layout = LAYOUTS[domain]
    rows = build_rows(layout, count, "2024-06", random.Random(3))
    path = write_workbook(tmp_path / f"{domain}.xlsx", layout, rows, "2024-06")
    service = service or service_for(domain)
    config = load_catalog().domain(domain)
    table = read_table(path, config.source.sheet, HeaderSpec.from_model(service.input_model))
    source = DataSource(domain, path, table.sheet, table.header_row, "job")
    return service.process(table.frame, source, config), table


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_row_is_a_record_a_rejection_or_skipped(domain, tmp_path):
    result, table = run(domain, tmp_path)
    assert result.input_count == len(table.frame)
    assert result.input_count == result.output_count + result.rejected_count + result.skipped_count
    assert result.skipped_count == 2, "the blank row and the totals row"
    unreadable, duplicate = sorted((r.reason for r in result.rejected), key=lambda r: r.startswith("duplicate"))
    assert unreadable.startswith(("beginning_assets", "fee_income", "net_assets", "amount"))
    assert "cannot read 'TBD'" in unreadable
    assert duplicate.startswith("duplicate primary key")
    for rejected in result.rejected:
        assert rejected.file.endswith(f"{domain}.xlsx")
        assert rejected.sheet == table.sheet
        assert rejected.row in table.frame.index
        assert rejected.values, "the raw values travel with the rejection"
    assert len(result.source_rows) == result.output_count
    assert set(result.source_rows).isdisjoint(r.row for r in result.rejected)


def test_records_are_cleansed(tmp_path):
    result, _ = run("annuity_performance", tmp_path)
    for record in cast(list[AnnuityPerformance], result.records):
        assert record.report_date == dt.date(2024, 6, 30)
        assert record.plan_code == record.plan_code.strip().upper()
        assert "  " not in record.company_name and record.company_name == record.company_name.strip()
        assert record.plan_name, "merged plan names are filled down"
        assert record.annualised_return is None or -1 <= record.annualised_return <= 1


def test_duplicate_rejection_names_the_first_row(tmp_path):
    result, table = run("trustee_performance", tmp_path)
    duplicate = next(r for r in result.rejected if r.reason.startswith("duplicate"))
    first_row = int(duplicate.reason.rsplit(" ", 1)[1])
    assert duplicate.row is not None and first_row < duplicate.row
    codes = table.frame["portfolio_code"]
    assert codes[first_row] == codes[duplicate.row]


def test_enrichment_prefers_reference_then_provider_within_budget(tmp_path):
    reference = {"Acme Manufacturing Co., Ltd.": "C100101"}
    provider = Provider({"Northwind Traders": "C100102", "Contoso Holdings": "C100103"})
    service = service_for("annuity_performance", reference=reference, provider=provider, budget=1)
    result, _ = run("annuity_performance", tmp_path, count=40, service=service)
    stats = result.enrichment
    assert stats is not None
    assert stats.from_reference == 1
    assert stats.lookups_used == 1 and len(provider.asked) == 1
    assert stats.budget_exhausted
    assert stats.temporary == stats.names - stats.from_reference - stats.from_provider
    ids = {r.company_name: r.company_id for r in cast(list[AnnuityPerformance], result.records)}
    assert ids["Acme Manufacturing Co., Ltd."] == "C100101"
    unknown = {u.name: u for u in result.unknown_names}
    assert len(unknown) == stats.temporary
    for name, entry in unknown.items():
        assert ids[name] == entry.temporary_id == temporary_id("TMP", name)
        assert entry.occurrences >= 1


def test_a_domain_service_can_run_on_a_plain_frame():
    service = load_catalog().service("annual_award")
    frame = pd.DataFrame(
        {"award_year": [None, "2023"], "award_date": ["2024-03-01", None], "award_name": ["Best", "Best"],
         "recipient_name": [" Acme ", "Acme"], "plan_code": [None, "p1"], "region": [None, None],
         "amount": ["1,000", None]},
        index=pd.RangeIndex(2, 4), dtype=object,
    )
    config = load_catalog().domain("annual_award")
    result = service.process(frame, DataSource("annual_award", Path("x.xlsx"), "Awards"), config)
    assert [(r.award_year, r.recipient_name, r.amount) for r in result.records] == [  # type: ignore[attr-defined]
        (2024, "Acme", 1000.0), (2023, "Acme", None)
    ]
