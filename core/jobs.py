"""Declarative job types: stages, a parameter model, how to build tasks and how to finalize."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import ConfigurationError, InvalidParameters, PreviousResultsError, UnknownJobType
from core.ids import canonical_json, job_id_for
from core.models import JSON, FailurePolicy, JobStatus, TaskResultRow, TaskSpec
from core.progress import default_result
from core.registry import TaskRegistry, import_package, in_packages
from core.retry import RetryPolicy
from core.services import Services

T = TypeVar("T")


class JobParameters(BaseModel):
    """Base for parameter models: unknown fields are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass(frozen=True, slots=True)
class Stage:
    """One step of a job. `number` is filled in from the position in `JobDefinition.stages`.

    `timeout_seconds` is the time limit of one attempt of a task: past it the attempt is failed as a transient
    `TaskTimeout` (retried per `retry`/`max_attempts`) and the worker moves on. It is not the lease: a claim
    lasts `COREMACHINE_TASK_LEASE_SECONDS` (at most this limit) and the running worker renews it.
    """

    name: str
    task_type: str
    max_attempts: int = 3
    timeout_seconds: float = 300.0
    retry: RetryPolicy | None = None
    number: int = 0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(f"stage {self.name!r}: max_attempts must be at least 1")
        if not self.timeout_seconds > 0:
            raise ConfigurationError(f"stage {self.name!r}: timeout_seconds must be greater than 0")

    def retry_policy(self) -> RetryPolicy:
        base = self.retry or RetryPolicy()
        if base.maximum_attempts == self.max_attempts:
            return base
        return RetryPolicy(
            initial_interval=base.initial_interval,
            backoff_coefficient=base.backoff_coefficient,
            maximum_interval=base.maximum_interval,
            maximum_attempts=self.max_attempts,
            jitter=base.jitter,
        )


@dataclass(frozen=True, slots=True)
class PreviousResults:
    """Results of the previous stage's completed tasks, in task order, with shape-checking accessors."""

    stage: int
    rows: Sequence[TaskResultRow] = ()

    def results(self) -> list[JSON]:
        return [row.result or {} for row in self.rows if row.result is not None]

    def __iter__(self) -> Iterator[JSON]:
        return iter(self.results())

    def __len__(self) -> int:
        return len(self.results())

    def values(self, key: str, expected: type[T] | tuple[type, ...] = object) -> list[T]:  # type: ignore[assignment]
        """`result[key]` of every completed task, each checked against `expected`."""
        out: list[T] = []
        for row in self.rows:
            if row.result is None:
                continue
            if not isinstance(row.result, Mapping) or key not in row.result:
                keys = sorted(row.result) if isinstance(row.result, Mapping) else type(row.result).__name__
                raise PreviousResultsError(
                    f"stage {self.stage} task {row.index} ({row.task_id}) has no {key!r} in its result; "
                    f"it has {keys}"
                )
            value = row.result[key]
            if not isinstance(value, expected):
                raise PreviousResultsError(
                    f"stage {self.stage} task {row.index}: {key!r} should be {_type_name(expected)}, "
                    f"got {type(value).__name__}"
                )
            out.append(value)  # type: ignore[arg-type]
        return out

    def flat(self, key: str) -> list[Any]:
        """Concatenate list-valued `result[key]` across tasks (for 'list items' stages)."""
        out: list[Any] = []
        for value in self.values(key, list):
            out.extend(value)
        return out


@dataclass(frozen=True, slots=True)
class FinalizeContext:
    job_id: str
    job_type: str
    parameters: JSON
    outcome: JobStatus
    stage_results: Mapping[int, PreviousResults]
    stage_counts: Mapping[int, Mapping[str, int]]
    errors: Sequence[JSON] = field(default_factory=tuple)
    services: Services = field(default_factory=Services)

    def last_results(self) -> PreviousResults:
        if not self.stage_results:
            return PreviousResults(stage=0)
        return self.stage_results[max(self.stage_results)]


class JobDefinition:
    """Subclass with `job_type`, `Parameters`, `stages` and `create_tasks`; `finalize` is optional."""

    job_type: ClassVar[str]
    description: ClassVar[str] = ""
    # Benchmark and drill jobs: runnable by name, but left out of the lists people choose from (CLI help).
    internal: ClassVar[bool] = False
    Parameters: ClassVar[type[JobParameters]]
    stages: ClassVar[Sequence[Stage]]
    failure_policy: ClassVar[FailurePolicy] = FailurePolicy.FAIL_FAST

    def create_tasks(
        self, stage: Stage, params: Any, previous: PreviousResults
    ) -> Iterable[TaskSpec | JSON]:
        raise NotImplementedError

    def prepare(self, parameters: Mapping[str, Any], services: Services) -> Mapping[str, Any]:
        """Called on submit before validation: may add what the job's identity depends on besides the caller's
        parameters (the ingest job adds its input files' hashes). Validation itself never reads anything."""
        return parameters

    def finalize(self, context: FinalizeContext) -> JSON:
        """The default: the outcome and the tasks by status per stage. A job type that keeps it and ends
        `completed` is finished by the transaction that completes its last stage (no finalize message), with this
        same result computed from the stage counters."""
        return default_result(context.outcome, context.stage_counts)

    @classmethod
    def finalizes_by_default(cls) -> bool:
        """True if this job type keeps the default `finalize` (nothing of its own runs when its round ends)."""
        return cls.finalize is JobDefinition.finalize

    # Helpers the engine uses; job authors need not override them.

    @classmethod
    def numbered_stages(cls) -> tuple[Stage, ...]:
        return tuple(
            Stage(s.name, s.task_type, s.max_attempts, s.timeout_seconds, s.retry, number=i)
            for i, s in enumerate(cls.stages, start=1)
        )

    def stage(self, number: int) -> Stage:
        stages = self.numbered_stages()
        if not 1 <= number <= len(stages):
            raise ConfigurationError(f"{self.job_type} has no stage {number}")
        return stages[number - 1]

    def validate_parameters(self, raw: Mapping[str, Any]) -> JSON:
        """Validated parameters as canonical JSON-ready data (defaults applied)."""
        try:
            model = self.Parameters.model_validate(dict(raw))
        except ValidationError as exc:
            details = [
                {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "message": err["msg"]}
                for err in exc.errors()
            ]
            raise InvalidParameters(self.job_type, details) from exc
        data: JSON = model.model_dump(mode="json")
        canonical_json(data)  # rejects NaN and non-JSON values early
        nul = _first_nul(data)
        if nul is not None:
            # PostgreSQL text and jsonb cannot hold U+0000; refuse it here rather than fail in the store.
            raise InvalidParameters(self.job_type, [{"field": nul or "(body)", "message": "contains a NUL character"}])
        return data

    def job_id(self, parameters: JSON) -> str:
        return job_id_for(self.job_type, parameters)

    def parse(self, parameters: JSON) -> Any:
        return self.Parameters.model_validate(parameters)

    def build_tasks(self, stage: Stage, parameters: JSON, previous: PreviousResults) -> list[TaskSpec]:
        specs: list[TaskSpec] = []
        for item in self.create_tasks(stage, self.parse(parameters), previous):
            if isinstance(item, TaskSpec):
                specs.append(item)
            elif isinstance(item, Mapping):
                specs.append(TaskSpec(task_type=stage.task_type, parameters=dict(item)))
            else:
                raise ConfigurationError(
                    f"{self.job_type}.create_tasks yielded {type(item).__name__}; expected a dict or TaskSpec"
                )
        return specs


class JobRegistry:
    """Job types by name, checked against the task registry at start-up."""

    def __init__(self, definitions: Iterable[JobDefinition] = ()) -> None:
        self._jobs: dict[str, JobDefinition] = {}
        self._inline: frozenset[str] = frozenset()
        for definition in definitions:
            self.register(definition)

    def register(self, definition: JobDefinition) -> None:
        name = getattr(definition, "job_type", None)
        if not name:
            raise ConfigurationError(f"{type(definition).__name__} has no job_type")
        if name in self._jobs and type(self._jobs[name]) is not type(definition):
            raise ConfigurationError(f"job type {name!r} is defined twice")
        if not getattr(definition, "stages", None):
            raise ConfigurationError(f"job type {name!r} declares no stages")
        self._jobs[name] = definition
        self._inline = frozenset(n for n, d in self._jobs.items() if d.finalizes_by_default())

    def inline_finish(self) -> frozenset[str]:
        """Job types whose round ends inline when it completes: they keep the default `finalize`, so a completed
        round has nothing left to run and needs no finalize message (see `core.outcomes.stage_done`)."""
        return self._inline

    def get(self, job_type: str) -> JobDefinition:
        try:
            return self._jobs[job_type]
        except KeyError:
            raise UnknownJobType(job_type, self._jobs) from None

    def names(self) -> list[str]:
        return sorted(self._jobs)

    def public_names(self) -> list[str]:
        """Job types people choose from: every registered one except those marked `internal`."""
        return [name for name in self.names() if not self._jobs[name].internal]

    def __iter__(self) -> Iterator[JobDefinition]:
        return iter(self._jobs[n] for n in self.names())

    def check_handlers(self, tasks: TaskRegistry) -> None:
        """Fail start-up if any stage names a task type with no handler."""
        missing = [
            f"{job.job_type} stage {stage.number} ({stage.name}) → {stage.task_type!r}"
            for job in self
            for stage in job.numbered_stages()
            if stage.task_type not in tasks
        ]
        if missing:
            raise ConfigurationError("task types with no registered handler: " + "; ".join(missing))


def discover_jobs(*packages: str) -> JobRegistry:
    """Import every module under the packages and register each concrete JobDefinition subclass."""
    for package in packages:
        import_package(package)
    registry = JobRegistry()
    for cls in _subclasses(JobDefinition):
        if "job_type" in cls.__dict__ and in_packages(cls.__module__, packages):
            registry.register(cls())
    return registry


def _subclasses(cls: type) -> list[type]:
    out: list[type] = []
    sub: type
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_subclasses(sub))
    return out


def _first_nul(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (value or key) containing U+0000, or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return where
            found = _first_nul(item, where)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _first_nul(item, f"{path}.{i}" if path else str(i))
            if found is not None:
                return found
    return None


def _type_name(expected: type | tuple[type, ...]) -> str:
    if isinstance(expected, tuple):
        return " or ".join(t.__name__ for t in expected)
    return expected.__name__
