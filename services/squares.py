"""Handlers of the sum_squares job."""

from __future__ import annotations

from typing import Any

from core.errors import PermanentError
from core.registry import TaskContext, register_task


@register_task("squares.list_ranges")
def list_ranges(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    upto, size = int(params["upto"]), int(params["chunk_size"])
    return {"ranges": [[start, min(start + size - 1, upto)] for start in range(1, upto + 1, size)]}


@register_task("squares.sum_range")
def sum_range(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    start, end = int(params["start"]), int(params["end"])
    if end < start:
        raise PermanentError(f"empty range {start}..{end}")

    def squares(n: int) -> int:
        return n * (n + 1) * (2 * n + 1) // 6

    return {"sum": squares(end) - squares(start - 1)}


@register_task("squares.aggregate")
def aggregate(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    return {"total": sum(int(p) for p in params["partials"])}
