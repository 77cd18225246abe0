"""Runs handler calls under a time limit on a replaceable thread, so a hung handler never costs capacity.

Each calling thread (a worker's task thread, a Functions invocation) has one executor thread. A batch of calls
is handed to it at once and the caller sleeps until the batch is done or the running call passes its limit -
one hand-off per batch, not per call. A call past its limit is reported as timed out and its executor thread
is abandoned: Python cannot kill a thread, but nothing waits for it any more and whatever it returns is
dropped; the rest of the batch goes on a fresh thread. (A subprocess could be killed, but it would cost a
process start or a pickling round trip per call and lose the handlers' in-process resources; the hung
thread's own stop signal asks a cooperative handler to give up.)
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger("coremachine.attempts")

T = TypeVar("T")

IDLE_EXIT_SECONDS = 0.5
"""An executor thread with nothing to run for this long ends; the next batch starts a new one."""


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


Result = Returned[T] | Raised | TimedOut


@dataclass
class _Run(Generic[T]):
    calls: Sequence[Call[T]]
    results: list[Result[T] | None]
    contexts: list[contextvars.Context]
    owner: _Executor[T] | None = None
    current: int = -1
    started: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


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
            done.set()


class TimeLimits:
    """Runs batches of calls, each under its own limit; thread-safe (one executor per calling thread)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._abandoned = 0
        self._lock = threading.Lock()
        self._count = 0

    @property
    def abandoned_threads(self) -> int:
        """Executor threads given up on because a call hung past its limit (they may still be running)."""
        return self._abandoned

    def run(self, calls: Sequence[Call[T]]) -> list[Result[T]]:
        # Each call sees the caller's context variables (log fields, bound traces), in a copy of its own.
        run: _Run[T] = _Run(calls, [None] * len(calls), [contextvars.copy_context() for _ in calls])
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
