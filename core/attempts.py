"""Runs handler calls under a time limit on a replaceable thread, so a hung handler never costs capacity.

Each calling thread (a worker's task thread, a Functions invocation) has one executor thread. A batch of calls
is handed to it at once and the caller sleeps until the batch is done or the running call passes its limit -
one hand-off per batch, not per call. A call past its limit is reported as timed out and its executor thread
is abandoned: Python cannot kill a thread, but nothing waits for it any more and whatever it returns is
dropped; the rest of the batch goes on a fresh thread. (A subprocess could be killed, but it would cost a
process start or a pickling round trip per call and lose the handlers' in-process resources; the hung
thread's own stop signal asks a cooperative handler to give up.)

A caller that can be replaced (a worker's task thread: it passes a `Resume`, what it would do with the results)
runs batches of calls known to be fast - every call's kind averaged under `INLINE_SECONDS` and a hundredth of its
limit - on its own thread, without the hand-off. The `Watchdog` (a heartbeat beat) still holds each of those calls
to its limit: one that runs past it is timed out and the calling thread itself is abandoned; a fresh thread runs
the rest of the batch and hands all the results to the `Resume`, so the batch is recorded and settled, and the
worker starts a replacement thread. If the abandoned thread ever returns, `Abandoned` unwinds it.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from core.heartbeat import Beat

log = logging.getLogger("coremachine.attempts")

T = TypeVar("T")

IDLE_EXIT_SECONDS = 0.5
"""An executor thread with nothing to run for this long ends; the next batch starts a new one."""

INLINE_SECONDS = 0.01
"""A batch runs on the caller's own thread only if each call's kind averages under this (and a hundredth of
its limit)."""

INLINE_SHARE = 0.01

WATCH_SECONDS = 0.2
"""How often calls run on their caller's thread are checked against their limits."""

SMOOTHING = 0.3


class Abandoned(BaseException):
    """A call run on its caller's thread passed its limit and another thread took the batch over: the calling
    thread must unwind without recording or settling anything, and end."""


@dataclass(frozen=True, slots=True)
class Returned(Generic[T]):
    value: T


@dataclass(frozen=True, slots=True)
class Raised:
    error: Exception


@dataclass(frozen=True, slots=True)
class TimedOut:
    limit_seconds: float


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One handler call: what to run, how long it may take, and the signal that asks it to stop."""

    run: Callable[[], T]
    limit_seconds: float
    stop: threading.Event = field(default_factory=threading.Event)
    kind: str = ""
    """What is called (a task type): its running mean duration decides whether it may run without a hand-off."""


Result = Returned[T] | Raised | TimedOut
Resume = Callable[[list[Result[T]]], None]
"""What a replaceable caller would do with a batch's results; run on another thread if the caller is abandoned."""


@dataclass(eq=False)
class _Inline(Generic[T]):
    """A batch running on its caller's thread, as the watchdog sees it."""

    calls: Sequence[Call[T]]
    resume: Resume[T]
    thread: threading.Thread
    context: contextvars.Context
    results: list[Result[T] | None]
    current: int = -1
    started: float = 0.0
    taken_over: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Run(Generic[T]):
    calls: Sequence[Call[T]]
    results: list[Result[T] | None]
    contexts: list[contextvars.Context]
    owner: _Executor[T] | None = None
    current: int = -1
    started: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    observe: Callable[[str, float], None] | None = None


class _Executor(Generic[T]):
    """A daemon thread running the calls of a run in order; it exits when the run abandons it."""

    def __init__(self, name: str) -> None:
        self._inbox: queue.SimpleQueue[tuple[_Run[T], int, threading.Event] | None] = queue.SimpleQueue()
        self._gate = threading.Lock()
        self._closed = False
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def submit(self, run: _Run[T], start: int, done: threading.Event) -> bool:
        """Hand over a run; False if this thread has already ended (idle too long), so use a new one."""
        with self._gate:
            if self._closed:
                return False
            self._inbox.put((run, start, done))
            return True

    def close(self) -> None:
        self._inbox.put(None)

    def _next(self) -> tuple[_Run[T], int, threading.Event] | None:
        """The next run, or None to end: closed, or idle for `IDLE_EXIT_SECONDS` with nothing handed over."""
        while True:
            try:
                item = self._inbox.get(timeout=IDLE_EXIT_SECONDS)
            except queue.Empty:
                with self._gate:
                    if self._inbox.empty():
                        self._closed = True
                        return None
                continue
            if item is None:
                with self._gate:
                    self._closed = True
            return item

    def _loop(self) -> None:
        while (item := self._next()) is not None:
            run, start, done = item
            for index in range(start, len(run.calls)):
                with run.lock:
                    if run.owner is not self:
                        return
                    run.current, run.started = index, time.monotonic()
                result: Result[T]
                try:
                    result = Returned(run.contexts[index].run(run.calls[index].run))
                except Exception as exc:
                    result = Raised(exc)
                with run.lock:
                    if run.owner is not self:
                        log.warning("an abandoned handler call returned after its time limit; its result is dropped")
                        return
                    run.results[index] = result
                    elapsed = time.monotonic() - run.started
                if run.observe is not None:
                    run.observe(run.calls[index].kind, elapsed)
            done.set()


class TimeLimits:
    """Runs batches of calls, each under its own limit; thread-safe (one executor per calling thread)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._abandoned = 0
        self._lock = threading.Lock()
        self._count = 0
        self._seconds: dict[str, float] = {}
        self._inline: list[_Inline[Any]] = []
        self._taking_over = 0

    @property
    def abandoned_threads(self) -> int:
        """Executor threads given up on because a call hung past its limit (they may still be running)."""
        return self._abandoned

    def run(self, calls: Sequence[Call[T]], resume: Resume[T] | None = None) -> list[Result[T]]:
        """Each call's result, in order. With `resume` (the caller can be replaced) a batch of known-fast calls
        runs on this thread; if one passes its limit this thread gets `Abandoned` whenever the call returns, and
        `resume` gets the results on another thread instead."""
        if resume is not None and calls and self._fast(calls):
            return self._run_inline(calls, resume)
        # Each call sees the caller's context variables (log fields, bound traces), in a copy of its own.
        run: _Run[T] = _Run(calls, [None] * len(calls), [contextvars.copy_context() for _ in calls],
                            observe=self._observe)
        start = 0
        while start < len(calls):
            done = threading.Event()
            while True:
                executor: _Executor[T] = self._executor()
                with run.lock:
                    run.owner, run.current = executor, -1
                if executor.submit(run, start, done):
                    break
                self._local.executor = None
            timed_out = self._wait(run, done)
            if timed_out is None:
                break
            start = timed_out + 1
        return [r if r is not None else TimedOut(0.0) for r in run.results]

    def _wait(self, run: _Run[T], done: threading.Event) -> int | None:
        """Wait for the run; None when it finished, else the index of the call that passed its limit."""
        while not done.wait(self._time_left(run)):
            with run.lock:
                index = run.current
                if index < 0 or run.results[index] is not None:
                    continue
                call = run.calls[index]
                if time.monotonic() - run.started < call.limit_seconds:
                    continue
                run.owner = None
                run.results[index] = TimedOut(call.limit_seconds)
            call.stop.set()
            abandoned: _Executor[T] | None = getattr(self._local, "executor", None)
            if abandoned is not None:  # renamed so thread dumps (and worker shutdown checks) tell it apart
                abandoned.thread.name = f"abandoned-{abandoned.thread.name}"
            self._local.executor = None
            with self._lock:
                self._abandoned += 1
            log.error("a handler ran past its time limit of %ss; its thread is abandoned and replaced",
                      call.limit_seconds, extra={"abandoned_threads": self._abandoned})
            return index
        return None

    @staticmethod
    def _time_left(run: _Run[T]) -> float:
        with run.lock:
            index, started = run.current, run.started
        if index < 0:
            return 0.05
        return max(0.01, started + run.calls[index].limit_seconds - time.monotonic())

    def _fast(self, calls: Sequence[Call[T]]) -> bool:
        seconds = self._seconds
        for call in calls:
            mean = seconds.get(call.kind) if call.kind else None
            if mean is None or mean > min(INLINE_SECONDS, call.limit_seconds * INLINE_SHARE):
                return False
        return True

    def _observe(self, kind: str, elapsed: float) -> None:
        if not kind:
            return
        with self._lock:
            old = self._seconds.get(kind)
            self._seconds[kind] = elapsed if old is None else old + SMOOTHING * (elapsed - old)

    def _run_inline(self, calls: Sequence[Call[T]], resume: Resume[T]) -> list[Result[T]]:
        batch: _Inline[T] = _Inline(calls, resume, threading.current_thread(), contextvars.copy_context(),
                                    [None] * len(calls))
        with self._lock:
            self._inline.append(batch)
        try:
            for index, call in enumerate(calls):
                with batch.lock:
                    if batch.taken_over:
                        raise Abandoned
                    batch.current, batch.started = index, time.monotonic()
                result: Result[T]
                try:
                    result = Returned(contextvars.copy_context().run(call.run))
                except Exception as exc:
                    result = Raised(exc)
                with batch.lock:
                    if batch.taken_over:
                        log.warning("a handler call returned after its time limit; its result is dropped and "
                                    "its abandoned thread ends")
                        raise Abandoned
                    batch.results[index] = result
                    elapsed = time.monotonic() - batch.started
                self._observe(call.kind, elapsed)
        finally:
            self._unwatch(batch)
        return [r if r is not None else TimedOut(0.0) for r in batch.results]

    def _unwatch(self, batch: _Inline[Any]) -> None:
        with self._lock:
            if batch in self._inline:
                self._inline.remove(batch)

    @property
    def taking_over(self) -> int:
        """Abandoned batches still being finished on another thread."""
        return self._taking_over

    @property
    def watching(self) -> bool:
        """Some batch runs on its caller's thread."""
        return bool(self._inline)

    def check(self) -> None:
        """Time out every call run on its caller's thread that is past its limit, and take its batch over."""
        now = time.monotonic()
        with self._lock:
            batches = list(self._inline)
        for batch in batches:
            with batch.lock:
                index = batch.current
                if batch.taken_over or index < 0 or batch.results[index] is not None:
                    continue
                call = batch.calls[index]
                if now - batch.started < call.limit_seconds:
                    continue
                batch.taken_over = True
                batch.results[index] = TimedOut(call.limit_seconds)
            self._unwatch(batch)
            call.stop.set()
            self._observe(call.kind, call.limit_seconds)
            name = batch.thread.name
            batch.thread.name = f"abandoned-{name}"
            with self._lock:
                self._abandoned += 1
                self._taking_over += 1
            log.error("a handler ran past its time limit of %ss; its thread is abandoned and replaced",
                      call.limit_seconds, extra={"abandoned_threads": self._abandoned})
            threading.Thread(target=batch.context.run, args=(self._take_over, batch, index), name=name,
                             daemon=True).start()

    def _take_over(self, batch: _Inline[T], index: int) -> None:
        """On a fresh thread: run the rest of an abandoned batch, then do what its caller would have done."""
        rest = batch.calls[index + 1:]
        done = [r if r is not None else TimedOut(0.0) for r in batch.results[:index + 1]]
        try:
            batch.resume(done + (self.run(rest) if rest else []))
        except Exception:
            log.exception("finishing a batch whose handler thread was abandoned failed")
        finally:
            self.close_thread()
            with self._lock:
                self._taking_over -= 1

    def close_thread(self) -> None:
        """The calling thread is done with handlers: let its executor thread end."""
        executor: _Executor[object] | None = getattr(self._local, "executor", None)
        self._local.executor = None
        if executor is not None:
            executor.close()
            executor.thread.join(1.0)

    def _executor(self) -> _Executor[T]:
        executor: _Executor[T] | None = getattr(self._local, "executor", None)
        if executor is None or not executor.thread.is_alive():
            with self._lock:
                self._count += 1
                name = f"coremachine-handler-{self._count}"
            executor = _Executor[T](name)
            self._local.executor = executor
        return executor


class Watchdog(Beat):
    """The heartbeat beat that holds calls run on their caller's thread to their limits."""

    period = WATCH_SECONDS

    def __init__(self, limits: TimeLimits) -> None:
        self._limits = limits

    @property
    def busy(self) -> bool:
        return self._limits.watching

    def __call__(self) -> None:
        self._limits.check()
