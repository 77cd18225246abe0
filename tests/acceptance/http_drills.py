"""A job for the HTTP tests whose one task fails while a marker file exists, so a retry can then succeed."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from core.errors import PermanentError
from core.jobs import JobDefinition, JobParameters, PreviousResults, Stage
from core.models import JSON
from core.registry import TaskContext, register_task


class FlakyParameters(JobParameters):
    marker: str
    n: int = 3
    sleep_ms: int = 0


class HttpFlaky(JobDefinition):
    job_type = "http_flaky"
    internal = True
    Parameters = FlakyParameters
    stages = (Stage("work", "http.flaky", max_attempts=1, timeout_seconds=5.0),
              Stage("sum", "http.flaky", max_attempts=1, timeout_seconds=5.0))

    def create_tasks(self, stage: Stage, params: Any, previous: PreviousResults) -> Iterable[JSON]:
        if stage.number == 2:
            return [{"index": -1, "marker": "", "sleep_ms": 0, "total": len(previous)}]
        return [{"index": i, "marker": params.marker if i == 1 else "", "sleep_ms": params.sleep_ms}
                for i in range(params.n)]


@register_task("http.flaky")
def flaky(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    if params.get("sleep_ms"):
        import time

        time.sleep(params["sleep_ms"] / 1000)
    if params["marker"] and Path(params["marker"]).exists():
        raise PermanentError(f"task {params['index']} fails while {params['marker']} exists")
    return {"index": params["index"], "attempt": context.attempt}
