"""Handles job messages: start a stage (build its tasks from the previous stage's results) or finalize."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

from core import logcontext
from core.errors import MalformedMessage, UnknownJobType, classify
from core.ids import canonical_json
from core.jobs import FinalizeContext, JobDefinition, JobRegistry, PreviousResults
from core.messages import parse_job_message
from core.models import ErrorClass, ErrorInfo, JobRecord, JobStatus, MessageKind, ReceivedMessage, StagePlan
from core.ports import Relay, StateStore
from core.services import Services
from core.settlement import Settlement, complete, dead_letter

log = logging.getLogger("coremachine.stages")

MIN_FINALIZE_RECHECK_S = 0.2
MAX_FINALIZE_RECHECK_S = 5.0


class StageRunner:
    def __init__(self, store: StateStore, relay: Relay, jobs: JobRegistry, services: Services | None = None) -> None:
        self._store = store
        self._relay = relay
        self._jobs = jobs
        self._services = services or Services()

    def run(self, message: ReceivedMessage) -> Settlement:
        try:
            parsed = parse_job_message(message.body)
        except MalformedMessage as exc:
            return dead_letter(message, "MalformedMessage", str(exc))
        job = self._store.get_job(parsed.job_id)
        if job is None:
            return dead_letter(message, "UnknownJob", f"no job {parsed.job_id}")
        try:
            definition = self._jobs.get(job.job_type)
        except UnknownJobType as exc:
            return dead_letter(message, "UnknownJobType", str(exc))
        with logcontext.bind(job_id=job.job_id, job_type=job.job_type, stage=parsed.stage):
            if parsed.kind is MessageKind.STAGE:
                assert parsed.stage is not None
                self.start_stage(job, definition, parsed.stage)
            else:
                self.finalize(job, definition)
        self._relay.flush()
        return complete(message)

    def start_stage(self, job: JobRecord, definition: JobDefinition, number: int) -> bool:
        if job.status not in (JobStatus.QUEUED, JobStatus.PROCESSING) or job.current_stage != number:
            log.info("stage message is a duplicate or late; ignored",
                     extra={"job_status": job.status.value, "current_stage": job.current_stage})
            return False
        stage = definition.stage(number)
        previous = (
            PreviousResults(number - 1, self._store.stage_results(job.job_id, number - 1))
            if number > 1
            else PreviousResults(0)
        )
        try:
            specs = definition.build_tasks(stage, job.parameters, previous)
        except Exception as exc:
            if classify(exc) is ErrorClass.TRANSIENT:
                raise
            error = _error(exc, f"{job.job_type}.create_tasks (stage {number}: {stage.name})")
            log.error("create_tasks failed; failing the job", extra={"error": error.message})
            self._store.fail_job(job.job_id, error)
            return False
        created = self._store.start_stage(
            StagePlan(job.job_id, number, stage.name, specs, stage.max_attempts, stage.timeout_seconds)
        )
        if created:
            log.info("stage started", extra={"stage_name": stage.name, "tasks": len(specs)})
        return created

    def finalize(self, job: JobRecord, definition: JobDefinition) -> bool:
        if job.status is not JobStatus.FINALIZING:
            log.info("finalize message is a duplicate or late; ignored", extra={"job_status": job.status.value})
            return False
        outcome = job.outcome or JobStatus.COMPLETED
        live = self._store.live_lease_seconds(job.job_id)
        if live is not None:
            delay = min(max(live, MIN_FINALIZE_RECHECK_S), MAX_FINALIZE_RECHECK_S)
            log.info("finalize waits for running tasks to finish", extra={"recheck_in_s": round(delay, 2)})
            self._store.defer_finalize(job.job_id, delay)
            return False
        context = FinalizeContext(
            job_id=job.job_id,
            job_type=job.job_type,
            parameters=job.parameters,
            outcome=outcome,
            stage_results=_LazyResults(self._store, job),
            stage_counts=self._store.stage_counts(job.job_id),
            errors=[job.error] if job.error else [],
            services=self._services,
        )
        status, result, error = outcome, None, None
        try:
            result = definition.finalize(context)
            canonical_json(result)
        except Exception as exc:
            result = None
            error = _error(exc, f"{job.job_type}.finalize")
            status = JobStatus.COMPLETED_WITH_ERRORS if outcome is JobStatus.COMPLETED else outcome
            log.error("finalize raised; the job still ends", extra={"error": error.message, "status": status.value})
        finished = self._store.finish_job(job.job_id, status, result, error)
        if finished:
            log.info("job finished", extra={"status": status.value})
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


def _error(exc: BaseException, where: str) -> ErrorInfo:
    return ErrorInfo(
        type(exc).__name__, classify(exc), str(exc)[:2000] or type(exc).__name__, where=where,
        at=datetime.now(UTC).isoformat(),
    )
