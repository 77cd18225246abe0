"""Settings: environment parsing (prefix, DATABASE_URL, ServiceBusConnection), defaults and validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from infrastructure.settings import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("COREMACHINE_") or name.upper() in {"DATABASE_URL", "SERVICEBUSCONNECTION"}:
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = Settings()
    assert settings.database_url is None
    assert settings.data_dir == Path(".coremachine")
    assert settings.transport == "postgres"
    assert (settings.jobs_queue, settings.tasks_queue) == ("jobs", "tasks")
    assert settings.lock_seconds == 60
    assert settings.max_deliveries == 10
    assert settings.pool_min_size <= settings.pool_max_size
    assert (settings.log_level, settings.log_format) == ("INFO", "json")


def test_environment_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COREMACHINE_LOCK_SECONDS", "2.5")
    monkeypatch.setenv("COREMACHINE_MAX_DELIVERIES", "3")
    monkeypatch.setenv("COREMACHINE_DATA_DIR", "/srv/cm")
    monkeypatch.setenv("COREMACHINE_LOG_LEVEL", "debug")
    monkeypatch.setenv("COREMACHINE_LOG_FORMAT", "text")
    settings = Settings()
    assert settings.lock_seconds == 2.5
    assert settings.max_deliveries == 3
    assert settings.data_dir == Path("/srv/cm")
    assert settings.log_level == "DEBUG"
    assert settings.log_level_number == 10
    assert settings.log_format == "text"


def test_database_url_comes_from_the_unprefixed_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db.example/cm")
    assert Settings().database_url == "postgresql://u@db.example/cm"
    assert Settings(database_url="postgresql://other/cm").database_url == "postgresql://other/cm"


def test_a_blank_database_url_means_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "  ")
    assert Settings().database_url is None


@pytest.mark.parametrize("name", ["ServiceBusConnection", "COREMACHINE_SERVICEBUS_CONNECTION"])
def test_servicebus_connection_names(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "Endpoint=sb://example/;SharedAccessKeyName=k;SharedAccessKey=s")
    monkeypatch.setenv("COREMACHINE_TRANSPORT", "servicebus")
    settings = Settings()
    assert settings.transport == "servicebus"
    assert settings.servicebus_connection is not None
    assert settings.servicebus_connection.startswith("Endpoint=sb://example/")


def test_servicebus_transport_needs_a_namespace_or_a_connection_string() -> None:
    with pytest.raises(ValidationError, match="needs a namespace or a connection string"):
        Settings(transport="servicebus")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lock_seconds": 0}, "lock_seconds\n.*greater than 0"),
        ({"worker_flush_seconds": -1}, "worker_flush_seconds\n.*greater than 0"),
        ({"lease_grace_seconds": -0.1}, "lease_grace_seconds\n.*at least 0"),
        ({"max_deliveries": 0}, "max_deliveries\n.*at least 1"),
        ({"worker_batch_size": 0}, "worker_batch_size\n.*at least 1"),
        ({"pool_min_size": 4, "pool_max_size": 2}, r"pool_max_size \(2\) must be at least pool_min_size \(4\)"),
        ({"jobs_queue": "q", "tasks_queue": "q"}, "must differ"),
        ({"log_level": "LOUD"}, "must be one of DEBUG"),
        ({"log_format": "xml"}, "log_format"),
        ({"transport": "carrier-pigeon"}, "transport"),
    ],
)
def test_invalid_values_are_refused_with_a_clear_message(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**overrides)  # type: ignore[arg-type]


def test_invalid_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COREMACHINE_LOCK_SECONDS", "soon")
    with pytest.raises(ValidationError, match="lock_seconds"):
        Settings()


def test_for_tests_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://production/cm")
    monkeypatch.setenv("COREMACHINE_TRANSPORT", "servicebus")
    settings = Settings.for_tests(max_deliveries=2)
    assert settings.database_url is None
    assert settings.transport == "postgres"
    assert settings.max_deliveries == 2
    assert settings.lock_seconds < 60
    assert isinstance(settings, Settings)


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.lock_seconds = 5
