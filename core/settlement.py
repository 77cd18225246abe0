"""What a consumer must do with a message once the engine has handled it: each message gets its own fate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from core.models import ErrorClass, ReceivedMessage
from core.retry import RetryPolicy

REDELIVERY = RetryPolicy(initial_interval=1.0, backoff_coefficient=2.0, maximum_interval=60.0,
                         maximum_attempts=2**31 - 1, jitter=0.2)
"""Backoff of a message given back after a failure that is not its handler's outcome (a store or transport
outage, a planner's transient error): scheduled redelivery, never a sleep in the worker."""


class Disposition(StrEnum):
    COMPLETE = "complete"
    ABANDON = "abandon"
    DEAD_LETTER = "dead_letter"
    SETTLED = "settled"
    """Completed by the commit that recorded what it caused (a store whose database holds the queue): the
    consumer has nothing left to do."""


@dataclass(frozen=True, slots=True)
class Settlement:
    message: ReceivedMessage
    disposition: Disposition
    reason: str = ""
    description: str = ""
    delay_seconds: float = 0.0


def complete(message: ReceivedMessage) -> Settlement:
    return Settlement(message, Disposition.COMPLETE)


def recorded(message: ReceivedMessage, settled_by_commit: bool) -> Settlement:
    """A message whose effect is committed: settled already where that commit settled it (the store holds the
    queue), else for the consumer to complete."""
    return Settlement(message, Disposition.SETTLED if settled_by_commit else Disposition.COMPLETE)


def dead_letter(message: ReceivedMessage, reason: str, description: str) -> Settlement:
    return Settlement(message, Disposition.DEAD_LETTER, reason, description[:4000])


def give_back(message: ReceivedMessage, reason: str) -> Settlement:
    """Abandon for redelivery after a backoff that grows with the message's delivery count."""
    delay = REDELIVERY.next_delay(max(1, message.delivery_count), ErrorClass.TRANSIENT) or 0.0
    return Settlement(message, Disposition.ABANDON, reason[:256], delay_seconds=delay)


_PRECEDENCE = (Disposition.DEAD_LETTER, Disposition.SETTLED, Disposition.ABANDON, Disposition.COMPLETE)


def combined(settlements: Sequence[Settlement]) -> list[Settlement]:
    """One settlement per message, in first-seen order, for a message that carries several tasks and got one per
    task. Dead-lettered wins (it is only ever the whole message's); then settled by a commit (there is nothing
    left to settle); then given back (a task of it must run again: the redelivery splits it), with the longest
    delay; completed only when every task's was."""
    by_message: dict[int, list[Settlement]] = {}
    for settlement in settlements:
        by_message.setdefault(id(settlement.message), []).append(settlement)
    result = []
    for parts in by_message.values():
        if len(parts) == 1:
            result.append(parts[0])
            continue
        disposition = next(d for d in _PRECEDENCE if any(p.disposition is d for p in parts))
        result.append(max((p for p in parts if p.disposition is disposition), key=lambda p: p.delay_seconds))
    return result
