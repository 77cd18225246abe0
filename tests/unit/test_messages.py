"""Queue message bodies: what the store sends parses back, and the parser rejects every malformed body."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import MalformedMessage
from core.ids import task_id_for
from core.messages import (
    SPREAD_MESSAGES,
    JobMessage,
    StageTaskMessages,
    TaskMessage,
    deferred_finalize_message,
    finalize_message,
    parse_job_message,
    parse_task_message,
    parse_task_messages,
    split_task_message,
    stage_message,
    task_message,
    tasks_per_message,
)
from core.models import CONTINUATION_HEAD_START_SECONDS, JOBS_QUEUE, TASKS_QUEUE, MessageKind, ReceivedMessage
from core.tracing import bound_traces

JOB = "b" * 64
TASK = {"kind": "task", "job_id": JOB, "stage": 1, "task_id": f"{JOB}-s1-t0", "task_type": "t", "attempt": 1}


def test_constructed_messages_parse_back() -> None:
    stage = stage_message(JOB, "jt", 2)
    assert (stage.queue, stage.properties["job_type"]) == (JOBS_QUEUE, "jt")
    assert parse_job_message(stage.body) == JobMessage(MessageKind.STAGE, JOB, 2)
    final = finalize_message(JOB, "jt")
    assert parse_job_message(final.body) == JobMessage(MessageKind.FINALIZE, JOB, None)
    task = task_message(f"{JOB}-s3-t4", JOB, "jt", 3, "tt", 2, delay_seconds=1.5)
    assert (task.queue, task.delay_seconds, task.message_id) == (TASKS_QUEUE, 1.5, f"t:{JOB}-s3-t4:a2")
    assert parse_task_message(task.body) == TaskMessage(JOB, 3, f"{JOB}-s3-t4", "tt", 2)


def test_bodies_carry_ids_only() -> None:
    task = task_message(f"{JOB}-s1-t0", JOB, "jt", 1, "tt", 1)
    assert set(task.body) == {"kind", "job_id", "stage", "task_id", "task_type", "attempt"}


@pytest.mark.parametrize("body", [
    None, [], "stage", 1,
    {"kind": "stage", "job_id": JOB},
    {"kind": "stage", "job_id": JOB, "stage": 0},
    {"kind": "stage", "job_id": JOB, "stage": -1},
    {"kind": "stage", "job_id": JOB, "stage": "1"},
    {"kind": "stage", "job_id": JOB, "stage": True},
    {"kind": "stage", "job_id": JOB, "stage": 1.0},
    {"kind": "stage", "job_id": JOB.upper(), "stage": 1},
    {"kind": "stage", "job_id": JOB[:-1], "stage": 1},
    {"kind": "stage", "stage": 1},
    {"kind": "finalize", "job_id": 5},
    {"kind": "task", "job_id": JOB, "stage": 1},
    {"job_id": JOB, "stage": 1},
])
def test_job_parser_rejects(body: Any) -> None:
    with pytest.raises(MalformedMessage):
        parse_job_message(body)


@pytest.mark.parametrize("change", [
    {"kind": "stage"}, {"kind": None}, {"job_id": "nope"}, {"stage": 0}, {"attempt": 0}, {"attempt": False},
    {"task_id": ""}, {"task_id": 7}, {"task_type": ""}, {"task_type": None}, {"stage": "2"},
])
def test_task_parser_rejects(change: dict[str, Any]) -> None:
    with pytest.raises(MalformedMessage):
        parse_task_message({**TASK, **change})


@pytest.mark.parametrize("missing", sorted(TASK))
def test_task_parser_needs_every_field(missing: str) -> None:
    with pytest.raises(MalformedMessage):
        parse_task_message({k: v for k, v in TASK.items() if k != missing})


json_bodies = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["kind", "job_id", "stage", "task_id", "task_type", "attempt", "first", "count", "x"]),
        children, max_size=6),
    max_leaves=10,
)
valid_batches = st.fixed_dictionaries({
    "kind": st.just("task"), "job_id": st.just(JOB), "stage": st.integers(-1, 3), "task_type": st.just("t"),
    "attempt": st.integers(0, 2), "first": st.integers(-2, 5) | st.text(max_size=2), "count": st.integers(-1, 300),
})


@given(json_bodies | valid_batches)
def test_parsers_raise_only_malformed_message(body: Any) -> None:
    for parse in (parse_job_message, parse_task_message, parse_task_messages):
        with contextlib.suppress(MalformedMessage):
            parse(body)


def test_a_new_stages_messages_are_made_as_read_and_equal_task_message() -> None:
    job_id = "b" * 64
    task_ids = [task_id_for(job_id, 2, i) for i in range(5)]
    types = ["a", "a", "b", "a", "b"]
    carrier = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    with bound_traces({job_id: carrier}):
        lazy = StageTaskMessages(job_id, "jt", 2, task_ids, types, round_number=3)
        pairs = zip(task_ids, types, strict=True)
        expected = [task_message(t, job_id, "jt", 2, k, 1, round_number=3) for t, k in pairs]
        assert list(lazy) == expected
        assert len(lazy) == 5 and lazy[4] == expected[4] and list(lazy[1:3]) == expected[1:3]
    assert all(m.properties["traceparent"] == carrier["traceparent"] for m in expected)
    assert lazy[0].properties is lazy[1].properties  # one properties object per task type


def test_messages_that_move_a_started_job_on_are_marked_to_go_first() -> None:
    job_id = "f" * 64
    assert not stage_message(job_id, "t", 1).continues_job
    assert stage_message(job_id, "t", 2).continues_job
    assert finalize_message(job_id, "t").continues_job
    assert deferred_finalize_message(job_id, "t", 0, 1, 5.0).continues_job
    assert not task_message(task_id_for(job_id, 1, 0), job_id, "t", 1, "noop", 1).continues_job
    # Undelayed, a continuation is due a head start ago; delayed, it keeps its delay like any message.
    assert stage_message(job_id, "t", 2).due_offset_seconds == -CONTINUATION_HEAD_START_SECONDS
    assert stage_message(job_id, "t", 2, delay_seconds=3.0).due_offset_seconds == 3.0
    assert stage_message(job_id, "t", 1).due_offset_seconds == 0.0


def test_a_wide_stages_messages_carry_consecutive_tasks_of_one_type_and_parse_back_to_them() -> None:
    job_id = "c" * 64
    types = ["a"] * 5 + ["b"] * 2 + ["a"] * 4
    task_ids = [task_id_for(job_id, 3, i) for i in range(len(types))]
    batches = StageTaskMessages(job_id, "jt", 3, task_ids, types, round_number=2, per_message=4)
    assert [(m.body.get("first"), m.body.get("count")) for m in batches] == [(0, 4), (None, None), (5, 2), (7, 4)]
    assert len(batches) == 4 and batches[2] == list(batches)[2] and list(batches[1:3]) == list(batches)[1:3]
    single = batches[1]  # a run of one task is the ordinary message of that task
    assert single == task_message(task_ids[4], job_id, "jt", 3, "a", 1, round_number=2)
    parsed = [t for m in batches for t in parse_task_messages(m.body)]
    assert parsed == [TaskMessage(job_id, 3, t, k, 1) for t, k in zip(task_ids, types, strict=True)]
    assert batches[0].properties["task_type"] == "a" and batches[0].properties["tasks"] == 4
    ids = [m.message_id for m in batches]
    assert len(set(ids)) == 4 and all(i.endswith(":x2") for i in ids)  # the round's own ids
    one_type = StageTaskMessages(job_id, "jt", 3, task_ids[:5], ["a"] * 5, per_message=2)
    assert [(m.body.get("first"), m.body.get("count")) for m in one_type] == [(0, 2), (2, 2), (None, None)]


def test_a_stage_keeps_enough_messages_to_spread_over_the_workers() -> None:
    assert tasks_per_message(8, 16) == 1
    assert tasks_per_message(SPREAD_MESSAGES * 2 - 1, 16) == 1
    assert tasks_per_message(SPREAD_MESSAGES * 5, 16) == 5
    assert tasks_per_message(1_000_000, 16) == 16
    assert tasks_per_message(1_000_000, 1) == 1


@pytest.mark.parametrize("change", [
    {"first": -1}, {"first": "0"}, {"first": True}, {"count": 0}, {"count": 10_000}, {"count": 2.0},
    {"task_type": ""}, {"stage": 0}, {"kind": "stage"}, {"job_id": "nope"}, {"attempt": 0},
])
def test_a_malformed_batch_is_rejected(change: dict[str, Any]) -> None:
    body = {"kind": "task", "job_id": JOB, "stage": 1, "task_type": "t", "attempt": 1, "first": 0, "count": 3,
            **change}
    with pytest.raises(MalformedMessage):
        parse_task_messages(body)


def test_a_batch_split_into_one_message_per_task_keeps_its_properties_with_ids_of_its_own() -> None:
    job_id = "d" * 64
    [batch] = StageTaskMessages(job_id, "jt", 1, [task_id_for(job_id, 1, i) for i in range(3)], ["a"] * 3,
                                per_message=3)
    received = ReceivedMessage(TASKS_QUEUE, batch.message_id, batch.body, batch.properties, 2, "lock")
    tasks = parse_task_messages(batch.body)
    singles = split_task_message(received, tasks)
    assert [parse_task_message(m.body) for m in singles] == tasks
    assert [m.message_id for m in singles] == [f"{batch.message_id}/{i}" for i in range(3)]
    assert all(m.queue == TASKS_QUEUE and "tasks" not in m.properties for m in singles)
    assert singles[0].properties["job_type"] == "jt"
