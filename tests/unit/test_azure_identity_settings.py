"""Identity-first settings: Service Bus by namespace and managed identity, PostgreSQL by Entra ID token, PgBouncer
detection, and how each combination of app settings resolves."""

from __future__ import annotations

import os

import pytest
from azure.servicebus import ServiceBusClient
from pydantic import ValidationError

from infrastructure.identity import POSTGRES_SCOPE
from infrastructure.postgres.database import KEEPALIVES, Database, connection_defaults
from infrastructure.servicebus.client import ServiceBusAccess, build_client
from infrastructure.settings import Settings
from tests.fakes.azure_identity import FakeCredential

NAMESPACE = "cm-test.servicebus.windows.net"
CONNECTION = "Endpoint=sb://cm-test.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    prefixes = ("COREMACHINE_", "SERVICEBUSCONNECTION", "DATABASE_", "AZURE_", "FUNCTIONS_", "WEBSITE_")
    for name in list(os.environ):
        if name.upper().startswith(prefixes):
            monkeypatch.delenv(name)


def test_namespace_alone_is_enough_for_the_servicebus_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COREMACHINE_TRANSPORT", "servicebus")
    monkeypatch.setenv("ServiceBusConnection__fullyQualifiedNamespace", NAMESPACE)
    settings = Settings()
    assert settings.servicebus_connection is None and settings.servicebus_namespace == NAMESPACE
    access = ServiceBusAccess.from_settings(settings)
    assert access == ServiceBusAccess(namespace=NAMESPACE, client_id=None) and access.uses_identity


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({"ServiceBusConnection__fullyQualifiedNamespace": NAMESPACE},
         ServiceBusAccess(namespace=NAMESPACE)),
        ({"ServiceBusConnection__fullyQualifiedNamespace": f"sb://{NAMESPACE}/", "AZURE_CLIENT_ID": "uami"},
         ServiceBusAccess(namespace=NAMESPACE, client_id="uami")),
        ({"ServiceBusConnection__fullyQualifiedNamespace": NAMESPACE, "ServiceBusConnection__clientId": "sb-id",
          "AZURE_CLIENT_ID": "other"},
         ServiceBusAccess(namespace=NAMESPACE, client_id="sb-id")),
        ({"COREMACHINE_SERVICEBUS_NAMESPACE": NAMESPACE, "COREMACHINE_SERVICEBUS_CLIENT_ID": "sb-id"},
         ServiceBusAccess(namespace=NAMESPACE, client_id="sb-id")),
        ({"ServiceBusConnection": CONNECTION},
         ServiceBusAccess(connection_string=CONNECTION)),
        ({"ServiceBusConnection": CONNECTION, "ServiceBusConnection__fullyQualifiedNamespace": NAMESPACE},
         ServiceBusAccess(connection_string=CONNECTION)),
    ],
)
def test_each_combination_of_servicebus_settings(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], expected: ServiceBusAccess
) -> None:
    monkeypatch.setenv("COREMACHINE_TRANSPORT", "servicebus")
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert ServiceBusAccess.from_settings(Settings()) == expected


@pytest.mark.parametrize(
    "environment", [{}, {"ServiceBusConnection__clientId": "id-only"}, {"ServiceBusConnection": " "}]
)
def test_servicebus_needs_a_namespace_or_a_connection_string(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]
) -> None:
    monkeypatch.setenv("COREMACHINE_TRANSPORT", "servicebus")
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="ServiceBusConnection__fullyQualifiedNamespace"):
        Settings()


def test_the_sdk_client_gets_the_identity_for_a_namespace() -> None:
    made: list[str | None] = []

    def factory(client_id: str | None) -> FakeCredential:
        made.append(client_id)
        return FakeCredential()

    client = build_client(ServiceBusAccess(namespace=NAMESPACE, client_id="uami"), factory)
    try:
        assert isinstance(client, ServiceBusClient)
        assert client.fully_qualified_namespace == NAMESPACE and made == ["uami"]
    finally:
        client.close()


def test_the_sdk_client_from_a_connection_string_needs_no_identity() -> None:
    def factory(client_id: str | None) -> FakeCredential:
        raise AssertionError("no credential for a connection string")

    client = build_client(ServiceBusAccess(connection_string=CONNECTION), factory)
    try:
        assert client.fully_qualified_namespace == NAMESPACE
    finally:
        client.close()


def test_access_without_either_is_refused() -> None:
    with pytest.raises(ValueError, match="connection string or a fully qualified namespace"):
        ServiceBusAccess(client_id="x")


def test_entra_auth_puts_a_fresh_token_in_each_new_connection() -> None:
    credential = FakeCredential(token="token-1")
    settings = Settings.for_tests(database_url="postgresql://cm-app@db.example:5432/coremachine?sslmode=require",
                                  database_auth="entra")
    database = Database(settings, credential=credential)
    assert database.connection_kwargs()["password"] == "token-1"
    credential.token = "token-2"  # azure-identity refreshed it
    assert database.connection_kwargs()["password"] == "token-2"
    assert credential.requests == [(POSTGRES_SCOPE,), (POSTGRES_SCOPE,)]


def test_password_auth_asks_no_identity() -> None:
    database = Database(Settings.for_tests(database_url="postgresql://u:p@db.example/cm"))
    assert "password" not in database.connection_kwargs()


def test_entra_auth_needs_a_database_url() -> None:
    with pytest.raises(ValidationError, match="database_auth 'entra' needs DATABASE_URL"):
        Settings.for_tests(database_auth="entra")


@pytest.mark.parametrize(
    ("url", "explicit", "pooled"),
    [
        ("postgresql://u@srv.postgres.database.azure.com:6432/cm?sslmode=require", None, True),
        ("postgresql://u@srv.postgres.database.azure.com:5432/cm?sslmode=require", None, False),
        ("postgresql://u@srv.postgres.database.azure.com/cm", None, False),
        ("host=srv port=6432 dbname=cm", None, True),
        ("postgresql://u@srv:6432/cm", False, False),
        ("postgresql://u@srv:7000/cm", True, True),
        (None, None, False),
    ],
)
def test_pgbouncer_defaults_to_port_6432(url: str | None, explicit: bool | None, pooled: bool) -> None:
    settings = Settings.for_tests(database_url=url, database_pgbouncer=explicit)
    assert settings.pgbouncer is pooled
    if url:
        kwargs = Database(settings).connection_kwargs()
        assert ("prepare_threshold" in kwargs) is pooled
        if pooled:
            assert kwargs["prepare_threshold"] is None


def test_pgbouncer_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@srv:5432/cm")
    monkeypatch.setenv("COREMACHINE_DATABASE_PGBOUNCER", "true")
    monkeypatch.setenv("DATABASE_DIRECT_URL", "postgresql://u@srv:5432/cm")
    settings = Settings()
    assert settings.pgbouncer and settings.database_direct_url == "postgresql://u@srv:5432/cm"


def test_the_direct_url_bypasses_pgbouncer_for_dedicated_connections() -> None:
    settings = Settings.for_tests(database_url="postgresql://u@srv:6432/cm", database_direct_url="postgresql://u@srv:5432/cm")
    database = Database(settings)
    assert database.listen_available
    assert "prepare_threshold" in database.connection_kwargs()
    assert "prepare_threshold" not in database.connection_kwargs(direct=True)
    assert not Database(Settings.for_tests(database_url="postgresql://u@srv:6432/cm")).listen_available


def test_keepalives_and_application_name_unless_the_url_sets_them() -> None:
    assert connection_defaults("postgresql://u@srv/cm") == {**KEEPALIVES, "application_name": "coremachine"}
    own = connection_defaults("postgresql://u@srv/cm?keepalives_idle=5&application_name=mine")
    assert "keepalives_idle" not in own and "application_name" not in own and own["keepalives"] == 1


@pytest.mark.parametrize(
    ("environment", "on_azure"),
    [({}, False), ({"FUNCTIONS_WORKER_RUNTIME": "python"}, True), ({"WEBSITE_INSTANCE_ID": "abc"}, True)],
)
def test_the_functions_host_is_detected(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], on_azure: bool
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert Settings().on_azure_functions is on_azure
