"""CoreMachine: submit jobs and handle job and task messages, through the store, relay and registries."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

from core import logcontext
from core.errors import InvalidParameters, classify
from core.heartbeat import Heartbeat, LeaseConfig
from core.jobs import JobRegistry
from core.middleware import DEFAULT_MIDDLEWARE, Middleware
from core.models import JSON, JobRecord, JobSnapshot, NewJob, ReceivedMessage
from core.ports import Relay, StateStore
from core.registry import TaskRegistry
from core.rounds import OperatorResult, Refusal
from core.services import Services
from core.settlement import Settlement, give_back
from core.stage_runner import FINALIZE_CLAIM_SECONDS, PlannedStage, ReadAhead, StageRunner
from core.store import cancel_error
from core.task_runner import TaskRunner
from core.traced import job_message_span, task_batch_traces, tracing_middleware
from core.tracing import NoTelemetry, Telemetry, bound_traces

log = logging.getLogger("coremachine.engine")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SubmitResult:
    job: JobRecord
    created: bool


BATCH_TASKS = 1000
"""Stage messages received together are created in one unit of work while their tasks number at most this."""


def _groups(planned: list[PlannedStage], max_tasks: int) -> list[list[PlannedStage]]:
    """Planned stages in receive order, grouped so that each group holds at most `max_tasks` tasks and one stage
    per job; a bigger stage forms a group of its own."""
    groups: list[list[PlannedStage]] = []
    current: list[PlannedStage] = []
    tasks = 0
    for p in planned:
        size = len(p.plan.tasks)
        if current and (tasks + size > max_tasks or any(q.plan.job_id == p.plan.job_id for q in current)):
            groups.append(current)
            current, tasks = [], 0
        current.append(p)
        tasks += size
    if current:
        groups.append(current)
    return groups


class CoreMachine:
    """The engine. Stateless between calls: everything it knows is in the store."""

    def __init__(
        self,
        store: StateStore,
        relay: Relay,
        jobs: JobRegistry,
        tasks: TaskRegistry,
        worker_id: str = "worker",
        middleware: Sequence[Middleware] = DEFAULT_MIDDLEWARE,
        services: Services | None = None,
        telemetry: Telemetry | None = None,
        finalize_claim_seconds: float = FINALIZE_CLAIM_SECONDS,
        *,
        leases: LeaseConfig | None = None,
    ) -> None:
        self.services = services or Services()
        self.store = store
        self.relay = relay
        self.jobs = jobs
        self.tasks = tasks
        self.worker_id = worker_id
        self.telemetry: Telemetry = telemetry or NoTelemetry()
        self._traced = telemetry is not None
        if telemetry is not None:
            middleware = (*middleware, tracing_middleware(telemetry))
        self._stages = StageRunner(store, relay, jobs, self.services, worker_id, finalize_claim_seconds)
        self.heartbeat = Heartbeat()
        self._tasks = TaskRunner(store, relay, jobs, tasks, worker_id, middleware, self.services,
                                 heartbeat=self.heartbeat, leases=leases or LeaseConfig())

    def submit(self, job_type: str, parameters: Mapping[str, Any]) -> SubmitResult:
        """Validate, derive the job id, and create the job with its first stage message — or return the
        existing job if these exact parameters were submitted before."""
        definition = self.jobs.get(job_type)
        validated = definition.validate_parameters(definition.prepare(parameters, self.services))
        job_id = definition.job_id(validated)
        with (
            self.telemetry.span("coremachine.submit", {"job_id": job_id, "job_type": job_type}) as span,
            bound_traces({job_id: self.telemetry.carrier()}),
        ):
            record, created = self.store.create_job(
                NewJob(job_id, job_type, validated, len(definition.stages), definition.failure_policy)
            )
            span.set_attribute("created", created)
            if created:
                self.relay.flush()
        with logcontext.bind(job_id=job_id, job_type=job_type):
            log.info("job submitted" if created else "job already exists", extra={"new_job": created})
        return SubmitResult(record, created)

    def submit_many(self, job_type: str, parameters: Sequence[Mapping[str, Any]]) -> list[SubmitResult]:
        """`submit` for many jobs of one type in one transaction (a burst costs one commit, not one per job).
        Every entry is validated before anything is created: one invalid entry refuses the whole call, its
        fields named `jobs.<index>.<field>`. Results come in the order given; a repeat is `created=False`."""
        definition = self.jobs.get(job_type)
        validated: list[JSON] = []
        for index, entry in enumerate(parameters):
            try:
                validated.append(definition.validate_parameters(definition.prepare(entry, self.services)))
            except InvalidParameters as exc:
                raise InvalidParameters(job_type, [
                    {**d, "field": f"jobs.{index}.{d['field']}"} for d in exc.details]) from exc
        new = [NewJob(definition.job_id(v), job_type, v, len(definition.stages), definition.failure_policy)
               for v in validated]
        with self.telemetry.span("coremachine.submit_many", {"job_type": job_type, "jobs": len(new)}) as span:
            carrier = self.telemetry.carrier()
            with bound_traces({job.job_id: carrier for job in new}):
                results = self.store.create_jobs(new)
            created = sum(1 for _, was_created in results if was_created)
            span.set_attribute("created", created)
            if created:
                self.relay.flush()
        with logcontext.bind(job_type=job_type):
            log.info("jobs submitted", extra={"jobs": len(new), "new_jobs": created})
        return [SubmitResult(record, was_created) for record, was_created in results]

    def handle_job_messages(self, messages: Sequence[ReceivedMessage]) -> list[Settlement]:
        """Each job message on its own: one that fails is given back (with backoff) and the others go on.

        Stage messages are planned one by one, then their stages are created together in one unit of work (small
        stages only, up to `BATCH_TASKS` tasks in all); should that fail, each is created on its own, so an error
        of one message never changes the settlement of another."""
        try:
            reads = self._stages.read_ahead(messages)
        except Exception:
            log.warning("reading ahead for %d job messages failed; each reads its own", len(messages), exc_info=True)
            reads = ReadAhead()
        prepared = [self._prepare(m, reads) for m in messages]
        planned = [p for p in prepared if isinstance(p, PlannedStage)]
        started: dict[int, Settlement] = {}
        for group in _groups(planned, BATCH_TASKS):
            for p, settlement in zip(group, self._start_together(group), strict=True):
                started[id(p)] = settlement
        return [started[id(p)] if isinstance(p, PlannedStage) else p for p in prepared]

    def _prepare(self, message: ReceivedMessage, reads: ReadAhead) -> Settlement | PlannedStage:
        def prepare() -> Settlement | PlannedStage:
            prepared = self._stages.prepare(message, reads)
            if isinstance(prepared, PlannedStage):
                return replace(prepared, trace=self.telemetry.carrier())
            return prepared

        return self._isolated(message, prepare)

    def _start_together(self, group: list[PlannedStage]) -> list[Settlement]:
        if len(group) > 1:
            try:
                with self._planning_traces(group):
                    return self._stages.start_planned(group)
            except Exception:
                log.warning("creating %d stages together failed; creating each on its own", len(group),
                            exc_info=True)
        return [self._isolated(p.message, partial(self._start_alone, p), span=False) for p in group]

    def _start_alone(self, planned: PlannedStage) -> Settlement:
        with self._planning_traces([planned]):
            return self._stages.start_planned([planned])[0]

    def _planning_traces(self, group: Sequence[PlannedStage]) -> AbstractContextManager[None]:
        """Messages a stage's creation writes carry the trace of its planning span (nothing to bind when off)."""
        if not self._traced:
            return nullcontext()
        return bound_traces({p.plan.job_id: p.trace for p in group})

    def _isolated(self, message: ReceivedMessage, handle: Callable[[], T], *, span: bool = True) -> T | Settlement:
        """Run `handle` for one job message (in its span, unless the span was the planning's); any error gives
        that message back for redelivery."""
        try:
            if not (self._traced and span):  # telemetry off: no span, and nothing to stamp on what is written
                return handle()
            with job_message_span(self.telemetry, message):
                return handle()
        except Exception as exc:
            log.warning(
                "job message failed; giving it back for redelivery",
                exc_info=True,
                extra={"message_id": message.message_id, "delivery_count": message.delivery_count,
                       "error_type": type(exc).__name__, "error_class": classify(exc).value},
            )
            return give_back(message, f"{type(exc).__name__}: {exc}")

    def handle_task_messages(
        self, messages: Sequence[ReceivedMessage], resume: Callable[[list[Settlement]], None] | None = None
    ) -> list[Settlement]:
        """Run a batch of task messages; each gets its settlement. A caller that can be replaced (a worker's
        task thread) passes `resume`: fast handlers then run on its own thread without a hand-off, and if one
        hangs past its limit the batch's settlements go to `resume` on another thread while this one gets
        `core.attempts.Abandoned` and must end."""
        traces = task_batch_traces(messages)
        if not traces:
            return self._tasks.run(messages, resume)
        with bound_traces(traces):
            return self._tasks.run(messages, resume)

    def split_task_messages(self, messages: Sequence[ReceivedMessage]) -> list[Settlement]:
        """Send messages of several tasks again as one message per task (tasks too slow to share a thread)."""
        return self._tasks.split(messages)

    @property
    def abandoned_handler_threads(self) -> int:
        """Handler threads given up on because an attempt hung past its time limit."""
        return self._tasks.limits.abandoned_threads

    @property
    def abandoned_batches_in_flight(self) -> int:
        """Batches whose handler thread was abandoned, still being finished on another thread."""
        return self._tasks.limits.taking_over

    def release_thread(self) -> None:
        """The calling thread will handle no more task messages: its handler thread may end."""
        self._tasks.limits.close_thread()

    def status(self, job_id: str) -> JobSnapshot | None:
        return self.store.snapshot(job_id)

    def cancel(self, job_id: str, reason: str = "cancelled by an operator") -> OperatorResult:
        """Stop a queued or processing job: its unstarted tasks are cancelled at once, running handlers see
        `context.cancelled`, late outcomes change nothing, and finalize ends the job `cancelled`."""
        return self._operator(self.store.cancel(job_id, cancel_error(reason)))

    def retry(self, job_id: str) -> OperatorResult:
        """Run again what failed in an ended job: the failed and cancelled tasks of the stage where it stopped
        (each with the stage's attempts again), or that stage's planning; a new round of the same job."""
        job = self.store.get_job(job_id)
        if job is None:
            return OperatorResult("retry", job_id, False, f"no job {job_id}", Refusal.NOT_FOUND)
        more_attempts = self.jobs.get(job.job_type).stage(job.current_stage).max_attempts
        return self._operator(self.store.retry(job_id, job.current_stage, more_attempts))

    def rerun(self, job_id: str) -> OperatorResult:
        """Run an ended job again from stage 1 as a fresh round of the same job id, its history kept."""
        return self._operator(self.store.rerun(job_id))

    def _operator(self, result: OperatorResult) -> OperatorResult:
        if result.accepted:
            self.relay.flush()
        with logcontext.bind(job_id=result.job_id):
            log.info("operator action", extra={"action": result.action, "accepted": result.accepted,
                                               "refusal": result.refusal.value if result.refusal else None,
                                               "round": result.round})
        return result
