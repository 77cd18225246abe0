"""The store contract's harness: the engine's `Store` over each adapter, with what a scenario needs to observe it.

- `store`: core's `Store` over the adapter's units of work.
- `sent()`: every message the store wrote to its outbox, in order (id, body, delay).
- `advance(seconds)`: let that much time pass for the store. In memory the clock moves; on PostgreSQL every
  stored timestamp moves back by that much, which is the same thing to `now()` and costs no waiting.
- `prune_events()`: delete the whole event timeline (the audit log), as retention would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql

from core.ids import job_id_for, task_id_for
from core.models import (
    ClaimedTask,
    ErrorClass,
    ErrorInfo,
    FailurePolicy,
    JobStatus,
    NewJob,
    OutcomeKind,
    OutgoingMessage,
    StagePlan,
    TaskOutcome,
    TaskSpec,
)
from core.ports import Transport
from core.rounds import FinalizeDecision
from core.store import Store
from infrastructure.memory.store import InMemoryStore
from infrastructure.memory.transport import InMemoryTransport
from infrastructure.postgres.database import Database
from infrastructure.postgres.queue import PostgresQueue
from infrastructure.postgres.store import PostgresStore

LEASE = 10.0


@dataclass(frozen=True, slots=True)
class Sent:
    message_id: str
    body: dict[str, Any]
    delay_seconds: float


class Harness:
    store: Store
    queue: Transport
    """The transport whose queue the store's database holds (`Store.holds_queue`)."""

    def sent(self) -> list[Sent]:
        raise NotImplementedError

    def advance(self, seconds: float) -> None:
        raise NotImplementedError

    def prune_events(self) -> None:
        raise NotImplementedError

    def ids(self) -> list[str]:
        return [m.message_id for m in self.sent()]

    def kinds(self, job_id: str) -> list[str]:
        snapshot = self.store.snapshot(job_id, events=1000)
        assert snapshot is not None
        return [e.kind for e in snapshot.events]

    def counts(self, job_id: str, stage: int = 1) -> dict[str, int]:
        return self.store.stage_counts(job_id).get(stage, {})

    def new_job(self, stages: int = 2, policy: FailurePolicy = FailurePolicy.FAIL_FAST, tag: str = "") -> NewJob:
        params = {"tag": tag}
        job = NewJob(job_id_for("t", params), "t", params, stages, policy)
        self.store.create_job(job)
        return job

    def started(
        self, n: int = 3, stages: int = 2, policy: FailurePolicy = FailurePolicy.FAIL_FAST, tag: str = "",
        claim: int | None = None,
    ) -> tuple[NewJob, list[ClaimedTask]]:
        """A job whose stage 1 has `n` tasks, the first `claim` (default all) claimed by worker "w"."""
        job = self.new_job(stages, policy, tag)
        assert self.store.start_stage(plan(job, 1, n))
        wanted = n if claim is None else claim
        claimed = self.store.claim_tasks([task_id_for(job.job_id, 1, i) for i in range(wanted)], "w")
        assert len(claimed) == wanted
        return job, sorted(claimed, key=lambda t: t.index)


def finish(h: Harness, job_id: str, status: JobStatus, owner: str = "f1") -> None:
    """Run the job's finalize to its end with `status`."""
    start = h.store.begin_finalize(job_id, owner, 30.0)
    assert start.decision is FinalizeDecision.RUN, start
    assert h.store.finish_job(job_id, owner, status, {"done": True}, None)


def at_once(*targets: Callable[[], None]) -> None:
    """Run the targets on threads of their own and wait for all of them."""
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def plan(job: NewJob, stage: int, n: int, max_attempts: int = 3, timeout: float = LEASE) -> StagePlan:
    return StagePlan(job.job_id, stage, f"s{stage}", [TaskSpec("work", {"i": i}) for i in range(n)],
                     max_attempts, timeout)


def done(task: ClaimedTask, **result: int) -> TaskOutcome:
    return TaskOutcome(task, OutcomeKind.COMPLETED, result=dict(result))


def failed(task: ClaimedTask, kind: OutcomeKind = OutcomeKind.FAILED, delay: float = 0.0,
           error_class: ErrorClass = ErrorClass.PERMANENT) -> TaskOutcome:
    error = ErrorInfo("Boom", error_class, "boom", attempt=task.attempt)
    return TaskOutcome(task, kind, error=error, retry_delay_seconds=delay)


class _Recorder(InMemoryTransport):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[OutgoingMessage] = []

    def send(self, messages: Sequence[OutgoingMessage]) -> None:
        self.messages.extend(messages)
        super().send(messages)


class MemoryHarness(Harness):
    def __init__(self) -> None:
        self.now = datetime(2024, 1, 1, tzinfo=UTC)
        self.transport = _Recorder()
        self.memory_store = InMemoryStore(self.transport, clock=lambda: self.now, holds_queue=True)
        self.store = self.memory_store
        self.queue = self.transport

    def sent(self) -> list[Sent]:
        return [Sent(m.message_id, dict(m.body), m.delay_seconds) for m in self.transport.messages]

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def prune_events(self) -> None:
        self.memory_store.memory._tables.events.clear()


_TIMESTAMPS = {
    "jobs": ("created_at", "updated_at", "finished_at", "finalize_claim_until", "round_started_at"),
    "stages": ("started_at", "completed_at"),
    "tasks": ("lease_until", "not_before", "created_at", "updated_at", "finished_at"),
    "job_events": ("at",),
    "queue_messages": ("enqueued_at", "available_at", "done_at"),
}


class PostgresHarness(Harness):
    def __init__(self, database: Database) -> None:
        self.database = database
        self.store = PostgresStore(database.connection, holds_queue=True)
        self.queue = PostgresQueue(database, None)

    def _execute(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.database.connection() as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def sent(self) -> list[Sent]:
        rows = self._execute(
            "SELECT message_id, body, greatest(0, extract(epoch FROM available_at - enqueued_at))::float8"
            " FROM queue_messages"
            " ORDER BY id"
        )
        return [Sent(message_id, body, round(delay, 6)) for message_id, body, delay in rows]

    def advance(self, seconds: float) -> None:
        for table, columns in _TIMESTAMPS.items():
            sets = sql.SQL(", ").join(
                sql.SQL("{c} = {c} - make_interval(secs => %s)").format(c=sql.Identifier(c)) for c in columns
            )
            statement = sql.SQL("UPDATE {table} SET {sets}").format(table=sql.Identifier(table), sets=sets)
            with self.database.connection() as conn:
                conn.execute(statement, [seconds] * len(columns))

    def prune_events(self) -> None:
        self._execute("DELETE FROM job_events")

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        return self._execute(statement, params)


MakeHarness = Callable[[], Harness]
