"""PostgreSQL state store: every transition is one guarded transaction that also writes its messages."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from core.errors import StoreUnavailable
from core.ids import task_id_for
from core.messages import (
    deferred_finalize_message,
    finalize_message,
    resent_task_message,
    stage_message,
    task_message,
)
from core.models import (
    JSON,
    ClaimedTask,
    ErrorInfo,
    FailurePolicy,
    JobRecord,
    JobStatus,
    NewJob,
    OutcomeKind,
    OutgoingMessage,
    StagePlan,
    TaskOutcome,
    TaskResultRow,
    TaskStatus,
)
from core.states import job_sources, task_sources
from infrastructure.postgres.queue import send_params
from infrastructure.postgres.rows import (
    claimed_from_row,
    job_from_row,
    jsonb,
    result_from_row,
)
from infrastructure.postgres.sql_queries import query
from infrastructure.postgres.views import StoreViews

ConnectionFactory = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]

_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)


def _sources(target: JobStatus) -> list[str]:
    return [s.value for s in job_sources(target)]


class PostgresStore(StoreViews):
    """The `StateStore` port on PostgreSQL. Messages go into `queue_messages` in the same transaction."""

    def __init__(self, connection: ConnectionFactory, duplicate_window_seconds: float = 600.0) -> None:
        super().__init__(connection)
        self._window = duplicate_window_seconds

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[Any]]:
        try:
            with self._connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
        except psycopg.OperationalError as exc:
            if isinstance(exc, _RETRYABLE):
                raise
            raise StoreUnavailable(f"state store unavailable: {exc}") from exc

    def _run(self, work: Callable[[psycopg.Cursor[Any]], Any]) -> Any:
        """Run `work` in one transaction, retried on deadlock or serialization failure."""

        @retry(
            retry=retry_if_exception_type(_RETRYABLE),
            stop=stop_after_attempt(5),
            wait=wait_random_exponential(multiplier=0.02, max=0.5),
            reraise=True,
        )
        def attempt() -> Any:
            with self._tx() as cur:
                return work(cur)

        return attempt()

    def create_job(self, job: NewJob) -> tuple[JobRecord, bool]:
        def work(cur: psycopg.Cursor[Any]) -> tuple[JobRecord, bool]:
            cur.execute(query("insert_job"), {
                "job_id": job.job_id, "job_type": job.job_type, "parameters": jsonb(job.parameters),
                "total_stages": job.total_stages, "failure_policy": job.failure_policy.value,
            })
            row = cur.fetchone()
            if row is None:
                cur.execute(query("select_job"), {"job_id": job.job_id})
                existing = cur.fetchone()
                assert existing is not None
                return job_from_row(existing), False
            self._event(cur, job.job_id, "submitted", {"parameters": job.parameters})
            self._send(cur, [stage_message(job.job_id, job.job_type, 1)])
            return job_from_row(row), True

        result: tuple[JobRecord, bool] = self._run(work)
        return result

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._tx() as cur:
            cur.execute(query("select_job"), {"job_id": job_id})
            row = cur.fetchone()
        return job_from_row(row) if row else None

    def start_stage(self, plan: StagePlan) -> bool:
        def work(cur: psycopg.Cursor[Any]) -> bool:
            cur.execute(query("lock_job_for_stage"), {
                "job_id": plan.job_id, "stage": plan.stage, "sources": _sources(JobStatus.PROCESSING),
            })
            locked = cur.fetchone()
            if locked is None:
                return False
            job_type = locked[0]
            cur.execute(query("insert_stage"), {
                "job_id": plan.job_id, "stage": plan.stage, "name": plan.stage_name, "task_count": len(plan.tasks),
            })
            if cur.fetchone() is None:
                return False
            self._copy_tasks(cur, plan, job_type)
            self._event(cur, plan.job_id, "stage_started", {"name": plan.stage_name, "tasks": len(plan.tasks)},
                        stage=plan.stage)
            if not plan.tasks:
                self._stage_done(cur, plan.job_id, plan.stage)
            return True

        created: bool = self._run(work)
        return created

    def _copy_tasks(self, cur: psycopg.Cursor[Any], plan: StagePlan, job_type: str) -> None:
        if not plan.tasks:
            return
        dumps = json.dumps
        with cur.copy(query("copy_tasks")) as copy:
            for index, spec in enumerate(plan.tasks):
                copy.write_row((
                    task_id_for(plan.job_id, plan.stage, index), plan.job_id, plan.stage, index, spec.task_type,
                    dumps(spec.parameters), plan.max_attempts, plan.timeout_seconds,
                ))
        with cur.copy(query("copy_messages")) as copy:
            for index, spec in enumerate(plan.tasks):
                m = task_message(task_id_for(plan.job_id, plan.stage, index), plan.job_id, job_type, plan.stage,
                                 spec.task_type, 1)
                copy.write_row((m.queue, m.message_id, dumps(m.body), dumps(m.properties)))

    def stage_results(self, job_id: str, stage: int) -> list[TaskResultRow]:
        with self._tx() as cur:
            cur.execute(query("stage_results"), {"job_id": job_id, "stage": stage})
            return [result_from_row(r) for r in cur.fetchall()]

    def claim_tasks(
        self, task_ids: Sequence[str], worker_id: str, lease_seconds: float | None = None
    ) -> list[ClaimedTask]:
        if not task_ids:
            return []
        sources = [s.value for s in task_sources(TaskStatus.RUNNING)]

        def work(cur: psycopg.Cursor[Any]) -> list[ClaimedTask]:
            cur.execute(query("claim_tasks"), {
                "task_ids": list(task_ids), "worker_id": worker_id, "sources": sources, "lease_seconds": lease_seconds,
            })
            return [claimed_from_row(r) for r in cur.fetchall()]

        claimed: list[ClaimedTask] = self._run(work)
        return claimed

    def renew_task_leases(
        self, claims: Sequence[ClaimedTask], lease_seconds: float | None = None
    ) -> dict[str, JobStatus]:
        if not claims:
            return {}
        ordered = sorted(claims, key=lambda c: c.task_id)
        params = {
            "task_ids": [c.task_id for c in ordered], "attempts": [c.attempt for c in ordered],
            "lease_seconds": [lease_seconds] * len(ordered),
        }

        def work(cur: psycopg.Cursor[Any]) -> dict[str, JobStatus]:
            cur.execute(query("renew_task_leases"), params)
            return {task_id: JobStatus(status) for task_id, status in cur.fetchall()}

        renewed: dict[str, JobStatus] = self._run(work)
        return renewed

    def release_claims(self, claims: Sequence[ClaimedTask]) -> list[str]:
        if not claims:
            return []
        ordered = sorted(claims, key=lambda c: c.task_id)
        params = {
            "task_ids": [c.task_id for c in ordered], "attempts": [c.attempt for c in ordered],
            "sources": [s.value for s in task_sources(TaskStatus.QUEUED)],
        }

        def work(cur: psycopg.Cursor[Any]) -> list[str]:
            cur.execute(query("release_claims"), params)
            return [row[0] for row in cur.fetchall()]

        released: list[str] = self._run(work)
        return released

    def live_jobs(self, job_ids: Sequence[str]) -> set[str]:
        if not job_ids:
            return set()
        with self._tx() as cur:
            cur.execute(query("live_jobs"), {"job_ids": list(job_ids)})
            return {row[0] for row in cur.fetchall()}

    def defer_early_tasks(self, deliveries: Sequence[tuple[str, int]]) -> list[str]:
        if not deliveries:
            return []
        params = {"task_ids": [d[0] for d in deliveries], "attempts": [d[1] for d in deliveries]}

        def work(cur: psycopg.Cursor[Any]) -> list[str]:
            cur.execute(query("defer_early_tasks"), params)
            rows = cur.fetchall()
            self._send(cur, [
                resent_task_message(task_id, job_id, job_type, stage, task_type, attempt + 1, resend, delay)
                for task_id, job_id, job_type, stage, task_type, attempt, resend, delay in rows
            ])
            return [row[0] for row in rows]

        deferred: list[str] = self._run(work)
        return deferred

    def resend_overdue_retries(self, overdue_seconds: float, limit: int = 1000) -> int:
        def work(cur: psycopg.Cursor[Any]) -> int:
            cur.execute(query("resend_overdue_retries"), {"overdue": overdue_seconds, "limit": limit})
            rows = cur.fetchall()
            for task_id, job_id, _, stage, _, attempt, resend in rows:
                self._event(cur, job_id, "task_retry_resent", {"attempt": attempt + 1, "resend": resend},
                            stage=stage, task_id=task_id)
            self._send(cur, [
                resent_task_message(task_id, job_id, job_type, stage, task_type, attempt + 1, resend)
                for task_id, job_id, job_type, stage, task_type, attempt, resend in rows
            ])
            return len(rows)

        count: int = self._run(work)
        return count

    def record_outcomes(self, outcomes: Sequence[TaskOutcome]) -> None:
        if outcomes:
            self._run(lambda cur: self._apply_outcomes(cur, outcomes))

    def _apply_outcomes(self, cur: psycopg.Cursor[Any], outcomes: Sequence[TaskOutcome]) -> None:
        by_kind: dict[OutcomeKind, list[TaskOutcome]] = defaultdict(list)
        for outcome in sorted(outcomes, key=lambda o: o.task.task_id):
            by_kind[outcome.kind].append(outcome)
        done: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
        policies = {o.task.job_id: (o.task.failure_policy, o.task.job_type) for o in outcomes}

        completed = by_kind[OutcomeKind.COMPLETED]
        if completed:
            cur.execute(query("complete_tasks"), {
                "task_ids": [o.task.task_id for o in completed],
                "attempts": [o.task.attempt for o in completed],
                "results": [jsonb(o.result or {}) for o in completed],
            })
            for job_id, stage, _ in cur.fetchall():
                done[(job_id, stage)][0] += 1

        retries = by_kind[OutcomeKind.RETRY]
        if retries:
            cur.execute(query("schedule_retries"), {
                "task_ids": [o.task.task_id for o in retries],
                "attempts": [o.task.attempt for o in retries],
                "errors": [jsonb(_error_json(o.error)) for o in retries],
                "delays": [o.retry_delay_seconds for o in retries],
            })
            messages: list[OutgoingMessage] = []
            for job_id, stage, task_id, task_type, attempt, delay, error in cur.fetchall():
                job_type = policies[job_id][1]
                messages.append(task_message(task_id, job_id, job_type, stage, task_type, attempt + 1, delay))
                self._event(cur, job_id, "task_retry_scheduled",
                            {"attempt": attempt, "retry_in_s": round(delay, 3), "error": error},
                            stage=stage, task_id=task_id)
            self._send(cur, messages)

        failed = by_kind[OutcomeKind.FAILED]
        if any(o.task.failure_policy is FailurePolicy.FAIL_FAST for o in failed):
            keys = sorted({(o.task.job_id, o.task.stage) for o in outcomes})
            cur.execute(query("lock_stages"), {"job_ids": [k[0] for k in keys], "stages": [k[1] for k in keys]})
        if failed:
            cur.execute(query("fail_tasks"), {
                "task_ids": [o.task.task_id for o in failed],
                "attempts": [o.task.attempt for o in failed],
                "errors": [jsonb(_error_json(o.error)) for o in failed],
            })
            for job_id, stage, task_id, error in cur.fetchall():
                self._event(cur, job_id, "task_failed", {"error": error}, stage=stage, task_id=task_id)
                policy = policies[job_id][0]
                if policy is FailurePolicy.FAIL_FAST:
                    self._to_finalizing(cur, job_id, JobStatus.FAILED, {**error, "task_id": task_id})
                done[(job_id, stage)][0] += 1
                done[(job_id, stage)][1] += 1

        for (job_id, stage), (count, failures) in sorted(done.items()):
            cur.execute(query("decrement_stage"), {"job_id": job_id, "stage": stage, "done": count,
                                                   "failed": failures})
            row = cur.fetchone()
            if row is not None and row[0] == 0:
                self._stage_done(cur, job_id, stage)

    def _stage_done(self, cur: psycopg.Cursor[Any], job_id: str, stage: int) -> None:
        """The fan-in decision: called by exactly one transaction, the one that took the counter to zero."""
        cur.execute(query("complete_stage"), {"job_id": job_id, "stage": stage})
        row = cur.fetchone()
        if row is not None:
            self._event(cur, job_id, "stage_completed", {"tasks": row[0], "failed": row[1]}, stage=stage)
        cur.execute(query("advance_job"), {"job_id": job_id, "stage": stage})
        advanced = cur.fetchone()
        if advanced is not None:
            self._send(cur, [stage_message(job_id, advanced[0], advanced[1], advanced[2])])
            return
        cur.execute(query("finalize_after_last_stage"), {"job_id": job_id, "stage": stage})
        finalizing = cur.fetchone()
        if finalizing is not None:
            self._event(cur, job_id, "finalizing", {"outcome": finalizing[1]})
            self._send(cur, [finalize_message(job_id, finalizing[0], finalizing[2])])

    def _to_finalizing(self, cur: psycopg.Cursor[Any], job_id: str, outcome: JobStatus, error: JSON | None) -> bool:
        cur.execute(query("job_to_finalizing"), {
            "job_id": job_id, "outcome": outcome.value, "error": jsonb(error),
            "sources": _sources(JobStatus.FINALIZING),
        })
        row = cur.fetchone()
        if row is None:
            return False
        cur.execute(query("cancel_unstarted_tasks"), {"job_id": job_id})
        self._event(cur, job_id, "job_failed" if outcome is JobStatus.FAILED else "job_cancelled",
                    {"outcome": outcome.value, "error": error, "cancelled_tasks": cur.rowcount})
        self._send(cur, [finalize_message(job_id, row[0], row[1])])
        return True

    def fail_job(self, job_id: str, error: ErrorInfo) -> bool:
        ok: bool = self._run(lambda cur: self._to_finalizing(cur, job_id, JobStatus.FAILED, error.to_json()))
        return ok

    def cancel_job(self, job_id: str, reason: str) -> bool:
        detail = {"type": "Cancelled", "class": "permanent", "message": reason}
        ok: bool = self._run(lambda cur: self._to_finalizing(cur, job_id, JobStatus.CANCELLED, detail))
        return ok

    def live_lease_seconds(self, job_id: str) -> float | None:
        with self._tx() as cur:
            row = cur.execute(query("live_lease_seconds"), {"job_id": job_id}).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def defer_finalize(self, job_id: str, delay_seconds: float) -> bool:
        def work(cur: psycopg.Cursor[Any]) -> bool:
            row = cur.execute(query("count_finalize_deferrals"), {"job_id": job_id}).fetchone()
            if row is None:
                return False
            job_type, round_number, deferrals = row
            message = deferred_finalize_message(job_id, job_type, round_number, deferrals + 1, delay_seconds)
            self._event(cur, job_id, "finalize_deferred", {"delay_s": round(delay_seconds, 3)})
            self._send(cur, [message])
            return True

        ok: bool = self._run(work)
        return ok

    def finish_job(self, job_id: str, status: JobStatus, result: JSON | None, error: ErrorInfo | None) -> bool:
        def work(cur: psycopg.Cursor[Any]) -> bool:
            cur.execute(query("finish_job"), {
                "job_id": job_id, "status": status.value, "result": jsonb(result),
                "error": jsonb(error.to_json() if error else None), "sources": _sources(status),
            })
            if cur.fetchone() is None:
                return False
            cur.execute(query("cancel_leftover_tasks"), {"job_id": job_id})
            cur.execute(query("cancel_open_stages"), {"job_id": job_id})
            detail: JSON = {"status": status.value}
            if error is not None:
                detail["error"] = error.to_json()
            self._event(cur, job_id, "job_finished", detail)
            return True

        ok: bool = self._run(work)
        return ok

    def add_event(
        self, job_id: str, kind: str, detail: JSON, stage: int | None = None, task_id: str | None = None
    ) -> None:
        with self._tx() as cur:
            cur.execute(query("insert_event_if_job_exists"), {
                "job_id": job_id, "kind": kind, "stage": stage, "task_id": task_id, "detail": jsonb(detail),
            })

    def requeue_expired_leases(self, grace_seconds: float, limit: int = 1000) -> int:
        def work(cur: psycopg.Cursor[Any]) -> int:
            cur.execute(query("requeue_expired_leases"), {"grace": grace_seconds, "limit": limit})
            rows = cur.fetchall()
            messages = []
            for task_id, job_id, job_type, stage, task_type, attempt in rows:
                messages.append(task_message(task_id, job_id, job_type, stage, task_type, attempt + 1))
                self._event(cur, job_id, "task_lease_expired", {"attempt": attempt}, stage=stage, task_id=task_id)
            self._send(cur, messages)
            return len(rows)

        count: int = self._run(work)
        return count

    def stuck_jobs(self, older_than_seconds: float, limit: int = 100) -> list[JobRecord]:
        with self._tx() as cur:
            cur.execute(query("stuck_jobs"), {"older": older_than_seconds, "limit": limit})
            return [job_from_row(r) for r in cur.fetchall()]

    @staticmethod
    def _event(
        cur: psycopg.Cursor[Any], job_id: str, kind: str, detail: JSON, stage: int | None = None,
        task_id: str | None = None,
    ) -> None:
        cur.execute(query("insert_event"), {
            "job_id": job_id, "kind": kind, "stage": stage, "task_id": task_id, "detail": jsonb(detail),
        })

    def _send(self, cur: psycopg.Cursor[Any], messages: list[OutgoingMessage]) -> None:
        """The outbox write: messages commit with the state change that caused them (the queue's own send,
        so duplicate detection is the same whoever writes)."""
        if messages:
            cur.execute(query("queue_send"), send_params(messages, self._window))


def _error_json(error: ErrorInfo | None) -> JSON:
    assert error is not None, "retry and failure outcomes carry an error"
    return error.to_json()

