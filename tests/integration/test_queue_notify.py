"""NOTIFY only where someone listens: on with the PostgreSQL queue, off with Service Bus (nobody LISTENs)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from infrastructure.servicebus import transport as sb
from infrastructure.settings import Settings
from tests.fakes.servicebus_fake import FakeServiceBus
from triggers.runtime import Runtime, build_runtime

SB_CONNECTION = "Endpoint=sb://fake.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=x"


def notifications_during_submit(runtime: Runtime, database_url: str, n: int = 2) -> list[str]:
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN coremachine_queue")
        assert runtime.engine.submit("hello_world", {"n": n}).created
        return [n.payload for n in listener.notifies(timeout=1.0, stop_after=1)]


@pytest.fixture
def servicebus_runtime(drill_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setattr(sb, "client_factory", lambda connection: FakeServiceBus())
    settings = drill_settings.model_copy(update={"transport": "servicebus", "servicebus_connection": SB_CONNECTION})
    with build_runtime(settings) as runtime:
        yield runtime


def test_the_postgres_queue_notifies_its_workers(runtime: Runtime, database_url: str) -> None:
    assert notifications_during_submit(runtime, database_url) == ["jobs"]


def test_service_bus_mode_does_not_notify_and_switching_back_does(
    servicebus_runtime: Runtime, drill_settings: Settings, database_url: str
) -> None:
    assert notifications_during_submit(servicebus_runtime, database_url) == []
    with build_runtime(drill_settings, migrate_schema=False) as local:
        assert notifications_during_submit(local, database_url, n=3) == ["jobs"]
