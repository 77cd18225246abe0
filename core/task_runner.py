"""Runs a batch of task messages: claim with a lease, call handlers, record every outcome in one commit."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from core import logcontext
from core.errors import ConfigurationError, MalformedMessage, PermanentError, UnknownJobType, classify
from core.ids import canonical_json
from core.jobs import JobRegistry
from core.messages import TaskMessage, parse_task_message
from core.middleware import DEFAULT_MIDDLEWARE, Middleware, wrap
from core.models import JSON, ClaimedTask, ErrorClass, ErrorInfo, OutcomeKind, ReceivedMessage, TaskOutcome
from core.ports import Relay, StateStore
from core.registry import TaskContext, TaskRegistry
from core.retry import RetryPolicy
from core.services import Services
from core.settlement import Settlement, complete, dead_letter, give_back

log = logging.getLogger("coremachine.tasks")


class TaskRunner:
    def __init__(
        self,
        store: StateStore,
        relay: Relay,
        jobs: JobRegistry,
        tasks: TaskRegistry,
        worker_id: str,
        middleware: Sequence[Middleware] = DEFAULT_MIDDLEWARE,
        services: Services | None = None,
    ) -> None:
        self._store = store
        self._relay = relay
        self._jobs = jobs
        self._tasks = tasks
        self._services = services or Services()
        self._worker_id = worker_id
        self._middleware = tuple(middleware)

    def run(self, messages: Sequence[ReceivedMessage]) -> list[Settlement]:
        """Claim, run and record a batch; every message gets its own settlement, whatever happens to the others.

        The batch shares one claim and one commit (group commit). If the commit fails, the outcomes are recorded
        one by one, so one poison outcome cannot sink healthy ones.
        """
        settlements: list[Settlement] = []
        wanted: dict[str, tuple[TaskMessage, ReceivedMessage]] = {}
        for message in messages:
            try:
                settlement = self._screen(message, wanted)
            except Exception as exc:
                settlement = self._give_back(message, exc, "screening the message")
            if settlement is not None:
                settlements.append(settlement)
        if not wanted:
            return settlements

        claimed, given_back = self._claim(wanted)
        settlements.extend(given_back.values())
        settled = {task.task_id for task in claimed} | set(given_back)
        unclaimed = {task_id: wanted[task_id] for task_id in wanted if task_id not in settled}
        if unclaimed:
            settlements.extend(self._not_claimed(unclaimed))

        outcomes = [self._execute(task) for task in claimed]
        settlements.extend(self._record(outcomes, wanted))
        try:
            self._relay.flush()
        except Exception:
            log.exception("relay flush failed; the janitor relays the stranded outbox rows")
        return settlements

    def _screen(
        self, message: ReceivedMessage, wanted: dict[str, tuple[TaskMessage, ReceivedMessage]]
    ) -> Settlement | None:
        """Settle a message that cannot be run (malformed, unknown type, repeated in the batch), else note it."""
        try:
            parsed = parse_task_message(message.body)
        except MalformedMessage as exc:
            log.warning("malformed task message", extra={"message_id": message.message_id, "error": str(exc)})
            return dead_letter(message, "MalformedMessage", str(exc))
        if parsed.task_type not in self._tasks:
            return self._unknown_task_type(message, parsed)
        if parsed.task_id in wanted:
            return complete(message)
        wanted[parsed.task_id] = (parsed, message)
        return None

    def _claim(
        self, wanted: dict[str, tuple[TaskMessage, ReceivedMessage]]
    ) -> tuple[list[ClaimedTask], dict[str, Settlement]]:
        """One claim for the batch; if it fails, one per message, and a message whose claim fails is given back
        (returned by task id)."""
        try:
            return self._store.claim_tasks(list(wanted), self._worker_id), {}
        except Exception as exc:
            if len(wanted) == 1:
                [(task_id, (_, message))] = wanted.items()
                return [], {task_id: self._give_back(message, exc, "claiming its task")}
            log.warning("claiming a batch failed; claiming one by one", extra={"error": str(exc)[:500]})
        claimed: list[ClaimedTask] = []
        given_back: dict[str, Settlement] = {}
        for task_id, (_, message) in wanted.items():
            try:
                claimed.extend(self._store.claim_tasks([task_id], self._worker_id))
            except Exception as exc:
                given_back[task_id] = self._give_back(message, exc, "claiming its task")
        return claimed, given_back

    def _not_claimed(self, unclaimed: dict[str, tuple[TaskMessage, ReceivedMessage]]) -> list[Settlement]:
        """Tasks not claimable: done, leased elsewhere, job over - or not due yet. A message that came before its
        retry is due (clock skew, an early scheduled delivery) is deferred to the due time, never just dropped."""
        try:
            deferred = set(self._store.defer_early_tasks([(t, p.attempt) for t, (p, _) in unclaimed.items()]))
        except Exception as exc:
            return [self._give_back(message, exc, "checking whether it came early") for _, message in
                    unclaimed.values()]
        for task_id, (parsed, message) in unclaimed.items():
            if task_id in deferred:
                log.info("task message came before its retry is due; deferred to the due time",
                         extra={"task_id": task_id, "attempt": parsed.attempt, "message_id": message.message_id})
            else:
                log.debug("task not claimable (done, leased elsewhere or job over)",
                          extra={"task_id": task_id, "message_id": message.message_id})
        return [complete(message) for _, message in unclaimed.values()]

    def _record(
        self, outcomes: Sequence[TaskOutcome], wanted: dict[str, tuple[TaskMessage, ReceivedMessage]]
    ) -> list[Settlement]:
        if not outcomes:
            return []
        try:
            self._store.record_outcomes(outcomes)
        except Exception as exc:
            if len(outcomes) == 1:
                return [self._record_alone(outcomes[0], wanted[outcomes[0].task.task_id][1], exc)]
            log.warning("group commit of %d outcomes failed; recording them one by one", len(outcomes),
                        extra={"error_type": type(exc).__name__, "error": str(exc)[:500]})
            return [self._record_alone(o, wanted[o.task.task_id][1]) for o in outcomes]
        return [complete(wanted[o.task.task_id][1]) for o in outcomes]

    def _record_alone(
        self, outcome: TaskOutcome, message: ReceivedMessage, failure: Exception | None = None
    ) -> Settlement:
        """Record one outcome. One the store refuses (not an outage: its own data) becomes a permanent failure of
        the task, recorded with the reason; an outage gives the message back for redelivery."""
        if failure is None:
            try:
                self._store.record_outcomes([outcome])
                return complete(message)
            except Exception as exc:
                failure = exc
        if classify(failure) is ErrorClass.TRANSIENT:
            return self._give_back(message, failure, "recording its outcome")
        error = ErrorInfo(
            "OutcomeNotRecorded", ErrorClass.PERMANENT,
            f"the {outcome.kind.value} outcome of attempt {outcome.task.attempt} could not be stored: "
            f"{type(failure).__name__}: {failure}"[:2000],
            attempt=outcome.task.attempt, where="worker", at=_now(),
        )
        with logcontext.bind(job_id=outcome.task.job_id, task_id=outcome.task.task_id, attempt=outcome.task.attempt):
            log.error("task outcome could not be stored; failing the task", extra={"error": error.message})
        try:
            self._store.record_outcomes([TaskOutcome(outcome.task, OutcomeKind.FAILED, error=error)])
        except Exception as exc:
            return self._give_back(message, exc, "recording its outcome")
        return complete(message)

    @staticmethod
    def _give_back(message: ReceivedMessage, exc: Exception, doing: str) -> Settlement:
        log.warning("giving a task message back for redelivery: %s failed", doing,
                    extra={"message_id": message.message_id, "delivery_count": message.delivery_count,
                           "error_type": type(exc).__name__, "error": str(exc)[:500]})
        return give_back(message, f"{doing}: {type(exc).__name__}: {exc}")

    def _unknown_task_type(self, message: ReceivedMessage, parsed: TaskMessage) -> Settlement:
        description = f"no handler registered for task type {parsed.task_type!r} on worker {self._worker_id}"
        with logcontext.bind(job_id=parsed.job_id, stage=parsed.stage, task_id=parsed.task_id):
            log.error("dead-lettering task message with unknown task type", extra={"task_type": parsed.task_type})
        self._store.add_event(
            parsed.job_id,
            "dead_lettered",
            {"reason": "UnknownTaskType", "description": description, "message_id": message.message_id},
            stage=parsed.stage,
            task_id=parsed.task_id,
        )
        return dead_letter(message, "UnknownTaskType", description)

    def _execute(self, task: ClaimedTask) -> TaskOutcome:
        if task.attempt > task.max_attempts:
            error = ErrorInfo(
                "LeaseExpired",
                ErrorClass.TRANSIENT,
                f"attempt {task.attempt - 1} stopped without finishing (its lease expired); "
                f"no attempts left of {task.max_attempts}",
                attempt=task.attempt - 1,
                where="worker",
                at=_now(),
            )
            return TaskOutcome(task, OutcomeKind.FAILED, error=error)
        handler = self._tasks.get(task.task_type)
        context = TaskContext(
            task.job_id, task.job_type, task.stage, task.task_id, task.index, task.attempt, task.max_attempts,
            self._services,
        )

        def call() -> JSON:
            return _as_result(handler(dict(task.parameters), context), task.task_type)

        try:
            result = wrap(task, call, self._middleware)
        except Exception as exc:
            return self._failure(task, exc)
        return TaskOutcome(task, OutcomeKind.COMPLETED, result=result)

    def _failure(self, task: ClaimedTask, exc: Exception) -> TaskOutcome:
        error_class = classify(exc)
        error = ErrorInfo(
            type(exc).__name__,
            error_class,
            str(exc)[:2000] or type(exc).__name__,
            attempt=task.attempt,
            where=_where(exc, task.task_type),
            at=_now(),
        )
        delay = self._retry_policy(task).next_delay(task.attempt, error_class)
        with logcontext.bind(job_id=task.job_id, job_type=task.job_type, stage=task.stage,
                             task_id=task.task_id, attempt=task.attempt):
            log.warning(
                "task failed",
                extra={"error_type": error.error_type, "error_class": error_class.value,
                       "error": error.message, "retry_in_s": delay},
            )
        if delay is None:
            return TaskOutcome(task, OutcomeKind.FAILED, error=error)
        return TaskOutcome(task, OutcomeKind.RETRY, error=error, retry_delay_seconds=delay)

    def _retry_policy(self, task: ClaimedTask) -> RetryPolicy:
        try:
            stage = self._jobs.get(task.job_type).stage(task.stage)
            policy = stage.retry_policy()
        except (UnknownJobType, ConfigurationError):
            policy = RetryPolicy()
        if policy.maximum_attempts != task.max_attempts:
            policy = RetryPolicy(
                policy.initial_interval, policy.backoff_coefficient, policy.maximum_interval,
                task.max_attempts, policy.jitter,
            )
        return policy


def _as_result(value: object, task_type: str) -> JSON:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PermanentError(f"handler {task_type!r} returned {type(value).__name__}; it must return a dict or None")
    result = dict(value)
    try:
        canonical_json(result)
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"handler {task_type!r} returned a result that is not JSON: {exc}") from exc
    return result


def _where(exc: BaseException, task_type: str) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return task_type
    last = frames[-1]
    return f"{task_type} at {last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"


def _now() -> str:
    return datetime.now(UTC).isoformat()
