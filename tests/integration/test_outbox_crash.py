"""Invariant 4: a crash between the state commit and the message relay loses nothing — the janitor relays it.

With the PostgreSQL queue the outbox *is* the queue, so there is no relay step that could crash. This drill
uses the path every other transport takes (Service Bus in production): the PostgreSQL store writes the outbox,
an `OutboxRelay` forwards it to the transport after commit, and here the relay dies right after the commit.
"""

from __future__ import annotations

import pytest

from core.engine import CoreMachine
from core.janitor import Janitor, JanitorConfig
from core.models import JobStatus
from core.worker import Worker, WorkerConfig
from infrastructure.memory.transport import InMemoryTransport
from infrastructure.outbox_relay import OutboxRelay
from infrastructure.postgres.database import Database
from infrastructure.postgres.store import PostgresStore
from infrastructure.settings import Settings
from tests.integration.conftest import DRILL_PACKAGES
from triggers.runtime import load_registries


class RelayCrash(RuntimeError):
    pass


class CrashingRelay:
    """Forwards to the real relay unless `crashing`, in which case it dies before sending anything."""

    def __init__(self, inner: OutboxRelay) -> None:
        self.inner = inner
        self.crashing = True

    def flush(self) -> int:
        if self.crashing:
            raise RelayCrash("process died after commit, before relaying")
        return self.inner.flush()

    def relay_stranded(self, older_than_seconds: float) -> int:
        return self.inner.relay_stranded(older_than_seconds)


def test_janitor_relays_messages_stranded_by_a_crash(settings: Settings, database: Database) -> None:
    registries = load_registries(settings.model_copy(update=DRILL_PACKAGES))
    store = PostgresStore(database.connection)
    transport = InMemoryTransport()
    relay = CrashingRelay(OutboxRelay(database, transport))
    engine = CoreMachine(store, relay, registries.jobs, registries.tasks, "crash-drill")

    with pytest.raises(RelayCrash):
        engine.submit("hello_world", {"n": 5})
    with database.connection() as conn:
        (job_id,) = conn.execute("SELECT job_id FROM jobs").fetchone() or ("",)
    job = store.get_job(job_id)
    assert job is not None and job.status is JobStatus.QUEUED, "the state change committed"
    assert transport.receive("jobs", 10, 0.0) == [], "but its message never reached the transport"

    relay.crashing = False
    worker = Worker(engine, transport, WorkerConfig(concurrency=1, wait_seconds=0.1))
    assert not worker.run_until(lambda: store.get_job(job.job_id).status.terminal, timeout=1.5)  # type: ignore[union-attr]

    janitor = Janitor(store, relay, JanitorConfig(stranded_outbox_seconds=0.0))
    assert janitor.run_once().relayed_messages == 1
    done = Worker(engine, transport, WorkerConfig(concurrency=2, wait_seconds=0.1))
    assert done.run_until(lambda: store.get_job(job.job_id).status.terminal, timeout=30)  # type: ignore[union-attr]
    final = store.get_job(job.job_id)
    assert final is not None and final.status is JobStatus.COMPLETED
    assert final.result is not None and final.result["replies"] == 5
