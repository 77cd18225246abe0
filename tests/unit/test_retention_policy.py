"""Retention policy: cutoffs per terminal state, and the floor of the duplicate-detection window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.models import JobStatus
from core.retention import RetentionPolicy
from triggers.cli_prune import parse_age

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_cutoffs_per_state_and_none_keeps_forever() -> None:
    policy = RetentionPolicy({JobStatus.COMPLETED: timedelta(days=7), JobStatus.FAILED: timedelta(days=30),
                              JobStatus.CANCELLED: None})
    assert policy.cutoffs(NOW) == {JobStatus.COMPLETED: NOW - timedelta(days=7),
                                   JobStatus.FAILED: NOW - timedelta(days=30)}


def test_uniform_covers_every_terminal_state() -> None:
    assert set(RetentionPolicy.uniform(timedelta(hours=1)).cutoffs(NOW)) == {
        JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.FAILED, JobStatus.CANCELLED}


def test_live_states_and_negative_retention_are_refused() -> None:
    with pytest.raises(ValueError, match="terminal"):
        RetentionPolicy({JobStatus.PROCESSING: timedelta(days=1)})
    with pytest.raises(ValueError, match="negative"):
        RetentionPolicy({JobStatus.FAILED: timedelta(days=-1)})


def test_retention_shorter_than_the_duplicate_window_is_refused() -> None:
    policy = RetentionPolicy.uniform(timedelta(minutes=5))
    with pytest.raises(ValueError, match="duplicate-detection window"):
        policy.check_at_least(timedelta(minutes=10))
    policy.check_at_least(timedelta(minutes=5))


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("12h", 43_200), ("7d", 604_800),
                                               ("2w", 1_209_600), ("1.5d", 129_600)])
def test_ages(text: str, seconds: float) -> None:
    assert parse_age(text) == timedelta(seconds=seconds)


def test_bad_age() -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        parse_age("7 days")
