"""Read side of the in-memory store: the job, results, counts, the job snapshot, stuck jobs."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from core.models import JobRecord, JobSnapshot, JobStatus, TaskResultRow, TaskStatus
from core.ports import Transport
from infrastructure.memory.tables import Tables, Transaction, fresh

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class MemoryViews:
    """Owns the tables, the lock and the transaction helper; the store adds the transitions."""

    def __init__(self, transport: Transport, clock: Clock | None = None) -> None:
        self._transport = transport
        self._clock = clock or _utcnow
        self._lock = threading.RLock()
        self._tables = Tables()

    @contextmanager
    def _tx(self) -> Iterator[Transaction]:
        with self._lock:
            tx = Transaction(self._tables, self._clock())
            yield tx
            if tx.messages:
                self._transport.send(tx.messages)
            if tx.acknowledged:
                self._transport.complete(tx.acknowledged)
            tx.commit()

    def stage_results(
        self, stages: Sequence[tuple[str, int]], max_rows: int | None = None
    ) -> dict[tuple[str, int], list[TaskResultRow]] | None:
        results: dict[tuple[str, int], list[TaskResultRow]] = {}
        with self._tx() as tx:
            for job_id, stage in stages:
                row = tx.stage(job_id, stage)
                tasks = tx.tasks_of_stage(row) if row else []
                results[job_id, stage] = [
                    TaskResultRow(t.task_id, t.index, t.status, fresh(t.result))
                    for t in sorted(tasks, key=lambda t: t.index)
                    if t.status is TaskStatus.COMPLETED
                ]
        if max_rows is not None and sum(map(len, results.values())) > max_rows:
            return None
        return results

    def stage_counts(self, job_id: str) -> dict[int, dict[str, int]]:
        with self._tx() as tx:
            return self._counts(tx, job_id)

    def get_jobs(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        with self._tx() as tx:
            jobs = (tx.job(job_id) for job_id in job_ids)
            return {job.job_id: public_job(job) for job in jobs if job is not None}

    def job_statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        with self._tx() as tx:
            jobs = (tx.job(job_id) for job_id in job_ids)
            return {job.job_id: job.status for job in jobs if job is not None}

    def snapshot(self, job_id: str, events: int = 50) -> JobSnapshot | None:
        with self._tx() as tx:
            job = tx.job(job_id)
            if job is None:
                return None
            counts = self._counts(tx, job_id)
            tasks = tx.tasks_of(job)
            running = [t for t in tasks if t.status is TaskStatus.RUNNING]
            retrying = [t for t in tasks if t.status is TaskStatus.RETRY_SCHEDULED]
            erring = sorted((t for t in tasks if t.errors), key=lambda t: t.updated_at, reverse=True)
            timeline = self._tables.events.get(job_id, [])
            return JobSnapshot(
                job=public_job(job),
                stages=[row.view(counts.get(row.stage, {})) for row in tx.stages_of(job)],
                events=[replace(e, detail=fresh(e.detail)) for e in (timeline[-events:] if events > 0 else [])],
                oldest_running=min(running, key=lambda t: t.updated_at).view() if running else None,
                next_retry=min(retrying, key=lambda t: t.not_before or tx.now).view() if retrying else None,
                recent_errors=[t.view() for t in erring[:5]],
            )

    def stuck_jobs(self, older_than_seconds: float, limit: int, open_statuses: frozenset[JobStatus]) -> list[JobRecord]:
        with self._tx() as tx:
            cutoff = tx.now - timedelta(seconds=older_than_seconds)
            stuck = [
                job for job in self._tables.jobs.values()
                if job.status in open_statuses and job.updated_at < cutoff
                and not any(t.updated_at >= cutoff for t in tx.tasks_of(job))
            ]
            return [public_job(job) for job in sorted(stuck, key=lambda j: j.updated_at)[:limit]]

    @staticmethod
    def _counts(tx: Transaction, job_id: str) -> dict[int, dict[str, int]]:
        job = tx.job(job_id)
        if job is None:
            return {}
        counts: dict[int, dict[str, int]] = {}
        for row in tx.stages_of(job):
            by_status = Counter(t.status.value for t in tx.tasks_of_stage(row))
            if by_status:
                counts[row.stage] = dict(by_status)
        return counts


def public_job(job: JobRecord) -> JobRecord:
    return replace(job, parameters=fresh(job.parameters), result=fresh(job.result), error=fresh(job.error))
