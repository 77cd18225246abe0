"""Benchmark jobs (used by `bench/fanout.py`; not for real work): fan out `tasks` no-op tasks.

- `bench_noop`: one stage of `tasks` no-op tasks.
- `bench_noop_2stage`: the same, then a second stage with one no-op task per stage-1 result (dynamic fan-out).

`label` only makes otherwise identical submissions distinct jobs (job ids derive from the parameters).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import Field

from core.jobs import JobDefinition, JobParameters, PreviousResults, Stage
from core.models import JSON


class BenchNoopParameters(JobParameters):
    tasks: int = Field(1, ge=0, le=1_000_000, description="No-op tasks stage 1 fans out")
    label: str = Field("", max_length=100, description="Distinguishes otherwise identical benchmark jobs")


class BenchNoop(JobDefinition):
    job_type = "bench_noop"
    internal = True
    description = "Benchmark: one stage of `tasks` no-op tasks."
    Parameters = BenchNoopParameters
    stages = (Stage("noop", "bench.noop"),)

    def create_tasks(self, stage: Stage, params: Any, previous: PreviousResults) -> Iterable[JSON]:
        return [{"i": i} for i in range(params.tasks)]


class BenchNoopTwoStage(JobDefinition):
    job_type = "bench_noop_2stage"
    internal = True
    description = "Benchmark: `tasks` no-op tasks, then one no-op task per stage-1 result."
    Parameters = BenchNoopParameters
    stages = (Stage("noop", "bench.noop"), Stage("noop_again", "bench.noop"))

    def create_tasks(self, stage: Stage, params: Any, previous: PreviousResults) -> Iterable[JSON]:
        if stage.number == 1:
            return [{"i": i} for i in range(params.tasks)]
        return [{"i": row.index} for row in previous.rows]
