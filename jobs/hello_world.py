"""hello_world: stage 1 fans out `n` greetings, stage 2 replies to each, finalize summarises.

`failure_rate`, `fail_attempts` and `sleep_ms` turn it into a drill for retries and crashed workers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import Field

from core.jobs import FinalizeContext, JobDefinition, JobParameters, PreviousResults, Stage
from core.models import JSON
from core.retry import RetryPolicy

DRILL_RETRY = RetryPolicy(initial_interval=0.2, backoff_coefficient=2.0, maximum_interval=5.0)


class HelloWorldParameters(JobParameters):
    n: int = Field(3, ge=0, le=100_000, description="How many greetings stage 1 fans out")
    message: str = Field("hello", min_length=1, max_length=200)
    failure_rate: float = Field(0.0, ge=0.0, le=1.0, description="Share of attempts that fail transiently")
    fail_attempts: int = Field(0, ge=0, le=10, description="Every task fails transiently on its first N attempts")
    sleep_ms: int = Field(0, ge=0, le=600_000, description="How long each task takes")


class HelloWorld(JobDefinition):
    job_type = "hello_world"
    description = "Fan out n greetings, reply to each, summarise."
    Parameters = HelloWorldParameters
    stages = (
        Stage("greet", "hello.greet", max_attempts=4, timeout_seconds=60, retry=DRILL_RETRY),
        Stage("reply", "hello.reply", max_attempts=4, timeout_seconds=60, retry=DRILL_RETRY),
    )

    def create_tasks(self, stage: Stage, params: Any, previous: PreviousResults) -> Iterable[JSON]:
        drill = {"failure_rate": params.failure_rate, "fail_attempts": params.fail_attempts,
                 "sleep_ms": params.sleep_ms}
        if stage.number == 1:
            return [{"index": i, "message": params.message, **drill} for i in range(params.n)]
        return [{"greeting": greeting, **drill} for greeting in previous.values("greeting", str)]

    def finalize(self, context: FinalizeContext) -> JSON:
        replies = context.last_results().values("reply", str)
        return {
            "greetings": len(context.stage_results[1]),
            "replies": len(replies),
            "sample": replies[:3],
            "task_counts": {str(k): dict(v) for k, v in context.stage_counts.items()},
        }
