"""The Service Bus fake is as strict as the SDK wherever a kinder fake could hide a production bug.

Where the SDK decides on the client side (azure-servicebus 7.15: closed handlers, peeked messages, argument
checks), the same call is made on the real SDK objects, unopened and offline, and on the fake: both must fail
alike. Service-side behaviour (cross-receiver settlement, sizes) follows the service's documented errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
)
from azure.servicebus import exceptions as sbx

from tests.fakes.servicebus_fake import FakeServiceBus

CONNECTION = "Endpoint=sb://fake.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=x"


def real_peeked_message(receiver: Any) -> ServiceBusReceivedMessage:
    """A peeked message as the SDK builds one (its constructor is the SDK's own; test-only)."""
    from azure.servicebus._pyamqp.message import Header, Message, Properties

    wire = Message(header=Header(delivery_count=0), properties=Properties(message_id=b"m1"), data=[b"{}"])
    return ServiceBusReceivedMessage(
        wire, receive_mode=ServiceBusReceiveMode.PEEK_LOCK, is_peeked_message=True, receiver=receiver
    )


@pytest.fixture
def bus() -> FakeServiceBus:
    bus = FakeServiceBus(lock_seconds=30.0)
    bus.get_queue_sender("q").send_messages(ServiceBusMessage(b"{}", message_id="m1"))
    return bus


def test_only_the_receiver_that_received_a_message_can_settle_it(bus: FakeServiceBus) -> None:
    first, second = bus.get_queue_receiver("q"), bus.get_queue_receiver("q")
    [message] = first.receive_messages(max_message_count=1, max_wait_time=1)
    with pytest.raises(sbx.MessageLockLostError, match="different receiver instance"):
        second.complete_message(message)
    first.complete_message(message)
    assert bus.count("q") == 0


def test_peeked_messages_have_no_lock_token_and_cannot_be_settled(bus: FakeServiceBus) -> None:
    real: Any = ServiceBusClient.from_connection_string(CONNECTION).get_queue_receiver("q")
    fake: Any = bus.get_queue_receiver("q")
    [peeked] = fake.peek_messages(max_message_count=1)
    for receiver, message in ((real, real_peeked_message(real)), (fake, peeked)):
        assert message.lock_token is None
        with pytest.raises(ValueError, match="peeked messages"):
            receiver.complete_message(message)
    assert bus.count("q") == 1


def test_a_settled_message_loses_its_lock_token_and_cannot_be_settled_again(bus: FakeServiceBus) -> None:
    receiver = bus.get_queue_receiver("q")
    [message] = receiver.receive_messages(max_message_count=1, max_wait_time=1)
    assert message.lock_token is not None
    receiver.abandon_message(message)
    assert message.lock_token is None
    with pytest.raises(sbx.MessageAlreadySettled):
        receiver.complete_message(message)


def test_a_closed_receiver_refuses_settlement_and_receive_like_the_sdk(bus: FakeServiceBus) -> None:
    real: Any = ServiceBusClient.from_connection_string(CONNECTION).get_queue_receiver("q")
    fake: Any = bus.get_queue_receiver("q")
    [received] = fake.receive_messages(max_message_count=1, max_wait_time=1)
    real.close()
    fake.close()
    for receiver, message in ((real, real_peeked_message(real)), (fake, received)):
        with pytest.raises(ValueError, match="already been shutdown"):
            receiver.complete_message(message)
        with pytest.raises(ValueError, match="already been shutdown"):
            receiver.receive_messages(max_message_count=1, max_wait_time=1)


@pytest.mark.parametrize(
    "call",
    [
        lambda client: client.get_queue_receiver("q").receive_messages(max_message_count=1, max_wait_time=0),
        lambda client: client.get_queue_receiver("q", max_wait_time=0),
        lambda client: client.get_queue_receiver("q").receive_messages(max_message_count=0, max_wait_time=1),
        lambda client: client.get_queue_sender("q").send_messages(ServiceBusMessage(b"{}"), timeout=0),
    ],
    ids=["receive-wait-0", "receiver-wait-0", "receive-count-0", "send-timeout-0"],
)
def test_arguments_the_sdk_refuses_are_refused(bus: FakeServiceBus, call: Callable[[Any], Any]) -> None:
    """Checked before the SDK opens any connection, so the real objects answer offline."""
    with pytest.raises(ValueError):
        call(ServiceBusClient.from_connection_string(CONNECTION))
    with pytest.raises(ValueError):
        call(bus)


def test_a_batch_larger_than_the_link_allows_is_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        FakeServiceBus(max_batch_bytes=1024).get_queue_sender("q").create_message_batch(max_size_in_bytes=4096)


def test_a_single_message_larger_than_the_link_limit_is_refused_on_send_and_schedule() -> None:
    bus = FakeServiceBus(max_batch_bytes=1024)
    sender = bus.get_queue_sender("q")
    big = ServiceBusMessage(b"x" * 2048, message_id="big")
    with pytest.raises(sbx.MessageSizeExceededError):
        sender.send_messages(big)
    with pytest.raises(sbx.MessageSizeExceededError):
        sender.schedule_messages(big, datetime.now(UTC) + timedelta(seconds=5))
    assert bus.count("q") == 0


def test_a_list_that_does_not_fit_one_batch_is_refused_whole() -> None:
    bus = FakeServiceBus(max_batch_bytes=2048)
    messages = [ServiceBusMessage(b"x" * 600, message_id=f"m{i}") for i in range(5)]
    with pytest.raises(sbx.MessageSizeExceededError):
        bus.get_queue_sender("q").send_messages(messages)
    assert bus.count("q") == 0


def test_receive_waits_for_the_receivers_default_when_no_wait_is_given() -> None:
    bus = FakeServiceBus()
    receiver = bus.get_queue_receiver("q", max_wait_time=0.3)
    started = time.monotonic()
    assert receiver.receive_messages(max_message_count=1) == []
    assert time.monotonic() - started >= 0.3, "the SDK waits (60 s unless the receiver says otherwise)"


def test_receive_with_no_count_answers_nothing_at_once(bus: FakeServiceBus) -> None:
    assert bus.get_queue_receiver("q").receive_messages(max_message_count=None, max_wait_time=5) == []
    assert bus.count("q") == 1
