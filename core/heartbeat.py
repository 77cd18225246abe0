"""The heartbeat: one daemon thread that keeps what a worker holds alive while its handlers run.

Each `Beat` is called every `period` seconds while the heartbeat runs: renew the queue locks of messages a
worker holds (`MessageLocks`), renew the leases of tasks it runs and notice their job's cancellation
(`TaskLeases`), and hold handlers run on a task thread itself to their time limits (`core.attempts.Watchdog`).
Handlers never renew anything themselves. (A finalize renews its own claim on the job row
while it runs: `core/keepalive.py`.) The thread starts when something is held and stops after a quiet
spell, so idle engines cost no thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.models import ClaimedTask, JobStatus, ReceivedMessage
from core.ports import StateStore, Transport

log = logging.getLogger("coremachine.heartbeat")

IDLE_EXIT_SECONDS = 0.5
MIN_PERIOD_SECONDS = 0.05


class Beat:
    """Something the heartbeat calls every `period` seconds; `busy` says whether it holds anything."""

    period: float = 1.0

    @property
    def busy(self) -> bool:
        raise NotImplementedError

    def __call__(self) -> None:
        raise NotImplementedError


@dataclass
class _Scheduled:
    beat: Beat
    due: float = 0.0


class Heartbeat:
    """Runs the registered beats, each on its own period, on one thread (started on demand)."""

    def __init__(self, name: str = "heartbeat") -> None:
        self._name = name
        self._beats: list[_Scheduled] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, beat: Beat) -> None:
        with self._lock:
            self._beats.append(_Scheduled(beat, time.monotonic() + beat.period))

    def remove(self, beat: Beat) -> None:
        with self._lock:
            self._beats = [s for s in self._beats if s.beat is not beat]

    def poke(self) -> None:
        """Something is held: make sure the thread runs."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=f"coremachine-{self._name}", daemon=True)
                self._thread.start()

    def stop_if_idle(self, timeout: float = 2.0) -> None:
        """End the thread now if nothing is held (a worker stopping); it starts again when something is."""
        with self._lock:
            thread = self._thread
        if thread is None:
            return
        self._wake.set()
        thread.join(timeout)

    def _run(self) -> None:
        idle_since: float | None = None
        while True:
            now = time.monotonic()
            with self._lock:
                scheduled = list(self._beats)
                busy = any(s.beat.busy for s in scheduled)
                if not busy:
                    idle_since = idle_since or now
                    if now - idle_since >= IDLE_EXIT_SECONDS or self._wake.is_set():
                        self._wake.clear()
                        self._thread = None
                        return
                else:
                    idle_since = None
                    self._wake.clear()  # a stop request only ends an idle heartbeat
            for item in scheduled:
                if item.due <= now:
                    item.due = now + max(MIN_PERIOD_SECONDS, item.beat.period)
                    if item.beat.busy:
                        self._beat(item.beat)
            next_due = min((s.due for s in scheduled), default=now + 1.0)
            self._wake.wait(min(1.0, max(MIN_PERIOD_SECONDS, next_due - time.monotonic())))

    @staticmethod
    def _beat(beat: Beat) -> None:
        try:
            beat()
        except Exception:
            log.warning("heartbeat %s failed; trying again next period", type(beat).__name__, exc_info=True)


class MessageLocks(Beat):
    """Queue messages a worker has received and not settled yet: their locks are renewed, so a message waiting
    behind a slow one in its batch, or a long handler's own message, is never redelivered while it is held."""

    def __init__(self, transport: Transport, lock_seconds: float) -> None:
        self._transport = transport
        self.period = max(MIN_PERIOD_SECONDS, lock_seconds / 3)
        self._held: dict[str, ReceivedMessage] = {}
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        return bool(self._held)

    def hold(self, messages: Sequence[ReceivedMessage]) -> None:
        with self._lock:
            for message in messages:
                self._held[message.lock_token] = message

    def drop(self, messages: Sequence[ReceivedMessage]) -> None:
        with self._lock:
            for message in messages:
                self._held.pop(message.lock_token, None)

    def __call__(self) -> None:
        with self._lock:
            held = list(self._held.values())
        if held:
            self._transport.renew_locks(held)


@dataclass(frozen=True, slots=True)
class LeaseConfig:
    """How task claims are kept. `lease_seconds`: how long a claim lasts without renewal, so how soon a dead
    worker's task is taken back (None: as long as the task's time limit; never longer than it). The heartbeat
    renews every third of it. `cancel_check_seconds`: how often running tasks' jobs are checked for cancel."""

    lease_seconds: float | None = None
    cancel_check_seconds: float = 0.5


@dataclass
class _Claim:
    claim: ClaimedTask
    stop: threading.Event = field(default_factory=threading.Event)


class TaskLeases(Beat):
    """Tasks a worker has claimed: their leases are renewed every third of the lease, and their job is checked
    every `cancel_check_seconds` (a cheap read) so a cancelled job's handlers see `context.cancelled` at once."""

    def __init__(self, store: StateStore, lease_seconds: float | None, cancel_check_seconds: float = 0.5) -> None:
        self._store = store
        self._lease_seconds = lease_seconds
        self.period = max(MIN_PERIOD_SECONDS, cancel_check_seconds)
        self._claims: dict[str, _Claim] = {}
        self._lock = threading.Lock()
        self._last_renewal = time.monotonic()

    @property
    def busy(self) -> bool:
        return bool(self._claims)

    def hold(self, claims: Sequence[ClaimedTask]) -> dict[str, threading.Event]:
        """Start keeping these claims; returns each task's stop signal (set when its job stops processing or its
        lease is lost)."""
        with self._lock:
            for claim in claims:
                self._claims[claim.task_id] = _Claim(claim)
            return {claim.task_id: self._claims[claim.task_id].stop for claim in claims}

    def drop(self, claims: Sequence[ClaimedTask]) -> None:
        with self._lock:
            for claim in claims:
                held = self._claims.get(claim.task_id)
                if held is not None and held.claim.attempt == claim.attempt:
                    del self._claims[claim.task_id]

    def renew_seconds(self) -> float:
        with self._lock:
            limits = [min(self._lease_seconds or c.claim.timeout_seconds, c.claim.timeout_seconds)
                      for c in self._claims.values()]
        return max(MIN_PERIOD_SECONDS, min(limits, default=60.0) / 3)

    def __call__(self) -> None:
        with self._lock:
            held = list(self._claims.values())
        if not held:
            return
        stopped: list[_Claim]
        if time.monotonic() - self._last_renewal >= self.renew_seconds():
            self._last_renewal = time.monotonic()
            renewed = self._store.renew_task_leases([c.claim for c in held], self._lease_seconds)
            stopped = [c for c in held if renewed.get(c.claim.task_id) is not JobStatus.PROCESSING]
        else:
            live = self._store.live_jobs(sorted({c.claim.job_id for c in held}))
            stopped = [c for c in held if c.claim.job_id not in live]
        for c in stopped:
            if not c.stop.is_set():
                log.info("task should stop: its job is no longer processing or its lease was lost",
                         extra={"job_id": c.claim.job_id, "task_id": c.claim.task_id, "attempt": c.claim.attempt})
                c.stop.set()
