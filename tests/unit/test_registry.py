"""Task handler registry: names to handlers, duplicates and unknown names fail loudly."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import ConfigurationError, UnknownTaskType
from core.registry import TaskContext, TaskRegistry, discover_tasks, in_packages, register_task


def first(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    return {}


def second(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    return {"x": 1}


def test_register_and_get() -> None:
    registry = TaskRegistry()
    registry.register("a.b", first)
    registry.register("a.b", first)
    assert registry.get("a.b") is first
    assert "a.b" in registry and "c" not in registry
    assert list(registry) == ["a.b"]
    assert dict(registry.handlers) == {"a.b": first}


def test_duplicate_name_names_both_handlers() -> None:
    registry = TaskRegistry()
    registry.register("a.b", first)
    with pytest.raises(ConfigurationError) as caught:
        registry.register("a.b", second)
    message = str(caught.value)
    assert "'a.b'" in message
    assert f"{__name__}.first" in message and f"{__name__}.second" in message


def test_unknown_task_type() -> None:
    with pytest.raises(UnknownTaskType, match="'nope'") as caught:
        TaskRegistry().get("nope")
    assert caught.value.task_type == "nope"


def test_without_leaves_the_original_alone() -> None:
    registry = TaskRegistry()
    registry.register("a", first)
    registry.register("b", second)
    older = registry.without("b")
    assert list(older) == ["a"] and list(registry) == ["a", "b"]


@pytest.mark.parametrize("name", ["", "has space", "semi;colon", "slash/name"])
def test_invalid_task_names_are_rejected(name: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid task type name"):
        register_task(name)


def test_register_task_marks_the_function() -> None:
    @register_task("tests.marked-ok_1")
    def handler(params: dict[str, Any], context: TaskContext) -> None:
        return None

    assert handler.task_type == "tests.marked-ok_1"  # type: ignore[attr-defined]
    assert "tests.marked-ok_1" not in discover_tasks("services")


def test_discovery_collects_only_the_named_packages() -> None:
    registry = discover_tasks("services")
    assert registry.get("squares.sum_range").__module__ == "services.squares"
    assert all(in_packages(h.__module__, ("services",)) for h in registry.handlers.values())


def test_in_packages() -> None:
    assert in_packages("services.hello", ("services",))
    assert in_packages("services", ("services",))
    assert not in_packages("services_extra.x", ("services",))
