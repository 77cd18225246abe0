"""The janitor: takes back tasks whose worker died, re-sends lost retries, re-relays stranded outbox rows and
reports stuck jobs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from core import logcontext
from core.models import JobRecord
from core.ports import Relay, StateStore

log = logging.getLogger("coremachine.janitor")


@dataclass(frozen=True, slots=True)
class JanitorConfig:
    lease_grace_seconds: float = 5.0
    overdue_retry_seconds: float = 300.0
    stranded_outbox_seconds: float = 30.0
    stuck_job_seconds: float = 3600.0


@dataclass(frozen=True, slots=True)
class JanitorReport:
    requeued_tasks: int = 0
    closed_stages: int = 0
    resent_retries: int = 0
    relayed_messages: int = 0
    housekeeping: int = 0
    stuck_jobs: list[JobRecord] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "requeued_tasks": self.requeued_tasks,
            "closed_stages": self.closed_stages,
            "resent_retries": self.resent_retries,
            "relayed_messages": self.relayed_messages,
            "housekeeping": self.housekeeping,
            "stuck_jobs": [job.job_id for job in self.stuck_jobs],
        }


class Janitor:
    """One pass does everything; a timer trigger, the CLI loop or a worker thread calls `run_once`."""

    def __init__(
        self,
        store: StateStore,
        relay: Relay,
        config: JanitorConfig | None = None,
        housekeeping: Sequence[Callable[[], int]] = (),
        inline_finish: frozenset[str] = frozenset(),
    ) -> None:
        self._store = store
        self._relay = relay
        self._config = config or JanitorConfig()
        self._housekeeping = tuple(housekeeping)
        self._inline_finish = inline_finish  # job types that keep the default finalize (see `core.outcomes`)

    def run_once(self) -> JanitorReport:
        requeued = self._store.requeue_expired_leases(self._config.lease_grace_seconds)
        closed = self._store.close_counted_stages(inline_finish=self._inline_finish)
        resent = self._store.resend_overdue_retries(self._config.overdue_retry_seconds)
        relayed = self._relay.flush() if requeued or closed or resent else 0
        relayed += self._relay.relay_stranded(self._config.stranded_outbox_seconds)
        cleaned = sum(task() for task in self._housekeeping)
        stuck = self._store.stuck_jobs(self._config.stuck_job_seconds)
        if requeued:
            log.warning("took back tasks with expired leases", extra={"count": requeued})
        if closed:
            log.warning("closed stages whose tasks were all done but left open", extra={"count": closed})
        if resent:
            log.warning("re-sent retries overdue with no message", extra={"count": resent})
        if relayed:
            log.warning("relayed stranded outbox messages", extra={"count": relayed})
        for job in stuck:
            with logcontext.bind(job_id=job.job_id, job_type=job.job_type, stage=job.current_stage):
                log.warning(
                    "job has not moved past the deadline",
                    extra={"status": job.status.value, "updated_at": job.updated_at.isoformat()},
                )
        return JanitorReport(requeued, closed, resent, relayed, cleaned, stuck)
