"""data_sources.yml: loading, validation errors naming file and field, unknown domains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from core.errors import InvalidParameters
from jobs.ingest import Ingest
from services.ingestion.catalog import UnknownDomain, load_catalog
from services.ingestion.config import DATA_SOURCES_ENV, DataSourcesError, LoadMode, data_sources_path
from tests.unit.ingestion.services import ingest_services

DOMAINS = ["annual_award", "annuity_income", "annuity_performance", "trustee_performance"]


def real_config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(data_sources_path().read_text(encoding="utf-8"))
    return loaded


def write(tmp_path: Path, data: dict[str, Any] | str) -> Path:
    path = tmp_path / "data_sources.yml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def test_checked_in_config_defines_the_four_domains():
    catalog = load_catalog()
    assert catalog.names() == DOMAINS
    income = catalog.domain("annuity_income")
    assert income.target.qualified == "warehouse.annuity_income"
    assert catalog.domain("annual_award").target.load_mode is LoadMode.APPEND
    assert catalog.domain("annuity_performance").enrichment.enabled


def test_unknown_domain_lists_the_valid_ones():
    with pytest.raises(UnknownDomain) as info:
        load_catalog().domain("pensions")
    assert info.value.valid == DOMAINS
    assert "valid domains: annual_award, annuity_income" in str(info.value)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "domains:\n  a: [unclosed\n")
    with pytest.raises(DataSourcesError) as info:
        load_catalog(path)
    assert str(path) in str(info.value)
    assert "line" in str(info.value)


def test_bad_field_names_file_and_field(tmp_path):
    data = real_config()
    data["domains"]["annuity_income"]["target"]["load_mode"] = "upsert"
    path = write(tmp_path, data)
    with pytest.raises(DataSourcesError, match=r"data_sources\.yml: domains\.annuity_income\.target\.load_mode"):
        load_catalog(path)


def test_unknown_key_is_rejected(tmp_path):
    data = real_config()
    data["domains"]["annual_award"]["source"]["pattern"] = "*.xlsx"
    with pytest.raises(DataSourcesError, match=r"domains\.annual_award\.source\.pattern"):
        load_catalog(write(tmp_path, data))


def test_primary_key_must_be_a_field_of_the_output_model(tmp_path):
    data = real_config()
    data["domains"]["annuity_income"]["target"]["primary_key"] = ["report_date", "no_such_column"]
    with pytest.raises(DataSourcesError, match=r"domains\.annuity_income\.target\.primary_key: \['no_such_column'\]"):
        load_catalog(write(tmp_path, data))


def test_missing_service_module_names_the_field(tmp_path):
    data = real_config()
    data["domains"]["annual_award"]["service"] = "services.ingestion.domains.nope"
    with pytest.raises(DataSourcesError, match=r"domains\.annual_award\.service"):
        load_catalog(write(tmp_path, data))


def test_domains_sharing_a_table_must_agree(tmp_path):
    data = real_config()
    data["domains"]["trustee_performance"]["references"][0]["key"] = ["plan_code"]
    with pytest.raises(DataSourcesError, match=r"references\.0\.key: warehouse\.portfolios is keyed"):
        load_catalog(write(tmp_path, data))


def test_broken_file_stops_start_up(tmp_path, monkeypatch):
    """The composition root loads the catalog when it builds the ingestion service (no connection is opened)."""
    from infrastructure.postgres.database import Database
    from infrastructure.settings import Settings
    from triggers.runtime import _ingestion

    monkeypatch.setenv(DATA_SOURCES_ENV, str(write(tmp_path, "version: 1\n")))
    settings = Settings(database_url="postgresql://nobody@127.0.0.1:1/none", reports_dir=tmp_path / "reports")
    with pytest.raises(DataSourcesError, match="domains"):
        _ingestion(settings, Database(settings))


def test_environment_points_at_another_file(tmp_path, monkeypatch):
    data = real_config()
    del data["domains"]["annual_award"]
    monkeypatch.setenv(DATA_SOURCES_ENV, str(write(tmp_path, data)))
    assert "annual_award" not in load_catalog().names()


def test_unknown_domain_is_a_parameter_error_naming_valid_domains():
    with pytest.raises(InvalidParameters) as info:
        Ingest().prepare({"domains": ["annuity_income", "pensions"]}, ingest_services())
    [detail] = info.value.details
    assert detail["field"] == "domains"
    assert "unknown domain 'pensions'" in detail["message"]
    assert "annuity_performance" in detail["message"]
