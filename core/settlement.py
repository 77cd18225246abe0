"""What a consumer must do with a message once the engine has handled it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.models import ReceivedMessage


class Disposition(StrEnum):
    COMPLETE = "complete"
    ABANDON = "abandon"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class Settlement:
    message: ReceivedMessage
    disposition: Disposition
    reason: str = ""
    description: str = ""


def complete(message: ReceivedMessage) -> Settlement:
    return Settlement(message, Disposition.COMPLETE)


def dead_letter(message: ReceivedMessage, reason: str, description: str) -> Settlement:
    return Settlement(message, Disposition.DEAD_LETTER, reason, description[:4000])
