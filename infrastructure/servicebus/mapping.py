"""Mapping between our messages and the azure-servicebus SDK's, and the translation of SDK errors."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from azure.servicebus import ServiceBusMessage
from azure.servicebus import exceptions as sbx

from core.errors import MessageRefused, TransportError
from core.models import OutgoingMessage
from core.tracing import TRACE_KEYS

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    sbx.ServiceBusServerBusyError,
    sbx.ServiceBusConnectionError,
    sbx.ServiceBusCommunicationError,
    sbx.OperationTimeoutError,
    sbx.ServiceBusQuotaExceededError,
)
LOST_LOCK_ERRORS: tuple[type[Exception], ...] = (sbx.MessageLockLostError, sbx.MessageAlreadySettled, ValueError)
"""Settlement errors meaning "this lock is gone": expired, already settled, or (ValueError) the receiver that
held it was closed. The message comes back when its lock lapses; there is nothing else to do."""
_DEAD_LETTER_KEYS = frozenset({"DeadLetterReason", "DeadLetterErrorDescription"})


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Re-raise SDK errors as `TransportError`; busy, connection, communication, timeout and quota errors are
    transient; a message too large for the link is `MessageRefused` (that message can never be sent)."""
    try:
        yield
    except TransportError:
        raise
    except sbx.MessageSizeExceededError as exc:
        raise MessageRefused(f"service bus {action} refused a message: {type(exc).__name__}: {exc}") from exc
    except (sbx.ServiceBusError, sbx.MessageAlreadySettled) as exc:
        transient = isinstance(exc, TRANSIENT_ERRORS)
        raise TransportError(f"service bus {action} failed: {type(exc).__name__}: {exc}", transient=transient) from exc


def to_servicebus_message(message: OutgoingMessage) -> ServiceBusMessage:
    """Our message as the SDK's: deterministic `message_id`, JSON body, properties as application properties."""
    properties: dict[str | bytes, Any] = {}
    for key, value in message.properties.items():
        # The SDK's own tracing adds `traceparent` under a bytes key only if it is missing (setdefault): under the
        # same key, the job's trace context is kept.
        properties[key.encode() if key in TRACE_KEYS else key] = value
    try:
        return ServiceBusMessage(
            json.dumps(message.body, separators=(",", ":"), allow_nan=False).encode(),
            message_id=message.message_id,
            content_type="application/json",
            subject=str(message.properties.get("kind", "")) or None,
            correlation_id=str(message.properties.get("job_id", "")) or None,
            application_properties=properties,
        )
    except (ValueError, TypeError) as exc:
        raise MessageRefused(f"message {message.message_id[:140]!r} is not a valid Service Bus message: {exc}") from exc


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else value


def decode_properties(raw: Mapping[Any, Any] | None) -> dict[str, str | int]:
    """Application properties as received (bytes keys and string values) back to ours, without `DeadLetter*`."""
    decoded: dict[str, str | int] = {}
    for key, value in (raw or {}).items():
        name = str(_text(key))
        if name in _DEAD_LETTER_KEYS:
            continue
        value = _text(value)
        decoded[name] = int(value) if isinstance(value, int) else str(value)
    return decoded


def decode_body(message: Any) -> Any:
    """The JSON body of a received message (the SDK yields the data sections as an iterable of bytes)."""
    body = message.body
    data = bytes(body) if isinstance(body, bytes | bytearray) else b"".join(bytes(part) for part in body)
    return json.loads(data)


def replay_count_of(properties: Mapping[str, str | int]) -> int:
    value = properties.get("replay_count", 0)
    if isinstance(value, int):
        return value
    return int(value) if value.isdecimal() else 0
