"""The Service Bus adapter offline: message mapping, batch splitting, retries and error translation, DLQ decoding."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage
from azure.servicebus import exceptions as sbx

from core.errors import MessageRefused, TransportError
from core.models import OutgoingMessage
from infrastructure.memory.transport import ManualClock
from infrastructure.servicebus.mapping import decode_body, decode_properties, to_servicebus_message
from infrastructure.servicebus.transport import ServiceBusTransport
from tests.fakes.servicebus_fake import FakeServiceBus


def outgoing(message_id: str, size: int = 10, delay: float = 0.0) -> OutgoingMessage:
    return OutgoingMessage(
        "tasks", message_id, {"pad": "x" * size}, {"job_id": "J1", "attempt": 2, "kind": "task"}, delay_seconds=delay
    )


def transport(bus: FakeServiceBus, **options: Any) -> ServiceBusTransport:
    return ServiceBusTransport(
        bus, {"jobs": "cm-jobs", "tasks": "cm-tasks"}, min_wait_seconds=0.0, retry_wait_seconds=0.0, **options
    )


def test_mapping_sets_id_properties_and_json_body() -> None:
    message = to_servicebus_message(outgoing("t:abc:a2"))
    assert isinstance(message, ServiceBusMessage)
    assert message.message_id == "t:abc:a2"
    assert message.application_properties == {"job_id": "J1", "attempt": 2, "kind": "task"}
    assert (message.content_type, message.subject, message.correlation_id) == ("application/json", "task", "J1")
    assert decode_body(message) == {"pad": "x" * 10}


def test_too_long_message_id_is_refused_by_the_sdk() -> None:
    with pytest.raises(MessageRefused) as caught:
        to_servicebus_message(outgoing("x" * 129))
    assert isinstance(caught.value.__cause__, ValueError)


def test_send_splits_into_batches_that_fit_and_maps_queue_names() -> None:
    bus = FakeServiceBus(max_batch_bytes=2000)
    t = transport(bus)
    t.send([outgoing(f"m{i}", size=300) for i in range(12)])
    assert [entity for entity, _ in bus.sent_batches] == ["cm-tasks"] * len(bus.sent_batches)
    assert len(bus.sent_batches) > 1
    assert sum(n for _, n in bus.sent_batches) == 12
    got = t.receive("tasks", 50, 0)
    assert [m.message_id for m in got] == [f"m{i}" for i in range(12)]
    assert got[0].queue == "tasks"
    assert got[0].properties == {"job_id": "J1", "attempt": 2, "kind": "task"}
    assert got[0].delivery_count == 1


def test_a_message_larger_than_a_batch_is_refused() -> None:
    t = transport(FakeServiceBus(max_batch_bytes=500))
    with pytest.raises(MessageRefused) as caught:
        t.send([outgoing("big", size=2000)])
    assert caught.value.transient is False
    assert isinstance(caught.value.__cause__, sbx.MessageSizeExceededError)


def test_delayed_messages_are_scheduled_at_now_plus_delay() -> None:
    clock = ManualClock()
    bus = FakeServiceBus(clock=clock)
    t = transport(bus, clock=clock)
    t.send([outgoing("later", delay=30.0), outgoing("now")])
    [(entity, mid, at)] = bus.scheduled
    assert (entity, mid) == ("cm-tasks", "later")
    assert at == datetime.fromtimestamp(clock() + 30.0, UTC)
    assert [m.message_id for m in t.receive("tasks", 10, 0)] == ["now"]


def test_send_is_retried_on_transient_errors_then_succeeds() -> None:
    bus = FakeServiceBus()
    bus.fail_next(2, sbx.ServiceBusServerBusyError(message="busy"))
    t = transport(bus)
    t.send([outgoing("m1")])
    assert [m.message_id for m in t.receive("tasks", 10, 0)] == ["m1"]


def test_transient_errors_that_persist_become_a_transient_transport_error() -> None:
    bus = FakeServiceBus()
    bus.fail_next(10, sbx.ServiceBusConnectionError(message="down"))
    with pytest.raises(TransportError) as caught:
        transport(bus, send_attempts=3).send([outgoing("m1")])
    assert caught.value.transient is True
    assert isinstance(caught.value.__cause__, sbx.ServiceBusConnectionError)
    assert bus.sent_batches == []


@pytest.mark.parametrize(
    "error", [sbx.ServiceBusAuthenticationError(message="no"), sbx.MessagingEntityNotFoundError(message="gone")]
)
def test_permanent_errors_are_not_retried(error: Exception) -> None:
    bus = FakeServiceBus()
    bus.fail_next(1, error)
    t = transport(bus)
    with pytest.raises(TransportError) as caught:
        t.send([outgoing("m1")])
    assert caught.value.transient is False
    t.send([outgoing("m2")])
    assert [m.message_id for m in t.receive("tasks", 10, 0)] == ["m2"]


def test_received_bytes_properties_are_decoded_without_dead_letter_keys() -> None:
    raw = {b"job_id": b"J1", b"attempt": 3, b"DeadLetterReason": b"Boom", b"DeadLetterErrorDescription": b"x"}
    assert decode_properties(raw) == {"job_id": "J1", "attempt": 3}


def test_dead_letter_decoding_on_a_real_sdk_received_message() -> None:
    """A message as the SDK decodes it off the wire (`ServiceBusReceivedMessage.from_bytes`, azure-servicebus 7.15)."""
    from azure.servicebus._pyamqp._encode import encode_payload  # private encoder: test-only
    from azure.servicebus._pyamqp.message import Header, Message, Properties

    wire = Message(
        header=Header(delivery_count=2),
        properties=Properties(message_id=b"t:1:a1"),
        application_properties={b"job_id": b"J9", b"attempt": 1, b"DeadLetterReason": b"ValidationError"},
        data=[b'{"kind":"task"}'],
    )
    received = ServiceBusReceivedMessage.from_bytes(bytes(encode_payload(bytearray(), wire)))
    assert decode_body(received) == {"kind": "task"}
    assert decode_properties(received.application_properties) == {"job_id": "J9", "attempt": 1}
    assert received.dead_letter_reason == "ValidationError"
    assert received.delivery_count == 2


def test_messages_held_by_a_receiver_replaced_after_a_receive_error_settle_as_a_no_op() -> None:
    """The receiver is closed and replaced after a transient receive error; settling what it held must neither
    raise (the SDK's ValueError for a closed handler) nor go through the new receiver (the service refuses
    that): the locks lapse and Service Bus redelivers."""
    clock = ManualClock()
    bus = FakeServiceBus(clock=clock, lock_seconds=30.0)
    t = transport(bus, clock=clock)
    t.send([outgoing("m1"), outgoing("m2")])
    [first] = t.receive("tasks", 1, 0)
    bus.fail_next_receive(1, sbx.ServiceBusConnectionError(message="link detached"))
    with pytest.raises(TransportError) as caught:
        t.receive("tasks", 1, 0)
    assert caught.value.transient is True
    t.complete([first])
    t.abandon(first)
    t.dead_letter(first, "Boom", "never reaches the queue")
    [second] = t.receive("tasks", 1, 0)
    assert second.message_id == "m2"
    t.complete([second])
    clock.advance(31.0)
    [again] = t.receive("tasks", 1, 0)
    assert (again.message_id, again.delivery_count) == ("m1", 2)
    t.complete([again])
    assert bus.count("cm-tasks") == 0 and bus.count("cm-tasks/$DeadLetterQueue") == 0


def test_every_send_and_schedule_has_a_timeout() -> None:
    bus = FakeServiceBus()
    transport(bus, send_timeout_seconds=12.5).send([outgoing("now"), outgoing("later", delay=5.0)])
    assert bus.send_timeouts == [12.5, 12.5]


def test_a_communication_error_is_transient_and_retried() -> None:
    bus = FakeServiceBus()
    bus.fail_next(1, sbx.ServiceBusCommunicationError(message="socket closed"))
    t = transport(bus)
    t.send([outgoing("m1")])
    assert [m.message_id for m in t.receive("tasks", 10, 0)] == ["m1"]
    bus.fail_next(5, sbx.ServiceBusCommunicationError(message="socket closed"))
    with pytest.raises(TransportError) as caught:
        transport(bus, send_attempts=2).send([outgoing("m2")])
    assert caught.value.transient is True


def test_readiness_ping_peeks_one_message_per_queue_and_never_a_dead_letter_queue() -> None:
    bus = FakeServiceBus()
    t = transport(bus)
    t.send([outgoing(f"m{i}") for i in range(5)])
    for message in t.receive("tasks", 5, 0):
        t.dead_letter(message, "Boom", "drill")
    bus.peeked.clear()
    t.ping()
    assert sorted(bus.peeked) == ["cm-jobs", "cm-tasks"]
    assert bus.count("cm-tasks/$DeadLetterQueue") == 5 and bus.count("cm-tasks") == 0


def test_queue_depths_come_from_runtime_properties_and_stop_quietly_without_rights() -> None:
    from infrastructure.servicebus.depth import ServiceBusQueueDepths

    bus = FakeServiceBus()
    transport(bus).send([outgoing("m1"), outgoing("m2"), outgoing("later", delay=60.0)])
    depths = ServiceBusQueueDepths(lambda: bus, {"jobs": "cm-jobs", "tasks": "cm-tasks"})
    assert depths() == {"jobs": 0, "tasks": 2}, "scheduled messages are not counted"

    calls: list[str] = []

    class Unauthorized:
        def get_queue_runtime_properties(self, name: str) -> Any:
            calls.append(name)
            raise sbx.ServiceBusAuthorizationError(message="Manage claim required")

    refused = ServiceBusQueueDepths(Unauthorized, {"tasks": "cm-tasks"})
    assert refused() == {} and refused() == {}
    assert calls == ["cm-tasks"], "after the first refusal the metric makes no more calls"
