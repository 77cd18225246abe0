"""QueueConfig: the Service Bus-like knobs shared by the PostgreSQL queue and the in-memory transport."""

from __future__ import annotations

from dataclasses import dataclass

MAX_DELIVERY_REASON = "MaxDeliveryCountExceeded"


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """How long a receive locks a message, how often it may be delivered, how long ids are remembered.

    A message id is dropped on send while a message with that id is still in the queue, or was enqueued less
    than `duplicate_window_seconds` ago (Service Bus duplicate detection).
    """

    lock_seconds: float = 60.0
    max_deliveries: int = 10
    duplicate_window_seconds: float = 600.0

    def __post_init__(self) -> None:
        if not self.lock_seconds > 0:
            raise ValueError(f"lock_seconds must be greater than 0, got {self.lock_seconds}")
        if self.max_deliveries < 1:
            raise ValueError(f"max_deliveries must be at least 1, got {self.max_deliveries}")
        if not self.duplicate_window_seconds >= 0:
            raise ValueError(f"duplicate_window_seconds must be at least 0, got {self.duplicate_window_seconds}")
