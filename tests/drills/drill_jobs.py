"""Drill job types: discovered when `tests.drills` is in the job and task packages."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field

from core.jobs import FinalizeContext, JobDefinition, JobParameters, PreviousResults, Stage
from core.models import JSON, FailurePolicy
from core.retry import RetryPolicy

FAST_RETRY = RetryPolicy(initial_interval=0.05, backoff_coefficient=2.0, maximum_interval=0.5)


class DrillParameters(JobParameters):
    n: int = Field(4, ge=0, le=100_000)
    fail_index: int | None = Field(None, description="this task index fails permanently")
    sleep_ms: int = Field(0, ge=0)
    poison_index: int | None = Field(None, description="this task returns a result PostgreSQL cannot store")
    hang_index: int | None = Field(None, description="this task's first attempt hangs (for an hour)")
    cooperative_ms: int = Field(0, ge=0, description="work this long in small steps, stopping early if cancelled")
    tag: str = ""


class DrillFailFast(JobDefinition):
    job_type = "drill_fail_fast"
    internal = True
    Parameters = DrillParameters
    stages = (Stage("work", "drill.work", max_attempts=3, timeout_seconds=2.0, retry=FAST_RETRY),
              Stage("after", "drill.work", max_attempts=3, timeout_seconds=2.0, retry=FAST_RETRY))

    def create_tasks(self, stage: Stage, params: Any, previous: PreviousResults) -> Iterable[JSON]:
        if stage.number == 2:
            return [{"index": r["index"], "fail_index": None, "sleep_ms": 0} for r in previous]
        return [{"index": i, "fail_index": params.fail_index, "sleep_ms": params.sleep_ms,
                 "poison": i == params.poison_index, "hang": i == params.hang_index,
                 "cooperative_ms": params.cooperative_ms} for i in range(params.n)]

    def finalize(self, context: FinalizeContext) -> JSON:
        return {"outcome": context.outcome.value, "counts": {str(k): dict(v) for k, v in context.stage_counts.items()}}


class DrillContinue(DrillFailFast):
    job_type = "drill_continue"
    failure_policy = FailurePolicy.CONTINUE


class DrillFinalizeRaises(DrillFailFast):
    job_type = "drill_finalize_raises"

    def finalize(self, context: FinalizeContext) -> JSON:
        raise RuntimeError("finalize exploded")


class DrillCreateTasksRaises(DrillFailFast):
    job_type = "drill_create_tasks_raises"

    def create_tasks(self, stage: Stage, params: Any, previous: PreviousResults) -> Iterable[JSON]:
        if stage.number == 2:
            previous.values("no_such_key", str)
        return super().create_tasks(stage, params, previous)


class DrillPlannerDown(DrillFailFast):
    """Its planner always meets a transient error (the data share is down)."""

    job_type = "drill_planner_down"

    def create_tasks(self, stage: Stage, params: Any, previous: PreviousResults) -> Iterable[JSON]:
        raise ConnectionError("the data share is down")


class SlowFinalizeParameters(JobParameters):
    n: int = Field(2, ge=0)
    finalize_seconds: float = Field(0.0, ge=0)
    runs_file: str


class DrillSlowFinalize(JobDefinition):
    """A finalize that outlasts the queue lock; each run appends a line to `runs_file`."""

    job_type = "drill_slow_finalize"
    Parameters = SlowFinalizeParameters
    stages = (Stage("work", "drill.work", max_attempts=2, timeout_seconds=5.0, retry=FAST_RETRY),)

    def create_tasks(self, stage: Stage, params: Any, previous: PreviousResults) -> Iterable[JSON]:
        return [{"index": i, "fail_index": None, "sleep_ms": 0} for i in range(params.n)]

    def finalize(self, context: FinalizeContext) -> JSON:
        path = Path(context.parameters["runs_file"])
        with path.open("a", encoding="utf-8") as runs:
            runs.write("start\n")
        time.sleep(context.parameters["finalize_seconds"])
        with path.open("a", encoding="utf-8") as runs:
            runs.write("end\n")
        return {"tasks": len(context.last_results())}


class DrillLong(DrillContinue):
    """Attempts may run for a minute: for handlers longer than the queue lock and the task lease."""

    job_type = "drill_long"
    stages = (Stage("work", "drill.work", max_attempts=3, timeout_seconds=60.0, retry=FAST_RETRY),
              Stage("after", "drill.work", max_attempts=3, timeout_seconds=60.0, retry=FAST_RETRY))
