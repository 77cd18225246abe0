"""Unit-test harness: CoreMachine on the in-memory store and transport with a manual clock, and probe jobs."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from core.engine import CoreMachine
from core.janitor import Janitor, JanitorConfig
from core.jobs import FinalizeContext, JobDefinition, JobParameters, JobRegistry, PreviousResults, Stage
from core.models import (
    JOBS_QUEUE,
    JSON,
    TASKS_QUEUE,
    FailurePolicy,
    JobRecord,
    OutcomeKind,
    ReceivedMessage,
    TaskOutcome,
)
from core.ports import NullRelay
from core.registry import TaskContext, TaskHandler, TaskRegistry
from core.retry import RetryPolicy
from core.settlement import Disposition, Settlement
from infrastructure.memory.store import InMemoryStore
from infrastructure.memory.transport import InMemoryTransport, ManualClock
from infrastructure.queue_config import QueueConfig

FAST_RETRY = RetryPolicy(initial_interval=0.5, backoff_coefficient=2.0, maximum_interval=4.0, jitter=0.0)


class ProbeParameters(JobParameters):
    n: int = Field(2, ge=0)
    tag: str = ""
    sum_stage: bool = True
    fail_create_stage: int = 0
    fail_finalize: bool = False


class Probe(JobDefinition):
    """Stage 1 squares each of `n` numbers in parallel; stage 2 sums the squares; finalize reports the total."""

    job_type = "probe"
    Parameters = ProbeParameters
    stages = (
        Stage("square", "probe.square", max_attempts=3, timeout_seconds=30, retry=FAST_RETRY),
        Stage("sum", "probe.sum", max_attempts=3, timeout_seconds=30, retry=FAST_RETRY),
    )

    def create_tasks(self, stage: Stage, params: Any, previous: PreviousResults) -> Iterable[JSON]:
        if stage.number == params.fail_create_stage:
            raise ValueError(f"cannot plan stage {stage.number}")
        if stage.number == 1:
            return [{"i": i} for i in range(params.n)]
        return [{"values": previous.values("square", int)}] if params.sum_stage else []

    def finalize(self, context: FinalizeContext) -> JSON:
        if context.parameters["fail_finalize"]:
            raise RuntimeError("finalize exploded")
        totals = context.last_results().values("total", int)
        return {"outcome": context.outcome.value, "total": totals[0] if totals else None,
                "squares": len(context.stage_results[1])}


class ProbeContinue(Probe):
    job_type = "probe_continue"
    failure_policy = FailurePolicy.CONTINUE


Failure = Callable[[], Exception]


class ProbeHandlers:
    """Handlers for the probe jobs; a test scripts failures by (i, attempt) and reads the call counts."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.failures: dict[tuple[int, int], Failure] = {}
        self._lock = threading.Lock()

    def square(self, params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
        with self._lock:
            self.calls[context.task_id] += 1
        failure = self.failures.get((int(params["i"]), context.attempt))
        if failure is not None:
            raise failure()
        return {"square": int(params["i"]) ** 2}

    def sum(self, params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
        with self._lock:
            self.calls[context.task_id] += 1
        return {"total": sum(int(v) for v in params["values"])}

    def handlers(self) -> dict[str, TaskHandler]:
        return {"probe.square": self.square, "probe.sum": self.sum}


def task_registry(handlers: Mapping[str, TaskHandler]) -> TaskRegistry:
    registry = TaskRegistry()
    for name, handler in handlers.items():
        registry.register(name, handler)
    return registry


class Harness:
    """One engine on an in-memory store and transport sharing a manual clock; `drain` plays the worker."""

    def __init__(
        self,
        jobs: Iterable[JobDefinition] | None = None,
        handlers: Mapping[str, TaskHandler] | None = None,
        config: QueueConfig | None = None,
        tasks_per_message: int = 1,
    ) -> None:
        self.probe = ProbeHandlers()
        self.clock = ManualClock()
        self.transport = InMemoryTransport(config, clock=self.clock)
        self.store = InMemoryStore(self.transport, clock=self.now, tasks_per_message=tasks_per_message)
        self.jobs = JobRegistry((Probe(), ProbeContinue()) if jobs is None else jobs)
        self.engine = self.engine_with(self.probe.handlers() if handlers is None else handlers)
        self.janitor = Janitor(self.store, NullRelay(), JanitorConfig(lease_grace_seconds=5.0))
        self.escaped: list[Exception] = []
        self.given_back: list[Settlement] = []

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def engine_with(self, handlers: Mapping[str, TaskHandler], worker_id: str = "worker-1") -> CoreMachine:
        """Another engine on the same store and transport (a worker with a different build)."""
        return CoreMachine(self.store, NullRelay(), self.jobs, task_registry(handlers), worker_id)

    def job(self, job_id: str) -> JobRecord:
        job = self.store.get_job(job_id)
        assert job is not None
        return job

    def settle(self, settlements: Sequence[Settlement]) -> None:
        for s in settlements:
            if s.disposition is Disposition.COMPLETE:
                self.transport.complete([s.message])
            elif s.disposition is Disposition.SETTLED:
                continue  # completed by the store's commit
            elif s.disposition is Disposition.DEAD_LETTER:
                self.transport.dead_letter(s.message, s.reason, s.description)
            else:
                self.given_back.append(s)
                self.transport.abandon(s.message, s.delay_seconds)

    def handle(self, engine: CoreMachine, queue: str, batch: Sequence[ReceivedMessage]) -> list[Settlement]:
        """What a worker does with a batch; an exception escaping the engine (a bug) abandons the whole batch."""
        handle = engine.handle_job_messages if queue == JOBS_QUEUE else engine.handle_task_messages
        try:
            return handle(batch)
        except Exception as exc:
            self.escaped.append(exc)
            return [Settlement(m, Disposition.ABANDON) for m in batch]

    def drain(
        self,
        engine: CoreMachine | None = None,
        *,
        duplicate: bool = False,
        batch: int = 16,
        step_seconds: float = 1.0,
        max_idle_seconds: float = 3600.0,
    ) -> list[ReceivedMessage]:
        """Deliver messages until no message is left, moving the clock when the rest are scheduled later.

        With `duplicate`, every batch is handled twice before it is settled, and at the end every message
        seen is delivered once more (late duplicates). Returns the messages delivered.
        """
        engine = engine or self.engine
        seen: list[ReceivedMessage] = []
        idle = 0.0
        while True:
            progressed = False
            for queue in (JOBS_QUEUE, TASKS_QUEUE):
                received = self.transport.receive(queue, batch, 0)
                if not received:
                    continue
                progressed = True
                seen.extend(received)
                settlements = self.handle(engine, queue, received)
                if duplicate:
                    settlements += self.handle(engine, queue, received)
                self.settle(settlements)
            if progressed:
                idle = 0.0
                continue
            if self.transport.pending_count() == 0:
                break
            if idle >= max_idle_seconds:
                raise AssertionError(f"{self.transport.pending_count()} messages never became due")
            self.clock.advance(step_seconds)
            idle += step_seconds
        if duplicate:
            for message in seen:
                self.handle(engine, message.queue, [message])
        return seen

    def run(self, job_type: str, parameters: Mapping[str, Any], **drain: Any) -> JobRecord:
        submitted = self.engine.submit(job_type, parameters)
        self.drain(**drain)
        return self.job(submitted.job.job_id)

    def event_kinds(self, job_id: str) -> list[str]:
        snapshot = self.store.snapshot(job_id, events=1000)
        assert snapshot is not None
        return [e.kind for e in snapshot.events]


class RefusingStore(InMemoryStore):
    """Refuses (as bad data, not an outage) any commit that holds a completed outcome of task index `poison`."""

    poison = "-s1-t1"

    def record_outcomes(
        self, outcomes: Sequence[TaskOutcome], inline_finish: frozenset[str] = frozenset(),
        acknowledge: Sequence[ReceivedMessage] = (),
    ) -> None:
        if any(o.task.task_id.endswith(self.poison) and o.kind is OutcomeKind.COMPLETED for o in outcomes):
            raise ValueError("invalid byte sequence in result")
        super().record_outcomes(outcomes, inline_finish, acknowledge)
