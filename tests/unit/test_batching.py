"""The worker's batch sizing: fast kinds share a batch, slow or unknown kinds run alone and the rest go back."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.batching import DurationEstimates, message_kind, message_weight, weighted_kinds
from core.models import ReceivedMessage


def msg(task_type: str, n: int = 0) -> ReceivedMessage:
    return ReceivedMessage("tasks", f"m{n}", {"kind": "task", "task_type": task_type}, {}, 1, f"lock{n}")


def test_an_unknown_kind_runs_alone_and_the_rest_go_back() -> None:
    estimates = DurationEstimates()
    messages = [msg("ingest.process", i) for i in range(5)]
    run, rest = estimates.split(messages, budget_seconds=0.25)
    assert run == messages[:1] and rest == messages[1:]
    assert estimates.batch_size("ingest.process", 0.25, 32) == 1


def test_fast_kinds_fill_the_budget_and_slow_ones_stop_it() -> None:
    estimates = DurationEstimates()
    estimates.observe(["noop"] * 10, elapsed=0.01)  # 1 ms each
    estimates.observe(["slow"], elapsed=2.0)
    fast = [msg("noop", i) for i in range(40)]
    run, rest = estimates.split(fast, budget_seconds=0.25)
    assert len(run) == 40 and rest == []
    mixed = [msg("noop", 1), msg("noop", 2), msg("slow", 3), msg("noop", 4)]
    run, rest = estimates.split(mixed, budget_seconds=0.25)
    assert [m.message_id for m in run] == ["m1", "m2"] and [m.message_id for m in rest] == ["m3", "m4"]
    run, rest = estimates.split([msg("slow", 5), msg("slow", 6)], budget_seconds=0.25)
    assert len(run) == 1 and len(rest) == 1, "a slow message runs even though it alone exceeds the budget"
    assert estimates.batch_size("noop", 0.25, 32) == 32 and estimates.batch_size("slow", 0.25, 32) == 1


def test_estimates_follow_a_kind_that_slows_down() -> None:
    estimates = DurationEstimates()
    estimates.observe(["t"], 0.001)
    for _ in range(20):
        estimates.observe(["t"], 1.0)
    assert (estimates.get("t") or 0) > 0.9


def test_malformed_bodies_count_as_instant() -> None:
    bad = ReceivedMessage("tasks", "x", "not an object", {}, 1, "l")  # type: ignore[arg-type]
    assert message_kind(bad) == "(malformed)"
    run, rest = DurationEstimates().split([bad, bad], 0.25)
    assert len(run) == 2 and rest == []


def batch(task_type: str, count: int, n: int = 0) -> ReceivedMessage:
    body = {"kind": "task", "task_type": task_type, "first": 0, "count": count}
    return ReceivedMessage("tasks", f"b{n}", body, {}, 1, f"lock{n}")


def test_a_message_of_several_tasks_weighs_as_many_tasks() -> None:
    estimates = DurationEstimates()
    estimates.observe(weighted_kinds([batch("noop", 16), msg("noop")]), elapsed=0.017)  # 1 ms per task
    assert estimates.get("noop") == pytest.approx(0.001)
    assert [message_weight(m) for m in (batch("noop", 16), msg("noop"), batch("noop", True))] == [16, 1, 1]
    run, rest = estimates.split([batch("noop", 16, i) for i in range(20)], budget_seconds=0.05)
    assert len(run) == 3 and len(rest) == 17  # 48 ms of tasks fit 50 ms, not 64
    assert estimates.batch_size("noop", 0.05, 32, weight=16) == 2  # 32 tasks at most, as two messages of 16
    assert estimates.batch_size("noop", 10.0, 512, max_messages=64) == 64  # single messages: at most 64 locks held


def test_batches_of_known_slow_tasks_or_delivered_again_are_split_and_the_rest_run() -> None:
    estimates = DurationEstimates()
    estimates.observe(["noop"], elapsed=0.001)
    estimates.observe(["slow"], elapsed=0.1)  # 16 of them take 1.6 s
    fast, slow, unknown, single = batch("noop", 16, 1), batch("slow", 16, 2), batch("new", 16, 3), msg("new", 4)
    again = replace(batch("noop", 16, 5), delivery_count=2)
    run, split = estimates.too_slow([fast, slow, unknown, single, again], split_seconds=1.0)
    # A kind with no timing runs whole (that batch times it); a single message is never split.
    assert run == [fast, unknown, single] and split == [slow, again]


def test_a_thread_takes_at_most_its_most_tasks_however_the_messages_carry_them() -> None:
    estimates = DurationEstimates()
    estimates.observe(["noop"], elapsed=0.00001)
    messages = [msg("noop", 0)] + [batch("noop", 16, i) for i in range(1, 20)]
    run, rest = estimates.split(messages, budget_seconds=10.0, max_tasks=128)
    assert sum(message_weight(m) for m in run) == 113 and len(run) == 8 and len(rest) == 12
    [alone], _ = estimates.split([batch("noop", 200, 1), msg("noop")], budget_seconds=10.0, max_tasks=128)
    assert message_weight(alone) == 200  # never empty
