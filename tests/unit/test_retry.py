"""RetryPolicy: "retry after N seconds" or "stop", exponential with jitter, bounded."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.jobs import Stage
from core.models import ErrorClass
from core.retry import RetryPolicy


@st.composite
def policies(draw: st.DrawFn) -> RetryPolicy:
    initial = draw(st.floats(0.0, 100.0))
    return RetryPolicy(
        initial_interval=initial,
        backoff_coefficient=draw(st.floats(1.0, 10.0)),
        maximum_interval=draw(st.floats(initial, 1000.0)),
        maximum_attempts=draw(st.integers(1, 50)),
        jitter=draw(st.floats(0.0, 1.0)),
    )


@given(policies(), st.integers(1, 60), st.sampled_from([ErrorClass.TRANSIENT, ErrorClass.UNKNOWN]), st.integers())
def test_delay_is_bounded_or_stops_at_the_last_attempt(
    policy: RetryPolicy, attempt: int, error_class: ErrorClass, seed: int
) -> None:
    delay = policy.next_delay(attempt, error_class, random.Random(seed))
    if attempt >= policy.maximum_attempts:
        assert delay is None
        return
    assert delay is not None
    base = min(policy.initial_interval * policy.backoff_coefficient ** (attempt - 1), policy.maximum_interval)
    assert 0.0 <= delay <= policy.maximum_interval * (1 + policy.jitter) + 1e-9
    assert base * (1 - policy.jitter) - 1e-9 <= delay <= base * (1 + policy.jitter) + 1e-9


@given(policies(), st.integers(1, 60))
def test_permanent_errors_never_retry(policy: RetryPolicy, attempt: int) -> None:
    assert policy.next_delay(attempt, ErrorClass.PERMANENT) is None


def test_exponential_without_jitter() -> None:
    policy = RetryPolicy(initial_interval=1, backoff_coefficient=2, maximum_interval=5, maximum_attempts=6, jitter=0)
    assert [policy.next_delay(a, ErrorClass.TRANSIENT) for a in range(1, 7)] == [1, 2, 4, 5, 5, None]


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    policy = RetryPolicy(maximum_attempts=5)
    first = [policy.next_delay(2, ErrorClass.UNKNOWN, random.Random(7)) for _ in range(3)]
    assert len(set(first)) == 1


@pytest.mark.parametrize("kwargs", [
    {"maximum_attempts": 0}, {"initial_interval": -1.0}, {"initial_interval": 10.0, "maximum_interval": 5.0},
    {"backoff_coefficient": 0.5},
])
def test_invalid_policies_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_stage_attempt_limit_overrides_the_policy() -> None:
    custom = RetryPolicy(initial_interval=0.1, maximum_attempts=9, jitter=0)
    stage = Stage("s", "t", max_attempts=2, retry=custom)
    policy = stage.retry_policy()
    assert (policy.maximum_attempts, policy.initial_interval, policy.jitter) == (2, 0.1, 0)
    assert Stage("s", "t", max_attempts=9, retry=custom).retry_policy() is custom
    assert Stage("s", "t").retry_policy() == RetryPolicy()
