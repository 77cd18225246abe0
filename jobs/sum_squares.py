"""sum_squares: list ranges → sum the squares in each (dynamic fan-out from stage 1) → aggregate."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import Field, model_validator

from core.jobs import FinalizeContext, JobDefinition, JobParameters, PreviousResults, Stage
from core.models import JSON


class SumSquaresParameters(JobParameters):
    upto: int = Field(10_000, ge=1, le=10**12, description="Sum the squares of 1..upto")
    chunk_size: int = Field(1_000, ge=1, description="Numbers per stage-2 task")

    @model_validator(mode="after")
    def _bounded_fan_out(self) -> SumSquaresParameters:
        if -(-self.upto // self.chunk_size) > 100_000:
            raise ValueError("upto / chunk_size would fan out to more than 100,000 tasks")
        return self


class SumSquares(JobDefinition):
    job_type = "sum_squares"
    description = "List ranges, sum squares per range in parallel, aggregate."
    Parameters = SumSquaresParameters
    stages = (
        Stage("list", "squares.list_ranges"),
        Stage("square", "squares.sum_range"),
        Stage("aggregate", "squares.aggregate"),
    )

    def create_tasks(self, stage: Stage, params: Any, previous: PreviousResults) -> Iterable[JSON]:
        if stage.number == 1:
            return [{"upto": params.upto, "chunk_size": params.chunk_size}]
        if stage.number == 2:
            return [{"start": r[0], "end": r[1]} for r in previous.flat("ranges")]
        return [{"partials": previous.values("sum", int)}]

    def finalize(self, context: FinalizeContext) -> JSON:
        total = context.last_results().values("total", int)
        upto = int(context.parameters["upto"])
        expected = upto * (upto + 1) * (2 * upto + 1) // 6
        return {"sum": total[0] if total else None, "expected": expected, "ok": bool(total) and total[0] == expected,
                "ranges": len(context.stage_results[2])}
