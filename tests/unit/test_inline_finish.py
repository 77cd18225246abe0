"""A job type that keeps the default finalize ends when its last stage completes (no finalize message); one with
its own finalize runs it once, through the finalize message. Engine level, in memory."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core.jobs import FinalizeContext, JobDefinition, JobRegistry, PreviousResults, Stage
from core.models import JOBS_QUEUE, JSON, FailurePolicy, JobStatus
from infrastructure.memory.store import InMemoryStore
from tests.unit.helpers import FAST_RETRY, Harness, Probe, ProbeParameters


class Plain(JobDefinition):
    """Two stages of squares and the default finalize."""

    job_type = "plain"
    Parameters = ProbeParameters
    failure_policy = FailurePolicy.CONTINUE
    stages = (
        Stage("a", "probe.square", max_attempts=1, timeout_seconds=30, retry=FAST_RETRY),
        Stage("b", "probe.square", max_attempts=1, timeout_seconds=30, retry=FAST_RETRY),
    )

    def create_tasks(self, stage: Stage, params: Any, previous: PreviousResults) -> Iterable[JSON]:
        return [{"i": i} for i in range(params.n + stage.number - 1)]


class Counted(Probe):
    """The probe job with its own finalize, counting its runs."""

    job_type = "counted"
    runs = 0

    def finalize(self, context: FinalizeContext) -> JSON:
        type(self).runs += 1
        return super().finalize(context)


def finalize_deliveries(seen: Iterable[Any]) -> int:
    return sum(1 for m in seen if m.queue == JOBS_QUEUE and m.body.get("kind") == "finalize")


def test_the_registry_names_the_job_types_that_keep_the_default_finalize() -> None:
    registry = JobRegistry([Plain(), Counted()])
    assert registry.inline_finish() == frozenset({"plain"})
    assert Plain.finalizes_by_default() and not Counted.finalizes_by_default()


def test_a_default_finalize_job_ends_without_a_finalize_message() -> None:
    h = Harness(jobs=[Plain(), Counted()])
    job_id = h.engine.submit("plain", {"n": 3}).job.job_id
    seen = h.drain(duplicate=True)
    job = h.job(job_id)
    assert (job.status, job.outcome) == (JobStatus.COMPLETED, JobStatus.COMPLETED)
    assert job.result == {"outcome": "completed", "stages": {"1": {"completed": 3}, "2": {"completed": 4}}}
    assert finalize_deliveries(seen) == 0
    kinds = h.event_kinds(job_id)
    assert kinds[-2:] == ["finalizing", "job_finished"] and kinds.count("job_finished") == 1


def test_a_default_finalize_job_with_failures_still_runs_its_finalize_message() -> None:
    h = Harness(jobs=[Plain()])
    h.probe.failures[(1, 1)] = lambda: ValueError("bad input")
    job_id = h.engine.submit("plain", {"n": 2}).job.job_id
    seen = h.drain()
    job = h.job(job_id)
    assert job.status is JobStatus.COMPLETED_WITH_ERRORS
    assert job.result == {"outcome": "completed_with_errors",
                          "stages": {"1": {"completed": 1, "failed": 1}, "2": {"completed": 2, "failed": 1}}}
    assert finalize_deliveries(seen) == 1


def test_a_custom_finalize_runs_once_through_its_finalize_message() -> None:
    Counted.runs = 0
    h = Harness(jobs=[Plain(), Counted()])
    job_id = h.engine.submit("counted", {"n": 3}).job.job_id
    seen = h.drain(duplicate=True)
    job = h.job(job_id)
    assert job.status is JobStatus.COMPLETED and job.result == {"outcome": "completed", "total": 5, "squares": 3}
    assert finalize_deliveries(seen) >= 1 and Counted.runs == 1


def test_finalize_reads_the_stage_counts_only_if_it_looks_at_them() -> None:
    reads: list[str] = []

    class CountingStore(InMemoryStore):
        def stage_counts(self, job_id: str) -> dict[int, dict[str, int]]:
            reads.append(job_id)
            return super().stage_counts(job_id)

    h = Harness(jobs=[Plain(), Counted()])
    h.store = CountingStore(h.transport, clock=h.now)
    h.engine = h.engine_with(h.probe.handlers())
    assert h.run("counted", {"n": 2}).status is JobStatus.COMPLETED
    assert reads == []
    h.probe.failures[(0, 1)] = lambda: ValueError("bad input")
    failed = h.run("plain", {"n": 2})
    assert failed.status is JobStatus.COMPLETED_WITH_ERRORS and reads == [failed.job_id]
    assert failed.result is not None and failed.result["stages"]["1"] == {"completed": 1, "failed": 1}
