"""Readiness on the Service Bus transport: one peek per queue, never a dead-letter queue, however full."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.servicebus import ServiceBusMessage

from infrastructure.servicebus import transport as sb
from infrastructure.settings import Settings
from tests.acceptance.conftest import client_for
from tests.fakes.servicebus_fake import FakeServiceBus
from triggers.http_base import ApiContext
from triggers.runtime import Runtime, build_runtime

CONNECTION = "Endpoint=sb://fake.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=x"


@pytest.fixture
def bus() -> FakeServiceBus:
    bus = FakeServiceBus()
    sender, receiver = bus.get_queue_sender("tasks"), bus.get_queue_receiver("tasks")
    sender.send_messages([ServiceBusMessage(b"{}", message_id=f"m{i}") for i in range(300)])
    while got := receiver.receive_messages(max_message_count=100, max_wait_time=0.05):
        for message in got:
            receiver.dead_letter_message(message, reason="Boom")
    bus.peeked.clear()
    return bus


@pytest.fixture
def sb_runtime(http_settings: Settings, bus: FakeServiceBus, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setattr(sb, "client_factory", lambda access: bus)
    settings = http_settings.model_copy(update={"transport": "servicebus", "servicebus_connection": CONNECTION})
    with build_runtime(settings, worker_id="readyz") as runtime:
        yield runtime


def test_readyz_never_reads_the_dead_letter_queues(sb_runtime: Runtime, bus: FakeServiceBus) -> None:
    response = client_for(ApiContext.from_runtime(sb_runtime)).get("/api/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["transport"] == {"ok": True, "kind": "servicebus"}
    assert sorted(bus.peeked) == ["jobs", "tasks"]
    assert bus.count("tasks/$DeadLetterQueue") == 300
