"""Handles job messages: start a stage (build its tasks from the previous stage's results) or finalize a job."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial

from core import logcontext
from core.errors import MalformedMessage, UnknownJobType, classify
from core.ids import canonical_json
from core.jobs import FinalizeContext, JobDefinition, JobRegistry, PreviousResults, Stage
from core.keepalive import renewing
from core.messages import parse_job_message
from core.models import ErrorInfo, JobRecord, JobStatus, MessageKind, ReceivedMessage, StagePlan, TaskResultRow
from core.ports import Relay, StateStore
from core.rounds import FinalizeDecision
from core.services import Services
from core.settlement import Settlement, complete, dead_letter, recorded
from core.states import LIVE_JOB

log = logging.getLogger("coremachine.stages")

READ_AHEAD_RESULTS = 10_000
"""At most this many previous results are read ahead for a batch of job messages; beyond it (a wide fan-in) each
message reads its own when its turn comes, so a batch never holds several wide stages' results at once."""
MIN_FINALIZE_RECHECK_S = 0.2
MAX_FINALIZE_RECHECK_S = 5.0
FINALIZE_CLAIM_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class PlannedStage:
    """A stage message whose tasks are built, waiting to be created (see `StageRunner.start_planned`)."""

    message: ReceivedMessage
    job_type: str
    plan: StagePlan
    trace: dict[str, str] = field(default_factory=dict)
    """The trace context of the message's span, for the messages the stage's creation writes."""


@dataclass(frozen=True, slots=True)
class ReadAhead:
    """The reads a batch of job messages needs, made once for the batch (`StageRunner.read_ahead`): their jobs,
    and the previous stage's results of each stage message that is current. Plain reads, as each message would
    make on its own; the unit of work that creates a stage decides on its own read. A message whose reads are not
    here (the read-ahead failed, or the job was not current when read) makes them itself."""

    job_ids: frozenset[str] = frozenset()
    jobs: Mapping[str, JobRecord] = field(default_factory=dict)
    results: Mapping[tuple[str, int], list[TaskResultRow]] = field(default_factory=dict)


class StageRunner:
    def __init__(
        self, store: StateStore, relay: Relay, jobs: JobRegistry, services: Services | None = None,
        worker_id: str = "worker", finalize_claim_seconds: float = FINALIZE_CLAIM_SECONDS,
    ) -> None:
        self._store = store
        self._relay = relay
        self._jobs = jobs
        self._services = services or Services()
        self._worker_id = worker_id
        self._claim_seconds = finalize_claim_seconds

    def read_ahead(self, messages: Sequence[ReceivedMessage]) -> ReadAhead:
        """Read the jobs of `messages`, then the previous stage's results of their current stage messages: two
        reads for a batch instead of up to two per message. A job with several messages in the batch is left out:
        each of those reads it when its turn comes, after what the ones before it did."""
        parsed = []
        for message in messages:
            try:
                parsed.append(parse_job_message(message.body))
            except MalformedMessage:
                continue  # `prepare` dead-letters it
        counts = Counter(p.job_id for p in parsed)
        job_ids = sorted(job_id for job_id, count in counts.items() if count == 1)
        jobs = self._store.get_jobs(job_ids) if job_ids else {}
        wanted = sorted({
            (p.job_id, p.stage - 1) for p in parsed
            if p.kind is MessageKind.STAGE and p.stage is not None and p.stage > 1
            and (job := jobs.get(p.job_id)) is not None and _is_current(job, p.stage, p.plan_attempt)
        })
        results = self._store.stages_results(wanted, READ_AHEAD_RESULTS) if wanted else {}
        return ReadAhead(frozenset(job_ids), jobs, results or {})

    def prepare(self, message: ReceivedMessage, reads: ReadAhead | None = None) -> Settlement | PlannedStage:
        """Everything a job message needs before its stage is written: a stage message comes back planned (its
        tasks built from the parameters and the previous stage's results), to be created with others in
        `start_planned`; a finalize message, a duplicate or a failed planner is handled here and settled.
        `reads` are the batch's reads made ahead (`read_ahead`)."""
        reads = reads or ReadAhead()
        try:
            parsed = parse_job_message(message.body)
        except MalformedMessage as exc:
            return dead_letter(message, "MalformedMessage", str(exc))
        job = reads.jobs.get(parsed.job_id) if parsed.job_id in reads.job_ids else self._store.get_job(parsed.job_id)
        if job is None:
            return dead_letter(message, "UnknownJob", f"no job {parsed.job_id}")
        try:
            definition = self._jobs.get(job.job_type)
        except UnknownJobType as exc:
            return dead_letter(message, "UnknownJobType", str(exc))
        with logcontext.bind(job_id=job.job_id, job_type=job.job_type, stage=parsed.stage):
            if parsed.kind is MessageKind.STAGE:
                assert parsed.stage is not None
                known = reads.results.get((job.job_id, parsed.stage - 1))
                plan = self.plan_stage(job, definition, parsed.stage, parsed.plan_attempt, known)
                if plan is not None:
                    return PlannedStage(message, job.job_type, plan)
            else:
                self.finalize(job, definition)
        self._relay.flush()
        return complete(message)

    def start_planned(self, planned: Sequence[PlannedStage]) -> list[Settlement]:
        """Create the planned stages in one unit of work (see `StateStore.start_stages`) and settle their messages."""
        holds_queue = self._store.holds_queue
        created = self._store.start_stages([p.plan for p in planned], self._jobs.inline_finish(),
                                           [p.message for p in planned] if holds_queue else [])
        for p, was_created in zip(planned, created, strict=True):
            if was_created:
                with logcontext.bind(job_id=p.plan.job_id, job_type=p.job_type, stage=p.plan.stage):
                    log.info("stage started", extra={"stage_name": p.plan.stage_name, "tasks": len(p.plan.tasks)})
        self._relay.flush()
        return [recorded(p.message, holds_queue) for p in planned]

    def plan_stage(
        self, job: JobRecord, definition: JobDefinition, number: int, plan_attempt: int = 0,
        previous_results: list[TaskResultRow] | None = None,
    ) -> StagePlan | None:
        """The stage's plan, or None when the message is a duplicate or late, or the planner failed (handled).
        `previous_results`: the previous stage's, if already read."""
        if not _is_current(job, number, plan_attempt):
            log.info("stage message is a duplicate or late; ignored",
                     extra={"job_status": job.status.value, "current_stage": job.current_stage,
                            "plan_attempt": plan_attempt, "plan_attempts": job.plan_attempts})
            return None
        stage = definition.stage(number)
        if number == 1:
            previous = PreviousResults(0)
        elif previous_results is not None:
            previous = PreviousResults(number - 1, previous_results)
        else:
            previous = PreviousResults(number - 1, self._store.stage_results(job.job_id, number - 1))
        try:
            specs = definition.build_tasks(stage, job.parameters, previous)
        except Exception as exc:
            self._planning_failed(job, stage, plan_attempt, exc)
            return None
        return StagePlan(job.job_id, number, stage.name, specs, stage.max_attempts, stage.timeout_seconds, job.round)

    def _planning_failed(self, job: JobRecord, stage: Stage, plan_attempt: int, exc: Exception) -> None:
        """A transient error is retried by a scheduled stage message under the stage's retry policy; a permanent
        one, or the last attempt, fails the job (finalized as usual). Never left queued or processing."""
        where = f"{job.job_type}.create_tasks (stage {stage.number}: {stage.name})"
        error = replace(_error(exc, where), attempt=plan_attempt + 1)
        delay = self._store.planning_failed(job.job_id, stage.number, plan_attempt, error, stage.retry_policy())
        if delay is None:
            log.error("create_tasks failed; failing the job",
                      extra={"error": error.message, "error_class": error.error_class.value,
                             "attempt": plan_attempt + 1})
        else:
            log.warning("create_tasks failed; planning the stage again later",
                        extra={"error": error.message, "error_class": error.error_class.value,
                               "attempt": plan_attempt + 1, "retry_in_s": round(delay, 3)})

    def finalize(self, job: JobRecord, definition: JobDefinition) -> bool:
        """Run the job's finalize exactly once per round: under the finalize claim (renewed while it runs), and
        finish the job only while the claim is still ours."""
        if job.status is not JobStatus.FINALIZING:
            log.info("finalize message is a duplicate or late; ignored", extra={"job_status": job.status.value})
            return False
        owner = f"{self._worker_id}:{uuid.uuid4().hex[:12]}"
        start = self._store.begin_finalize(
            job.job_id, owner, self._claim_seconds, MIN_FINALIZE_RECHECK_S, MAX_FINALIZE_RECHECK_S
        )
        if start.decision is not FinalizeDecision.RUN or start.job is None:
            log.info("finalize deferred or not needed",
                     extra={"decision": start.decision.value, "reason": start.reason,
                            "recheck_in_s": round(start.delay_seconds, 2)})
            return False
        job = start.job
        outcome = job.outcome or JobStatus.COMPLETED
        context = FinalizeContext(
            job_id=job.job_id,
            job_type=job.job_type,
            parameters=job.parameters,
            outcome=outcome,
            stage_results=_LazyResults(self._store, job),
            stage_counts=_LazyCounts(self._store, job.job_id),
            errors=[job.error] if job.error else [],
            services=self._services,
        )
        status, result, error = outcome, None, None
        renew = partial(self._store.renew_finalize_claim, job.job_id, owner, self._claim_seconds)
        with renewing(renew, self._claim_seconds / 3, "finalize"):
            try:
                result = definition.finalize(context)
                canonical_json(result)
            except Exception as exc:
                result = None
                error = _error(exc, f"{job.job_type}.finalize")
                status = JobStatus.COMPLETED_WITH_ERRORS if outcome is JobStatus.COMPLETED else outcome
                log.error("finalize raised; the job still ends",
                          extra={"error": error.message, "status": status.value})
        finished = self._store.finish_job(job.job_id, owner, status, result, error.to_json() if error else None)
        if finished:
            log.info("job finished", extra={"status": status.value})
        else:
            log.warning("finalize ran but its claim was taken over; the job is finished by its new owner")
        return finished


class _LazyResults(Mapping[int, PreviousResults]):
    """Stage results read from the store only when finalize asks for them."""

    def __init__(self, store: StateStore, job: JobRecord) -> None:
        self._store = store
        self._job = job
        self._cache: dict[int, PreviousResults] = {}

    def __getitem__(self, stage: int) -> PreviousResults:
        if not 1 <= stage <= self._job.total_stages:
            raise KeyError(stage)
        if stage not in self._cache:
            self._cache[stage] = PreviousResults(stage, self._store.stage_results(self._job.job_id, stage))
        return self._cache[stage]

    def __iter__(self) -> Iterator[int]:
        return iter(range(1, self._job.total_stages + 1))

    def __len__(self) -> int:
        return self._job.total_stages


class _LazyCounts(Mapping[int, Mapping[str, int]]):
    """Tasks by status per stage, read from the store the first time finalize looks at them."""

    def __init__(self, store: StateStore, job_id: str) -> None:
        self._store = store
        self._job_id = job_id
        self._counts: dict[int, dict[str, int]] | None = None

    def _read(self) -> dict[int, dict[str, int]]:
        if self._counts is None:
            self._counts = self._store.stage_counts(self._job_id)
        return self._counts

    def __getitem__(self, stage: int) -> Mapping[str, int]:
        return self._read()[stage]

    def __iter__(self) -> Iterator[int]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())


def _error(exc: BaseException, where: str) -> ErrorInfo:
    return ErrorInfo(
        type(exc).__name__, classify(exc), str(exc)[:2000] or type(exc).__name__, where=where,
        at=datetime.now(UTC).isoformat(),
    )


def _is_current(job: JobRecord, stage: int, plan_attempt: int) -> bool:
    """Whether a stage message (of `stage`, after `plan_attempt` failed plans) is the one the job waits for."""
    return job.status in LIVE_JOB and job.current_stage == stage and job.plan_attempts == plan_attempt
