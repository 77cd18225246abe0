"""Fail fast under the Functions host: settings that only work on a laptop are a start-up error that names the
setting to change, in the logs, in every invocation and in the readiness probe - never an embedded server or a
silent stall."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.test_http_azure import call
from triggers import azure_runtime

NAMESPACE = "cm-test.servicebus.windows.net"


@pytest.fixture(autouse=True)
def functions_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The app settings of a Functions host, minus whatever a test leaves out; no Runtime installed."""
    prefixes = ("COREMACHINE_", "SERVICEBUSCONNECTION", "DATABASE_", "AZURE_", "FUNCTIONS_", "WEBSITE_")
    for name in list(os.environ):
        if name.upper().startswith(prefixes):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FUNCTIONS_WORKER_RUNTIME", "python")
    monkeypatch.setenv("COREMACHINE_DATA_DIR", str(tmp_path / "state"))
    previous = azure_runtime.set_runtime(None)
    yield
    azure_runtime.set_runtime(previous)


def _readyz() -> tuple[int, dict[str, object]]:
    status, body, _ = call("GET", "/api/readyz")  # through the app's one HTTP function, as the host calls it
    return status, body


def test_no_database_url_is_a_startup_error_not_an_embedded_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("COREMACHINE_TRANSPORT", "servicebus")
    monkeypatch.setenv("ServiceBusConnection__fullyQualifiedNamespace", NAMESPACE)
    with caplog.at_level(logging.ERROR, logger="coremachine.startup"), pytest.raises(azure_runtime.StartupError) as err:
        azure_runtime.get_runtime()
    assert len(err.value.problems) == 1 and "DATABASE_URL is not set" in err.value.problems[0]
    assert not (tmp_path / "state").exists(), "no embedded server was started"
    assert any("DATABASE_URL is not set" in r.getMessage() for r in caplog.records)
    status, body = _readyz()
    assert status == 503 and body["status"] == "not_ready" and body["problems"] == err.value.problems


def test_the_postgres_queue_under_the_host_is_a_startup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://cm@db.example:6432/cm")
    problems = azure_runtime.startup_problems()
    assert len(problems) == 1 and "COREMACHINE_TRANSPORT is 'postgres'" in problems[0]
    assert "COREMACHINE_TRANSPORT=servicebus" in problems[0]


def test_both_problems_and_invalid_settings_are_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(azure_runtime.startup_problems()) == 2
    monkeypatch.setenv("COREMACHINE_TRANSPORT", "servicebus")
    [problem] = azure_runtime.startup_problems()
    assert "ServiceBusConnection__fullyQualifiedNamespace" in problem, "the validation error, not a traceback"


def test_identity_only_settings_pass_the_startup_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://cm-identity@srv.postgres.database.azure.com:6432/cm")
    monkeypatch.setenv("COREMACHINE_DATABASE_AUTH", "entra")
    monkeypatch.setenv("COREMACHINE_TRANSPORT", "servicebus")
    monkeypatch.setenv("ServiceBusConnection__fullyQualifiedNamespace", NAMESPACE)
    monkeypatch.setenv("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000001")
    assert azure_runtime.startup_problems() == []
    settings = azure_runtime.check_environment()
    assert settings.pgbouncer and settings.servicebus_identity_client_id == "00000000-0000-0000-0000-000000000001"
    assert settings.reports_dir == Path(tempfile.gettempdir()) / "coremachine" / "reports", "not the package dir"


def test_an_explicit_reports_dir_is_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COREMACHINE_REPORTS_DIR", str(tmp_path / "mine"))
    assert azure_runtime.settings_from_environment().reports_dir == tmp_path / "mine"


def test_off_the_host_nothing_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FUNCTIONS_WORKER_RUNTIME")
    assert azure_runtime.startup_problems() == []
    assert azure_runtime.settings_from_environment().reports_dir == Path("reports")


def test_each_problem_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    azure_runtime._reported.clear()
    with caplog.at_level(logging.ERROR, logger="coremachine.startup"):
        azure_runtime.log_startup_problems()
        azure_runtime.log_startup_problems()
    assert len([r for r in caplog.records if r.name == "coremachine.startup"]) == 2
