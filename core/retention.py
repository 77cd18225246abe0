"""Retention: which finished jobs are old enough to prune, and pruning them in small bounded steps.

A job is pruned whole (its tasks, stages, events, settled queue rows and dead letters with it) once it has been
terminal for longer than the retention of its final state. The work is split into short transactions of at most
`chunk_rows` rows, and one call does at most `budget_rows` of them, so the janitor never holds a long lock and a
pass over a backlog of history costs the same as a pass over none; what is left waits for the next pass.

A live job is never touched: every step is guarded on the job still being in the state, and finished before the
cutoff, that made it a candidate. Once pruned, a job id is free again: submitting the same type and parameters
creates a new job with the same id (see README, "Retention").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from core.models import TERMINAL_JOB_STATUSES, JobStatus

log = logging.getLogger("coremachine.retention")

_ORDER = (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long a job is kept after it finished, per terminal state; None keeps that state forever."""

    keep: Mapping[JobStatus, timedelta | None]

    def __post_init__(self) -> None:
        unknown = set(self.keep) - TERMINAL_JOB_STATUSES
        if unknown:
            raise ValueError(f"retention applies to terminal states only, not {sorted(s.value for s in unknown)}")
        negative = [s.value for s, d in self.keep.items() if d is not None and d < timedelta(0)]
        if negative:
            raise ValueError(f"retention must not be negative: {negative}")

    def check_at_least(self, minimum: timedelta) -> None:
        """Refuse a retention shorter than `minimum` (the duplicate-detection window: a job pruned inside it could
        not be submitted again, its first message would be dropped as a duplicate of the pruned job's)."""
        short = [s.value for s, d in self.keep.items() if d is not None and d < minimum]
        if short:
            raise ValueError(
                f"retention of {', '.join(short)} is shorter than the duplicate-detection window "
                f"({minimum.total_seconds():g} s)"
            )

    @classmethod
    def uniform(cls, older_than: timedelta) -> RetentionPolicy:
        """The same retention for every terminal state (`coremachine prune --older-than`)."""
        return cls({status: older_than for status in _ORDER})

    def cutoffs(self, now: datetime) -> dict[JobStatus, datetime]:
        """Per state, the finish time before which a job is pruned, in a fixed order."""
        return {s: now - d for s in _ORDER if (d := self.keep.get(s)) is not None}


@dataclass(frozen=True, slots=True)
class PruneLimits:
    jobs_per_batch: int = 50
    chunk_rows: int = 5_000
    budget_rows: int = 50_000


@dataclass(frozen=True, slots=True)
class PruneReport:
    dry_run: bool
    jobs: dict[str, int] = field(default_factory=dict)  # pruned (or, dry run, prunable) jobs per state
    rows: int = 0  # tasks and events deleted
    complete: bool = True  # False: the row budget ran out; the next pass continues

    @property
    def total_jobs(self) -> int:
        return sum(self.jobs.values())


class PruneStore(Protocol):
    """What pruning needs from a store. Every call is its own short transaction, guarded on (status, before)."""

    def count_prunable(self, status: JobStatus, before: datetime) -> int: ...

    def prunable_jobs(self, status: JobStatus, before: datetime, limit: int) -> list[str]:
        """Jobs in `status` that finished before `before`, oldest first."""
        ...

    def prune_rows(self, job_ids: Sequence[str], status: JobStatus, before: datetime, limit: int) -> int:
        """Delete up to `limit` task and event rows of those jobs still eligible; returns how many."""
        ...

    def prune_jobs(self, job_ids: Sequence[str], status: JobStatus, before: datetime) -> list[str]:
        """Delete the eligible jobs' remaining rows (stages, settled messages, dead letters) and the jobs."""
        ...


def prune(
    store: PruneStore, policy: RetentionPolicy, now: datetime, limits: PruneLimits | None = None,
    *, dry_run: bool = False,
) -> PruneReport:
    """Prune (or, `dry_run`, count) the jobs the policy lets go, within the row budget of `limits`."""
    limits = limits or PruneLimits()
    cutoffs = policy.cutoffs(now)
    if dry_run:
        return PruneReport(True, {s.value: store.count_prunable(s, before) for s, before in cutoffs.items()})
    pruned: dict[str, int] = {}
    rows = 0
    for status, before in cutoffs.items():
        while True:
            job_ids = store.prunable_jobs(status, before, limits.jobs_per_batch)
            if not job_ids:
                break
            while rows < limits.budget_rows:
                deleted = store.prune_rows(job_ids, status, before, min(limits.chunk_rows, limits.budget_rows - rows))
                rows += deleted
                if deleted == 0:
                    break
            else:
                log.info("prune row budget used up; the next pass continues", extra={"rows": rows})
                return PruneReport(False, pruned, rows, complete=False)
            done = store.prune_jobs(job_ids, status, before)
            pruned[status.value] = pruned.get(status.value, 0) + len(done)
            # Fewer than asked: some left their state meanwhile (an operator's retry) or another janitor holds
            # them; either way they are not this pass's to prune, and the candidates would only come back.
            if len(done) < len(job_ids) or len(job_ids) < limits.jobs_per_batch:
                break
    if pruned:
        log.info("pruned finished jobs", extra={"jobs": pruned, "rows": rows})
    return PruneReport(False, pruned, rows)
