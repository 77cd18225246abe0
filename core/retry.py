"""Retry policy in Temporal's vocabulary: it answers "retry after N seconds" or "stop", never sleeps."""

from __future__ import annotations

import random
from dataclasses import dataclass

from core.models import ErrorClass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_interval: float = 1.0
    backoff_coefficient: float = 2.0
    maximum_interval: float = 60.0
    maximum_attempts: int = 3
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.maximum_attempts < 1:
            raise ValueError("maximum_attempts must be at least 1")
        if self.initial_interval < 0 or self.maximum_interval < self.initial_interval:
            raise ValueError("intervals must satisfy 0 <= initial_interval <= maximum_interval")
        if self.backoff_coefficient < 1:
            raise ValueError("backoff_coefficient must be at least 1")

    def next_delay(self, attempt: int, error_class: ErrorClass, rng: random.Random | None = None) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None when the task must stop here."""
        if error_class is ErrorClass.PERMANENT or attempt >= self.maximum_attempts:
            return None
        exponent = min(attempt - 1, 64)  # past this the cap has long applied; avoids float overflow
        base = min(self.initial_interval * self.backoff_coefficient**exponent, self.maximum_interval)
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))
