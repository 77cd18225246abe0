"""The benchmark's no-op task handler (`bench.noop`, used by the `bench_noop*` jobs): does nothing, returns {}."""

from __future__ import annotations

from typing import Any

from core.registry import TaskContext, register_task


@register_task("bench.noop")
def noop(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    return {}
