"""Renew a claim while work runs: a daemon thread calls `renew` every few seconds until the work ends."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger("coremachine.keepalive")


@contextmanager
def renewing(renew: Callable[[], bool], every_seconds: float, what: str) -> Iterator[threading.Event]:
    """Call `renew` every `every_seconds` while the block runs. The event it yields is set once `renew` answers
    False (the claim is no longer ours): the work may stop early, and must not assume it still holds it."""
    lost = threading.Event()
    done = threading.Event()

    def loop() -> None:
        while not done.wait(every_seconds):
            try:
                if not renew():
                    log.warning("claim lost while the work still runs", extra={"claim": what})
                    lost.set()
                    return
            except Exception:  # a failed renewal is retried next period; the claim may still be live
                log.warning("renewing a claim failed; trying again", extra={"claim": what}, exc_info=True)

    thread = threading.Thread(target=loop, name=f"coremachine-renew-{what}", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        done.set()
        thread.join()
