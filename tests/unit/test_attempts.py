"""Time limits on a replaceable thread: a hung call times out, the rest of its batch still runs elsewhere - also
when a known-fast batch ran on its caller's own thread and the caller is the thread replaced."""

from __future__ import annotations

import threading
import time

import pytest

from core import attempts
from core.attempts import Abandoned, Call, Raised, Result, Returned, TimedOut, TimeLimits, Watchdog

pytestmark = pytest.mark.timeout(30)


def test_calls_of_a_batch_run_in_order_on_one_handler_thread() -> None:
    limits = TimeLimits()
    seen: list[str] = []

    def call(value: int) -> Call[int]:
        def run() -> int:
            seen.append(threading.current_thread().name)
            return value

        return Call(run, 5.0)

    results = limits.run([call(1), call(2), call(3)])
    assert results == [Returned(1), Returned(2), Returned(3)]
    assert len(set(seen)) == 1 and seen[0] != threading.current_thread().name
    limits.close_thread()


def test_a_hung_call_times_out_and_the_rest_of_the_batch_runs_on_a_fresh_thread() -> None:
    limits = TimeLimits()
    forever = threading.Event()
    threads: list[str] = []

    def hang() -> int:
        threads.append(threading.current_thread().name)
        forever.wait()
        return -1

    def quick() -> int:
        threads.append(threading.current_thread().name)
        return 7

    def boom() -> int:
        raise OSError("disk gone")

    hung = Call(hang, 0.3)
    started = time.monotonic()
    results = limits.run([Call(quick, 5.0), hung, Call(quick, 5.0), Call(boom, 5.0)])
    assert time.monotonic() - started < 3.0
    assert results[0] == Returned(7) and results[1] == TimedOut(0.3) and results[2] == Returned(7)
    assert isinstance(results[3], Raised) and isinstance(results[3].error, OSError)
    assert hung.stop.is_set(), "the hung call is asked to stop"
    assert threads[0] == threads[1] != threads[2], "the batch went on without the hung thread"
    assert limits.abandoned_threads == 1
    assert f"abandoned-{threads[1]}" in [t.name for t in threading.enumerate()]
    forever.set()  # the abandoned call returns late: its result is dropped, its thread ends
    assert limits.run([Call(quick, 5.0)]) == [Returned(7)]
    limits.close_thread()


def test_calls_see_the_callers_context_variables() -> None:
    import contextvars

    field: contextvars.ContextVar[str] = contextvars.ContextVar("field", default="unset")
    limits = TimeLimits()
    token = field.set("job-42")
    try:
        assert limits.run([Call(field.get, 5.0)]) == [Returned("job-42")]
    finally:
        field.reset(token)
        limits.close_thread()


def fast(kind: str, value: int = 1, limit: float = 5.0) -> Call[int]:
    return Call(lambda: value, limit, kind=kind)


def test_known_fast_calls_run_on_a_replaceable_callers_own_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attempts, "INLINE_SECONDS", 0.04)  # a loaded machine may stretch a no-op call a little
    limits = TimeLimits()
    here = threading.current_thread().name
    seen: list[str] = []

    def where() -> int:
        seen.append(threading.current_thread().name)
        return 0

    never = lambda results: pytest.fail("nothing hung")  # noqa: E731
    limits.run([Call(where, 5.0, kind="k")], never)
    assert seen == [seen[0]] and seen[0] != here, "a kind never timed runs on the handler thread first"
    limits.run([Call(where, 5.0, kind="k")] * 3, never)
    assert seen[1:] == [here] * 3, "a known-fast kind runs on the caller's thread"
    limits.run([Call(where, 5.0, kind="k")])
    assert seen[4] != here, "a caller that cannot be replaced always hands over"
    def nap() -> int:
        time.sleep(0.05)
        return 0

    slow = Call(nap, 5.0, kind="slow")
    limits.run([slow], never)
    limits.run([slow, Call(where, 5.0, kind="k")], never)
    assert seen[5] != here, "one slow kind in the batch keeps the hand-off"
    limits.close_thread()


def test_a_fast_call_that_hangs_on_its_callers_thread_is_timed_out_and_its_batch_finished_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(attempts, "INLINE_SECONDS", 0.1)  # a loaded machine may stretch a no-op call a little
    monkeypatch.setattr(attempts, "INLINE_SHARE", 0.1)
    limits = TimeLimits()
    watchdog = Watchdog(limits)
    for _ in range(3):
        limits.run([fast("k", limit=0.3)], lambda results: None)
    forever = threading.Event()
    ran: list[str] = []

    def hang() -> int:
        ran.append(threading.current_thread().name)
        forever.wait()
        return -1

    def quick() -> int:
        ran.append(threading.current_thread().name)
        return 7

    def boom() -> int:
        raise OSError("disk gone")

    hung = Call(hang, 0.3, kind="k")
    resumed: list[tuple[str, list[Result[int]]]] = []
    caller_end: list[str] = []

    def caller() -> None:
        try:
            limits.run([Call(quick, 0.3, kind="k"), hung, Call(quick, 0.3, kind="k"), Call(boom, 0.3, kind="k")],
                       lambda results: resumed.append((threading.current_thread().name, results)))
            caller_end.append("returned")
        except Abandoned:
            caller_end.append("abandoned")

    thread = threading.Thread(target=caller, name="task-thread")
    thread.start()
    deadline = time.monotonic() + 5
    while not resumed and time.monotonic() < deadline:
        if watchdog.busy:
            watchdog()
        time.sleep(0.02)
    [(name, results)] = resumed
    assert ran[:2] == ["task-thread", "task-thread"], "the batch started on the caller's own thread"
    assert results[:3] == [Returned(7), TimedOut(0.3), Returned(7)]
    assert isinstance(results[3], Raised) and isinstance(results[3].error, OSError)
    assert name == "task-thread" and thread.name == "abandoned-task-thread", "the batch went on elsewhere"
    assert hung.stop.is_set() and limits.abandoned_threads == 1 and not watchdog.busy
    forever.set()  # the hung call returns late: its thread unwinds without a result and ends
    thread.join(5)
    assert caller_end == ["abandoned"]
    assert limits.run([fast("k", limit=0.3)]) == [Returned(1)]
    limits.close_thread()
