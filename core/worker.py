"""A worker: threads that receive job and task messages, hand them to CoreMachine and settle them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from core.attempts import Abandoned
from core.batching import DurationEstimates, message_kind, message_weight, weighted_kinds
from core.engine import CoreMachine
from core.heartbeat import MessageLocks
from core.janitor import Janitor
from core.models import JOBS_QUEUE, TASKS_QUEUE, ReceivedMessage
from core.ports import Transport
from core.settlement import Disposition, Settlement, give_back

log = logging.getLogger("coremachine.worker")

Resume = Callable[[list[Settlement]], None]
Handler = Callable[[Sequence[ReceivedMessage], Resume | None], list[Settlement]]


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    concurrency: int = 2
    jobs_threads: int = 2
    max_batch: int = 32
    """Most tasks a task thread takes in one batch (a message of several tasks counts as that many)."""
    target_batch_seconds: float = 0.25
    max_messages: int = 64
    """Most messages a task thread receives at once: each is a lock it holds, and renews, until it is settled."""
    split_seconds: float = 1.0
    """A message of several tasks whose tasks are estimated to take longer than this together is split into one
    message per task (`DurationEstimates.too_slow`)."""
    wait_seconds: float = 1.0
    janitor_interval_seconds: float = 5.0
    lock_seconds: float = 60.0
    jobs_queue: str = JOBS_QUEUE
    tasks_queue: str = TASKS_QUEUE

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.jobs_threads < 1:
            raise ValueError("jobs_threads must be at least 1")
        if self.max_batch < 1 or self.max_messages < 1:
            raise ValueError("max_batch and max_messages must be at least 1")


@dataclass
class WorkerStats:
    job_messages: int = 0
    task_messages: int = 0
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, jobs: int = 0, tasks: int = 0, failures: int = 0) -> None:
        with self._lock:
            self.job_messages += jobs
            self.task_messages += tasks
            self.failures += failures


class Worker:
    """`jobs_threads` threads for job messages, `concurrency` for task messages and, if given, a janitor thread.

    Batches adapt per message kind (`core/batching.py`): fast tasks are claimed and committed many at a time
    (one commit per batch), slow ones one by one, so a batch never holds leases much longer than
    `target_batch_seconds` and slow tasks spread over every thread and process.
    `stop()` lets each thread finish the batch it holds, then returns.

    A task thread whose handler, run on the thread itself, hangs past its time limit is abandoned: the engine
    finishes its batch on another thread and hands the settlements back (`_taken_over`), which settles them and
    starts a replacement thread, so the worker keeps its concurrency.
    """

    def __init__(
        self, engine: CoreMachine, transport: Transport, config: WorkerConfig | None = None,
        janitor: Janitor | None = None,
    ) -> None:
        self._engine = engine
        self._transport = transport
        self._config = config or WorkerConfig()
        self._janitor = janitor
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()
        self._estimates = DurationEstimates()
        self._locks = MessageLocks(transport, self._config.lock_seconds)
        engine.heartbeat.add(self._locks)
        self.stats = WorkerStats()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        if self._threads:
            raise RuntimeError("worker already started")
        cfg = self._config
        for i in range(cfg.jobs_threads):
            self._spawn(f"coremachine-jobs-{i}", self._loop, cfg.jobs_queue, self._handle_jobs, 8)
        for i in range(cfg.concurrency):
            self._spawn(f"coremachine-tasks-{i}", self._loop, cfg.tasks_queue, self._engine.handle_task_messages,
                        cfg.max_batch)
        if self._janitor is not None:
            self._spawn("coremachine-janitor", self._janitor_loop)

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        while deadline is None or time.monotonic() < deadline:
            with self._threads_lock:  # an abandoned thread's replacement may join the list meanwhile
                pending = [t for t in self._threads if t.is_alive() and not t.name.startswith("abandoned-")]
            if pending:
                for thread in pending:
                    thread.join(left())
            elif self._engine.abandoned_batches_in_flight:
                time.sleep(0.05)
            else:
                break
        with self._threads_lock:
            self._threads = []
        self._engine.heartbeat.remove(self._locks)
        self._engine.heartbeat.stop_if_idle()

    def run_until(self, done: Callable[[], bool], timeout: float, poll_seconds: float = 0.2) -> bool:
        """Start, wait until `done()` or the timeout, stop. True if `done()` became true."""
        self.start()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if done():
                    return True
                time.sleep(poll_seconds)
            return done()
        finally:
            self.stop()

    def _spawn(self, name: str, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._threads_lock:
            self._threads.append(thread)
        thread.start()

    def _handle_jobs(self, messages: Sequence[ReceivedMessage], resume: Resume | None) -> list[Settlement]:
        return self._engine.handle_job_messages(messages)

    def _loop(self, queue: str, handle: Handler, max_batch: int, held: Sequence[ReceivedMessage] = ()) -> None:
        try:
            self._receive_and_run(queue, handle, max_batch, list(held))
        except Abandoned:
            log.warning("a task thread ends: its handler ran past its time limit and a replacement finished its batch")
        finally:
            self._engine.release_thread()

    def _taken_over(
        self, queue: str, handle: Handler, max_batch: int, messages: Sequence[ReceivedMessage],
        held: list[ReceivedMessage], started: float, abandoned: threading.Thread, settlements: list[Settlement],
    ) -> None:
        """On the thread that finished an abandoned thread's batch: settle it and start the replacement thread
        (fresh, with the messages the abandoned thread still held)."""
        self._finish(queue, messages, settlements)
        self._estimates.observe(weighted_kinds(messages), time.perf_counter() - started)
        with self._threads_lock:
            if abandoned in self._threads:
                self._threads.remove(abandoned)
        self._spawn(threading.current_thread().name, self._loop, queue, handle, max_batch, held)

    def _receive_and_run(self, queue: str, handle: Handler, max_batch: int, held: list[ReceivedMessage]) -> None:
        """Receive about as many messages as fit the batch budget and run them. What was received beyond the
        budget is handed back uncounted where the transport can; where it cannot (Service Bus) this thread keeps
        it (its locks renewed) and runs it next, so no delivery is ever counted for work that was not started."""
        batch, pause = 1, 0.0
        while held or not self._stop.is_set():
            if held:
                messages, held = held, []
            else:
                if pause:
                    self._stop.wait(pause)
                try:
                    messages = self._transport.receive(queue, batch, self._config.wait_seconds)
                except Exception:
                    log.exception("receive failed", extra={"queue": queue})
                    pause = min(5.0, max(0.2, pause * 2))
                    continue
                pause = 0.0
                if not messages:
                    continue
                self._locks.hold(messages)
                self._engine.heartbeat.poke()
            budget = self._config.target_batch_seconds
            run, rest = self._estimates.split(messages, budget, max_batch)
            if rest and self._transport.releases_uncounted:
                self._locks.drop(rest)
                self._release(rest)
            elif rest:
                held = rest
            run, slow = self._estimates.too_slow(run, self._config.split_seconds)
            if slow:
                self._process(queue, self._split, slow, None)
            if not run:
                continue
            started = time.perf_counter()
            resume = partial(self._taken_over, queue, handle, max_batch, run, held, started,
                             threading.current_thread())
            self._process(queue, handle, run, resume)
            self._estimates.observe(weighted_kinds(run), time.perf_counter() - started)
            batch = self._estimates.batch_size(message_kind(run[-1]), budget, max_batch, message_weight(run[-1]),
                                               self._config.max_messages)

    def _split(self, messages: Sequence[ReceivedMessage], resume: Resume | None) -> list[Settlement]:
        return self._engine.split_task_messages(messages)

    def _process(
        self, queue: str, handle: Handler, messages: Sequence[ReceivedMessage], resume: Resume | None
    ) -> None:
        try:
            settlements = handle(messages, resume)
        except Exception as exc:
            # The engine settles each message on its own; reaching here is a bug, not a message's fault.
            log.exception("handling a batch failed unexpectedly; giving it back for redelivery",
                          extra={"queue": queue, "messages": len(messages)})
            settlements = [give_back(m, f"{type(exc).__name__}: {exc}") for m in messages]
        self._finish(queue, messages, settlements)

    def _finish(self, queue: str, messages: Sequence[ReceivedMessage], settlements: Sequence[Settlement]) -> None:
        self.stats.add(failures=sum(1 for s in settlements if s.disposition is Disposition.ABANDON))
        self._settle(settlements)
        self._locks.drop(messages)
        if queue == self._config.jobs_queue:
            self.stats.add(jobs=len(messages))
        else:
            self.stats.add(tasks=len(messages))

    def _settle(self, settlements: Sequence[Settlement]) -> None:
        """Completes go in one call; if that fails, one by one. Each other settlement is tried on its own."""
        completes = [s.message for s in settlements if s.disposition is Disposition.COMPLETE]
        if completes and not self._try("complete", partial(self._transport.complete, completes)):
            for message in completes if len(completes) > 1 else ():
                self._try("complete", partial(self._transport.complete, [message]))
        for s in settlements:
            if s.disposition is Disposition.DEAD_LETTER:
                self._try("dead-letter", partial(self._transport.dead_letter, s.message, s.reason, s.description))
            elif s.disposition is Disposition.ABANDON:
                self._try("abandon", partial(self._transport.abandon, s.message, s.delay_seconds))

    @staticmethod
    def _try(action: str, call: Callable[[], None]) -> bool:
        try:
            call()
        except Exception:
            log.exception("%s failed; the message's lock will lapse and it will be redelivered", action)
            return False
        return True

    def _release(self, messages: Sequence[ReceivedMessage]) -> None:
        try:
            self._transport.release(messages)
        except Exception:
            log.exception("releasing unstarted messages failed; their locks will lapse and they will be redelivered")

    def _janitor_loop(self) -> None:
        assert self._janitor is not None
        while not self._stop.wait(self._config.janitor_interval_seconds):
            try:
                self._janitor.run_once()
            except Exception:
                log.exception("janitor pass failed")
