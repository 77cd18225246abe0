"""Time limits on a replaceable thread: a hung call times out, the rest of its batch still runs elsewhere."""

from __future__ import annotations

import threading
import time

import pytest

from core.attempts import Call, Raised, Returned, TimedOut, TimeLimits

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
