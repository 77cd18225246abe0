"""Riding out an infrastructure outage inside one Functions invocation, before giving the message back.

The Functions host abandons a message at once when its function raises, with no backoff, and Service Bus
dead-letters it after MaxDeliveryCount (10) deliveries: a database outage of a few minutes would dead-letter
every message in flight. So a trigger that meets an outage (the state store or the transport unreachable)
waits inside the invocation, with exponential backoff and jitter, and tries again; only when its budget is
spent does it raise and let the host redeliver. The budget must stay below `functionTimeout` (and the host's
`maxAutoLockRenewalDuration`, which keeps the message locked meanwhile): with the default 480 s per delivery, a
10-minute outage costs two deliveries of ten. Re-running the engine on the same message is safe: every step
is a guarded, idempotent transition, exactly as on a redelivery.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg

from core.errors import StoreUnavailable, TransportError

log = logging.getLogger("coremachine.triggers")

T = TypeVar("T")


def is_outage(exc: BaseException) -> bool:
    """An error of the infrastructure, not of the message: the database or the transport cannot be reached."""
    if isinstance(exc, TransportError):
        return exc.transient
    return isinstance(exc, StoreUnavailable | psycopg.OperationalError)


@dataclass(frozen=True)
class OutageBackoff:
    """Retry `call` while it fails with an outage, for at most `budget_seconds` of waiting in all."""

    budget_seconds: float = 480.0
    initial_seconds: float = 2.0
    max_seconds: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    jitter: Callable[[], float] = field(default=random.random, repr=False)

    def run(self, call: Callable[[], T], extra: dict[str, object] | None = None) -> T:
        started = self.clock()
        delay = self.initial_seconds
        waits = 0
        while True:
            try:
                result = call()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                pause = min(delay, self.max_seconds) * (0.8 + 0.4 * self.jitter())
                spent = self.clock() - started
                if spent + pause > self.budget_seconds:
                    log.error("infrastructure still unavailable after %.0f s; giving the message back", spent,
                              extra={**(extra or {}), "error": str(exc)[:500], "waits": waits})
                    raise
                log.warning("infrastructure unavailable; retrying in %.1f s", pause,
                            extra={**(extra or {}), "error": str(exc)[:500], "waits": waits})
                self.sleep(pause)
                waits += 1
                delay *= 2
            else:
                if waits:
                    log.info("infrastructure back after %d waits", waits, extra=extra or {})
                return result
