"""Deterministic ids: canonical JSON, job ids, task ids, and message ids bounded to 128 characters."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.ids import (
    MAX_MESSAGE_ID_LENGTH,
    canonical_json,
    finalize_message_id,
    is_job_id,
    job_id_for,
    replay_message_id,
    stage_message_id,
    task_id_for,
    task_message_id,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
parameters = st.dictionaries(st.text(max_size=6), json_values, max_size=5)
job_ids = st.text("0123456789abcdef", min_size=64, max_size=64)


def shuffled(value: Any, rng: random.Random) -> Any:
    """The same JSON value with every object's keys in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


def test_canonical_json_is_sorted_compact_and_keeps_unicode() -> None:
    assert canonical_json({"b": [1, {"d": 1, "c": 2}], "a": "é"}) == '{"a":"é","b":[1,{"c":2,"d":1}]}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


@settings(max_examples=60, deadline=None)
@given(parameters, st.randoms(use_true_random=False))
def test_job_id_is_sha256_of_canonical_json_and_ignores_key_order(params: dict[str, Any], rng: Any) -> None:
    job_id = job_id_for("t", params)
    payload = json.dumps({"job_type": "t", "parameters": params}, sort_keys=True, separators=(",", ":"),
                         ensure_ascii=False)
    assert job_id == hashlib.sha256(payload.encode()).hexdigest()
    assert job_id_for("t", shuffled(params, rng)) == job_id
    assert is_job_id(job_id)
    assert job_id_for("u", params) != job_id


def test_is_job_id() -> None:
    assert is_job_id("a" * 64)
    assert not is_job_id("A" * 64)
    assert not is_job_id("a" * 63)
    assert not is_job_id("g" * 64)
    assert not is_job_id("a" * 64 + "\n")
    assert not is_job_id("a" * 65)


def test_task_and_message_id_shapes() -> None:
    job = "c" * 64
    assert task_id_for(job, 2, 7) == f"{job}-s2-t7"
    assert stage_message_id(job, 3) == f"j:{job}:s3"
    assert finalize_message_id(job) == f"j:{job}:final"
    assert task_message_id(task_id_for(job, 1, 0), 2) == f"t:{job}-s1-t0:a2"


@given(job_ids, st.integers(1, 10**30), st.integers(0, 10**30), st.integers(1, 10**30), st.integers(1, 10**6))
def test_message_ids_fit_128_characters_including_replays(
    job_id: str, stage: int, index: int, attempt: int, replays: int
) -> None:
    task_id = task_id_for(job_id, stage, index)
    ids = [stage_message_id(job_id, stage), finalize_message_id(job_id), task_message_id(task_id, attempt)]
    for message_id in ids:
        assert len(message_id) <= MAX_MESSAGE_ID_LENGTH
        replayed = replay_message_id(message_id, replays)
        assert len(replayed) <= MAX_MESSAGE_ID_LENGTH
        assert replayed != message_id
        again = replay_message_id(replayed, replays + 1)
        assert len(again) <= MAX_MESSAGE_ID_LENGTH and again != replayed


def test_long_ids_are_hashed_deterministically() -> None:
    task_id = task_id_for("d" * 64, 10**40, 10**40)
    message_id = task_message_id(task_id, 1)
    assert message_id.startswith("h:") and len(message_id) == 66
    assert task_message_id(task_id, 1) == message_id != task_message_id(task_id, 2)


def test_replaying_a_replay_keeps_one_suffix() -> None:
    original = task_message_id(task_id_for("e" * 64, 1, 0), 1)
    first = replay_message_id(original, 1)
    assert first == f"{original}:r1"
    assert replay_message_id(first, 2) == f"{original}:r2"


def test_messages_sent_after_a_retry_get_round_ids() -> None:
    from core.ids import round_message_id
    from core.messages import finalize_message, stage_message

    job_id = "a" * 64
    assert stage_message(job_id, "t", 2).message_id == f"j:{job_id}:s2"
    assert stage_message(job_id, "t", 2, 1).message_id == f"j:{job_id}:s2:x1"
    assert finalize_message(job_id, "t", 3).message_id == f"j:{job_id}:final:x3"
    assert round_message_id("m", 0) == "m"
    assert len(round_message_id("t:" + "b" * 120, 7)) <= 128


def test_messages_split_from_a_replayed_batch_replay_to_distinct_ids() -> None:
    batch = replay_message_id("t:j-s1-t0+16:a1", 1)
    siblings = [f"{batch}/{i}" for i in range(16)]
    replayed = [replay_message_id(m, 2) for m in siblings]
    assert len(set(replayed)) == 16
    assert replayed[3] == "t:j-s1-t0+16:a1:r1/3:r2"
    assert replay_message_id(replayed[3], 3) == "t:j-s1-t0+16:a1:r1/3:r3"
