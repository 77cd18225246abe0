"""Runs a batch of task messages: claim with a lease, run the handlers, record every outcome in one commit."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from core import logcontext
from core.attempts import Abandoned, TimeLimits, Watchdog
from core.errors import MalformedMessage, classify
from core.heartbeat import Heartbeat, LeaseConfig, TaskLeases
from core.jobs import JobRegistry
from core.messages import TaskMessage, parse_task_messages, split_task_message
from core.middleware import DEFAULT_MIDDLEWARE, Middleware
from core.models import ClaimedTask, ErrorClass, ErrorInfo, OutcomeKind, ReceivedMessage, TaskOutcome
from core.ports import Relay, StateStore
from core.registry import TaskRegistry
from core.services import Services
from core.settlement import Disposition, Settlement, combined, complete, dead_letter, give_back, recorded
from core.task_execution import Executed, TaskExecution

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
        *,
        heartbeat: Heartbeat,
        leases: LeaseConfig,
    ) -> None:
        self._store = store
        self._relay = relay
        self._jobs = jobs
        self._tasks = tasks
        self._services = services or Services()
        self._worker_id = worker_id
        self._lease_seconds = leases.lease_seconds
        self._heartbeat = heartbeat
        self._leases = TaskLeases(store, leases.lease_seconds, leases.cancel_check_seconds)
        heartbeat.add(self._leases)
        self.limits = TimeLimits()
        heartbeat.add(Watchdog(self.limits))
        self._execution = TaskExecution(jobs, tasks, middleware, self.limits, self._services)

    def run(
        self, messages: Sequence[ReceivedMessage], resume: Callable[[list[Settlement]], None] | None = None
    ) -> list[Settlement]:
        """Claim, run and record a batch; every message gets its own settlement, whatever happens to the others.

        The batch shares one claim and one commit (group commit). If the commit fails, the outcomes are recorded
        one by one, so one poison outcome cannot sink healthy ones.

        `resume` says the calling thread can be replaced: fast handlers may then run on it, and if one hangs
        past its limit the batch is finished on another thread, which hands the settlements to `resume`, while
        this thread gets `Abandoned` (see `core/attempts.py`).
        """
        settlements: list[Settlement] = []
        wanted: dict[str, tuple[TaskMessage, ReceivedMessage]] = {}
        noted: list[ReceivedMessage] = []
        for message in messages:
            try:
                settlement = self._screen(message, wanted)
            except Exception as exc:
                settlement = self._give_back(message, exc, "screening the message")
            if settlement is not None:
                settlements.append(settlement)
            else:
                noted.append(message)
        owners = {id(message) for _, message in wanted.values()}
        # A message each of whose tasks came in another message of this batch (a duplicate, or an earlier attempt).
        settlements.extend(complete(m) for m in noted if id(m) not in owners)

        def finish(later: list[Settlement]) -> list[Settlement]:
            self._flush_relay()
            return combined(settlements + later)

        if not wanted:
            return finish([])
        claimed, given_back = self._claim(wanted)
        settlements.extend(given_back.values())
        settled = {task.task_id for task in claimed} | set(given_back)
        unclaimed = {task_id: wanted[task_id] for task_id in wanted if task_id not in settled}
        if unclaimed:
            settlements.extend(self._not_claimed(unclaimed))
        if not claimed:
            return finish([])
        # A message with a task given back is not settled by the commit that records its other tasks' outcomes.
        kept = {id(s.message) for s in settlements if s.disposition is not Disposition.COMPLETE}
        taken_over = None if resume is None else (lambda later: resume(finish(later)))
        return finish(self._run_claimed(claimed, wanted, kept, taken_over))

    def split(self, messages: Sequence[ReceivedMessage]) -> list[Settlement]:
        """Messages of several tasks sent again as one message per task, each in place of its batch: for tasks
        too slow to share a thread, and for a batch delivered again (one poison task then fails alone)."""
        settlements = []
        for message in messages:
            try:
                settlements.append(self._split_one(message))
            except Exception as exc:
                settlements.append(self._give_back(message, exc, "splitting it into one message per task"))
        self._flush_relay()
        return settlements

    def _flush_relay(self) -> None:
        try:
            self._relay.flush()
        except Exception:
            log.exception("relay flush failed; the janitor relays the stranded outbox rows")

    def _split_one(self, message: ReceivedMessage) -> Settlement:
        try:
            tasks = parse_task_messages(message.body)
        except MalformedMessage as exc:
            return dead_letter(message, "MalformedMessage", str(exc))
        if tasks[0].task_type not in self._tasks:  # one dead letter for the batch, not one per task
            return self._unknown_task_type(message, tasks[0])
        self._store.replace_message(message, split_task_message(message, tasks))
        log.info("task message of %d tasks split into one message per task", len(tasks),
                 extra={"message_id": message.message_id, "delivery_count": message.delivery_count})
        return recorded(message, self._store.holds_queue)

    def _run_claimed(
        self, claimed: list[ClaimedTask], wanted: dict[str, tuple[TaskMessage, ReceivedMessage]], kept: set[int],
        resume: Callable[[list[Settlement]], None] | None,
    ) -> list[Settlement]:
        """Run the handlers while the heartbeat renews the leases and watches for cancellation, then record."""
        stops = self._leases.hold(claimed)
        self._heartbeat.poke()

        def record(executed: Executed) -> list[Settlement]:
            try:
                settlements = self._record(executed.outcomes, wanted, kept)
            finally:
                self._leases.drop(claimed)
            if executed.not_started:
                settlements.extend(self._not_started(executed.not_started, wanted))
            return settlements

        taken_over = None if resume is None else (lambda executed: resume(record(executed)))
        try:
            executed = self._execution.run(claimed, stops, taken_over)
        except Abandoned:
            raise  # the thread that took the batch over records it and keeps the leases until then
        except BaseException:
            self._leases.drop(claimed)
            raise
        return record(executed)

    def _not_started(
        self, tasks: list[ClaimedTask], wanted: dict[str, tuple[TaskMessage, ReceivedMessage]]
    ) -> list[Settlement]:
        """Claimed tasks whose job stopped before their turn: the claims are given back at once (no live lease
        holds up the job's finalize) and the messages acknowledged - the job no longer runs tasks."""
        try:
            released = self._store.release_claims(tasks)
        except Exception as exc:
            return [self._give_back(wanted[t.task_id][1], exc, "releasing its claim") for t in tasks]
        log.info("released %d claimed task(s) of stopped jobs without running them", len(released))
        return [complete(wanted[t.task_id][1]) for t in tasks]

    def _screen(
        self, message: ReceivedMessage, wanted: dict[str, tuple[TaskMessage, ReceivedMessage]]
    ) -> Settlement | None:
        """Settle a message that cannot be run (malformed, unknown type), split one of several tasks delivered
        again, else note its tasks."""
        try:
            tasks = parse_task_messages(message.body)
        except MalformedMessage as exc:
            log.warning("malformed task message", extra={"message_id": message.message_id, "error": str(exc)})
            return dead_letter(message, "MalformedMessage", str(exc))
        if tasks[0].task_type not in self._tasks:
            return self._unknown_task_type(message, tasks[0])
        if len(tasks) > 1 and message.delivery_count > 1:
            return self.split([message])[0]
        for task in tasks:  # a task in two messages runs once, at the later attempt
            held = wanted.get(task.task_id)
            if held is None or held[0].attempt < task.attempt:
                wanted[task.task_id] = (task, message)
        return None

    def _claim(
        self, wanted: dict[str, tuple[TaskMessage, ReceivedMessage]]
    ) -> tuple[list[ClaimedTask], dict[str, Settlement]]:
        """One claim for the batch; if it fails, one per task, and a task whose claim fails has its message given
        back (returned by task id)."""
        try:
            return self._store.claim_tasks(list(wanted), self._worker_id, self._lease_seconds), {}
        except Exception as exc:
            if len(wanted) == 1:
                [(task_id, (_, message))] = wanted.items()
                return [], {task_id: self._give_back(message, exc, "claiming its task")}
            log.warning("claiming a batch failed; claiming one by one", extra={"error": str(exc)[:500]})
        claimed: list[ClaimedTask] = []
        given_back: dict[str, Settlement] = {}
        for task_id, (_, message) in wanted.items():
            try:
                claimed.extend(self._store.claim_tasks([task_id], self._worker_id, self._lease_seconds))
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
        self, outcomes: Sequence[TaskOutcome], wanted: dict[str, tuple[TaskMessage, ReceivedMessage]], kept: set[int]
    ) -> list[Settlement]:
        if not outcomes:
            return []
        messages = [wanted[o.task.task_id][1] for o in outcomes]
        acknowledged = self._acknowledged(messages, kept)
        settled = {id(m) for m in acknowledged}
        try:
            self._store.record_outcomes(outcomes, self._jobs.inline_finish(), acknowledged)
        except Exception as exc:
            if len(outcomes) == 1:
                return [self._record_alone(outcomes[0], messages[0], exc, settle=id(messages[0]) in settled)]
            log.warning("group commit of %d outcomes failed; recording them one by one", len(outcomes),
                        extra={"error_type": type(exc).__name__, "error": str(exc)[:500]})
            # One by one, a message of several tasks is completed by the consumer once all of them are recorded.
            tasks_of = Counter(id(m) for m in messages)
            return [self._record_alone(o, m, settle=id(m) in settled and tasks_of[id(m)] == 1)
                    for o, m in zip(outcomes, messages, strict=True)]
        return [recorded(m, id(m) in settled) for m in messages]

    def _acknowledged(
        self, messages: list[ReceivedMessage], kept: frozenset[int] | set[int] = frozenset()
    ) -> list[ReceivedMessage]:
        """The messages to complete in the commit that records their outcomes (each once): all of them where the
        store's database holds the queue (one statement fewer per batch, and a recorded outcome's message is never
        delivered again) but those in `kept` (one of their tasks was given back), else none and the consumer
        completes them after the commit."""
        if not self._store.holds_queue:
            return []
        return list({id(m): m for m in messages if id(m) not in kept}.values())

    def _record_alone(
        self, outcome: TaskOutcome, message: ReceivedMessage, failure: Exception | None = None, *, settle: bool
    ) -> Settlement:
        """Record one outcome. One the store refuses (not an outage: its own data) becomes a permanent failure of
        the task, recorded with the reason; an outage gives the message back for redelivery."""
        if failure is None:
            try:
                acknowledged = self._acknowledged([message]) if settle else []
                self._store.record_outcomes([outcome], self._jobs.inline_finish(), acknowledged)
                return recorded(message, bool(acknowledged))
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
            acknowledged = self._acknowledged([message]) if settle else []
            self._store.record_outcomes(
                [TaskOutcome(outcome.task, OutcomeKind.FAILED, error=error)], self._jobs.inline_finish(), acknowledged)
        except Exception as exc:
            return self._give_back(message, exc, "recording its outcome")
        return recorded(message, bool(acknowledged))

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


def _now() -> str:
    return datetime.now(UTC).isoformat()
