"""Job definitions: parameter validation, job ids, the job registry and previous-stage results."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import pytest
from pydantic import Field

from core.errors import ConfigurationError, InvalidParameters, PreviousResultsError, UnknownJobType
from core.jobs import FinalizeContext, JobDefinition, JobParameters, JobRegistry, PreviousResults, Stage
from core.models import JSON, JobStatus, TaskResultRow, TaskSpec, TaskStatus
from core.registry import TaskContext, TaskRegistry
from tests.unit.helpers import Probe


class Params(JobParameters):
    count: int = Field(1, ge=1)
    name: str = "x"
    ratio: float = 0.5


class Example(JobDefinition):
    job_type = "example"
    Parameters = Params
    stages = (Stage("one", "ex.one"), Stage("two", "ex.two", max_attempts=5))

    def create_tasks(self, stage: Stage, params: Any, previous: PreviousResults) -> Iterable[TaskSpec | JSON]:
        return [{"n": 1}, TaskSpec("ex.other", {"n": 2})]


def rows(*results: JSON | None) -> list[TaskResultRow]:
    return [TaskResultRow(f"job-s1-t{i}", i, TaskStatus.COMPLETED, r) for i, r in enumerate(results)]


def handler(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    return {}


def test_validation_applies_defaults_and_forbids_extra_fields() -> None:
    example = Example()
    assert example.validate_parameters({"count": 2}) == {"count": 2, "name": "x", "ratio": 0.5}
    with pytest.raises(InvalidParameters) as caught:
        example.validate_parameters({"count": 0, "name": 3, "surprise": True})
    assert {d["field"] for d in caught.value.details} == {"count", "name", "surprise"}
    assert all(d["message"] for d in caught.value.details)


def test_non_finite_numbers_are_invalid_parameters() -> None:
    with pytest.raises(InvalidParameters):
        Example().validate_parameters({"ratio": float("nan")})


def test_job_id_is_sha256_of_canonical_json_and_stable_across_key_order() -> None:
    example = Example()
    a = example.validate_parameters({"count": 3, "name": "é"})
    b = example.validate_parameters({"name": "é", "count": 3})
    payload = json.dumps({"parameters": a, "job_type": "example"}, sort_keys=True, separators=(",", ":"),
                         ensure_ascii=False)
    assert example.job_id(a) == example.job_id(b) == hashlib.sha256(payload.encode()).hexdigest()
    assert example.job_id(a) != example.job_id(example.validate_parameters({"count": 4, "name": "é"}))


def test_stages_are_numbered_and_build_task_specs() -> None:
    example = Example()
    assert [(s.number, s.name, s.max_attempts) for s in example.numbered_stages()] == [(1, "one", 3), (2, "two", 5)]
    with pytest.raises(ConfigurationError, match="no stage 3"):
        example.stage(3)
    specs = example.build_tasks(example.stage(2), example.validate_parameters({}), PreviousResults(1))
    assert specs == [TaskSpec("ex.two", {"n": 1}), TaskSpec("ex.other", {"n": 2})]


def test_create_tasks_must_yield_dicts_or_specs() -> None:
    class Bad(Example):
        def create_tasks(self, stage: Stage, params: Any, previous: PreviousResults) -> Iterable[Any]:
            return [42]

    with pytest.raises(ConfigurationError, match="yielded int"):
        Bad().build_tasks(Bad().stage(1), {}, PreviousResults(0))


def test_default_finalize_reports_outcome_and_counts() -> None:
    context = FinalizeContext("j", "example", {}, JobStatus.COMPLETED, {}, {1: {"completed": 2}})
    assert Example().finalize(context) == {"outcome": "completed", "stages": {"1": {"completed": 2}}}
    assert context.last_results() == PreviousResults(0)


def test_registry_rejects_bad_definitions() -> None:
    registry = JobRegistry([Example()])
    registry.register(Example())
    assert registry.names() == ["example"]

    class Impostor(Example):
        pass

    with pytest.raises(ConfigurationError, match="defined twice"):
        registry.register(Impostor())

    class Empty(JobDefinition):
        job_type = "empty"
        Parameters = Params
        stages = ()

    with pytest.raises(ConfigurationError, match="declares no stages"):
        registry.register(Empty())
    with pytest.raises(ConfigurationError, match="has no job_type"):
        registry.register(JobDefinition())
    with pytest.raises(UnknownJobType, match="valid job types: example"):
        registry.get("other")


def test_check_handlers_names_each_missing_handler() -> None:
    tasks = TaskRegistry()
    tasks.register("ex.one", handler)
    registry = JobRegistry([Example(), Probe()])
    with pytest.raises(ConfigurationError) as caught:
        registry.check_handlers(tasks)
    message = str(caught.value)
    assert "example stage 2 (two) → 'ex.two'" in message
    assert "probe stage 1 (square) → 'probe.square'" in message and "'probe.sum'" in message
    assert "'ex.one'" not in message
    for name in ("ex.two", "probe.square", "probe.sum"):
        tasks.register(name, handler)
    registry.check_handlers(tasks)


def test_previous_results_values_and_flat() -> None:
    previous = PreviousResults(2, rows({"k": 1, "l": [1, 2]}, None, {"k": 3, "l": [3]}))
    assert previous.values("k", int) == [1, 3]
    assert previous.flat("l") == [1, 2, 3]
    assert len(previous) == 2 and list(previous) == [{"k": 1, "l": [1, 2]}, {"k": 3, "l": [3]}]
    assert previous.values("k", (int, str)) == [1, 3]


def test_missing_key_names_stage_task_and_key() -> None:
    previous = PreviousResults(2, rows({"k": 1}, {"other": 2}))
    with pytest.raises(PreviousResultsError) as caught:
        previous.values("k")
    message = str(caught.value)
    assert "stage 2 task 1 (job-s1-t1)" in message and "'k'" in message and "['other']" in message


def test_wrong_type_names_stage_task_key_and_types() -> None:
    previous = PreviousResults(4, rows({"k": 1}, {"k": 2}, {"k": "three"}))
    with pytest.raises(PreviousResultsError, match=r"stage 4 task 2: 'k' should be int, got str"):
        previous.values("k", int)
    with pytest.raises(PreviousResultsError, match=r"should be list, got int"):
        previous.flat("k")
    with pytest.raises(PreviousResultsError, match=r"should be int or float, got str"):
        previous.values("k", (int, float))
