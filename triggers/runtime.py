"""The composition root: settings → database, store, transport, relay, registries, engine, janitor."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from core.artifacts import ArtifactStore
from core.engine import CoreMachine
from core.errors import ConfigurationError
from core.heartbeat import LeaseConfig
from core.janitor import Janitor, JanitorConfig
from core.jobs import JobRegistry, discover_jobs
from core.messages import DEFAULT_TASKS_PER_MESSAGE
from core.models import JobStatus
from core.ports import NullRelay, Relay, Transport
from core.registry import TaskRegistry, discover_tasks
from core.retention import PruneLimits, PruneStore, RetentionPolicy, prune
from core.services import Services
from core.tracing import NoTelemetry, Telemetry
from core.worker import Worker, WorkerConfig
from infrastructure.artifacts.local import LocalArtifactStore
from infrastructure.identity import azure_credential
from infrastructure.postgres.database import Database
from infrastructure.postgres.listener import queue_depths, set_queue_notify
from infrastructure.postgres.migrations import migrate
from infrastructure.postgres.queue import PostgresQueue
from infrastructure.postgres.retention import PostgresPruner
from infrastructure.postgres.sql_queries import SqlQueries
from infrastructure.postgres.store import PostgresStore
from infrastructure.queue_config import QueueConfig
from infrastructure.settings import Settings
from infrastructure.telemetry.setup import build_telemetry
from services.ingestion.warehouse import SQL_DIR as INGEST_SQL_DIR
from services.ingestion.warehouse import IngestRuntime, IngestSettings


@dataclass(frozen=True)
class Registries:
    jobs: JobRegistry
    tasks: TaskRegistry


def _packages(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def load_registries(settings: Settings) -> Registries:
    """Discover handlers and job types; fail start-up if a job names a task type nobody handles."""
    tasks = discover_tasks(*_packages(settings.task_packages))
    jobs = discover_jobs(*_packages(settings.job_packages))
    jobs.check_handlers(tasks)
    return Registries(jobs, tasks)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Runtime:
    settings: Settings
    database: Database
    store: PostgresStore
    transport: Transport
    relay: Relay
    registries: Registries
    engine: CoreMachine
    janitor: Janitor
    pruner: PruneStore
    retention: RetentionPolicy
    _closed: bool = field(default=False, repr=False)
    telemetry: Telemetry = field(default_factory=NoTelemetry)

    def worker(self, concurrency: int = 2, **overrides: object) -> Worker:
        config = WorkerConfig(
            concurrency=concurrency,
            max_batch=self.settings.worker_batch_size,
            target_batch_seconds=self.settings.worker_flush_seconds,
            lock_seconds=self.settings.lock_seconds,
            jobs_queue=self.settings.jobs_queue,
            tasks_queue=self.settings.tasks_queue,
        )
        return Worker(self.engine, self.transport, replace(config, **overrides), janitor=self.janitor)  # type: ignore[arg-type]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.transport.close()
            self.database.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_runtime(
    settings: Settings | None = None,
    *,
    registries: Registries | None = None,
    worker_id: str | None = None,
    migrate_schema: bool = True,
    telemetry: Telemetry | None = None,
) -> Runtime:
    """Wire everything from one settings object. Opens no connection until first use, except to migrate."""
    settings = settings or Settings()
    registries = registries or load_registries(settings)
    database = Database(settings)
    if migrate_schema:
        migrate(database)
    store = PostgresStore(database.connection, settings.duplicate_window_seconds,
                          holds_queue=settings.transport == "postgres",
                          tasks_per_message=_tasks_per_message(settings))
    services = Services(_ingestion(settings, database))
    transport, relay = _transport(settings, database)
    pruner = PostgresPruner(database.connection)
    retention = retention_policy(settings)
    telemetry = telemetry or build_telemetry(settings)
    traced = None if isinstance(telemetry, NoTelemetry) else telemetry
    engine = CoreMachine(
        store, relay, registries.jobs, registries.tasks, worker_id or default_worker_id(), services=services,
        telemetry=traced, leases=LeaseConfig(lease_seconds=settings.task_lease_seconds),
    )
    observe = getattr(telemetry, "observe_queue_depth", None)
    if callable(observe):
        observe(_queue_depths(settings, database))
    janitor = Janitor(
        store,
        relay,
        JanitorConfig(
            lease_grace_seconds=settings.lease_grace_seconds,
            overdue_retry_seconds=settings.overdue_retry_seconds,
            stuck_job_seconds=settings.stuck_job_seconds,
        ),
        housekeeping=[*_housekeeping(transport, settings), _pruning(pruner, retention, settings)],
        inline_finish=registries.jobs.inline_finish(),
    )
    return Runtime(
        settings, database, store, transport, relay, registries, engine, janitor, pruner, retention,
        telemetry=telemetry,
    )


def build_artifact_store(settings: Settings) -> ArtifactStore:
    """Blob Storage when a connection string or an account URL is set, else the local reports folder."""
    if settings.artifacts_connection or settings.artifacts_account_url:
        from infrastructure.artifacts import blob

        container = settings.artifacts_container
        if settings.artifacts_connection:
            connection = settings.artifacts_connection
            return blob.BlobArtifactStore(lambda: blob.container_from_connection_string(connection, container))
        url = settings.artifacts_account_url
        assert url is not None
        client_id = settings.azure_client_id
        return blob.BlobArtifactStore(
            lambda: blob.container_from_account_url(url, container, azure_credential(client_id))
        )
    return LocalArtifactStore(settings.reports_dir)


def _ingestion(settings: Settings, database: Database) -> IngestRuntime:
    """The ingestion service: warehouse connections from the engine's pool, its SQL through the one SQL loader."""
    runtime = IngestRuntime(
        connect=database.connection,
        queries=SqlQueries.load(INGEST_SQL_DIR),
        artifacts=build_artifact_store(settings),
        settings=IngestSettings(data_sources=settings.data_sources, data_root=settings.data_root),
    )
    runtime.catalog()  # a broken data_sources.yml stops start-up here, naming the file and field
    return runtime


def _tasks_per_message(settings: Settings) -> int:
    if settings.tasks_per_message is not None:
        return settings.tasks_per_message
    return DEFAULT_TASKS_PER_MESSAGE if settings.transport == "postgres" else 1


def _transport(settings: Settings, database: Database) -> tuple[Transport, Relay]:
    set_queue_notify(database, enabled=settings.transport == "postgres")
    if settings.transport == "postgres":
        config = QueueConfig(
            lock_seconds=settings.lock_seconds,
            max_deliveries=settings.max_deliveries,
            duplicate_window_seconds=settings.duplicate_window_seconds,
        )
        listen = (lambda: database.connect(autocommit=True)) if database.listen_available else None
        return PostgresQueue(database, listen, config), NullRelay()
    from infrastructure.outbox_relay import OutboxRelay
    from infrastructure.servicebus import transport as sb
    from infrastructure.servicebus.client import ServiceBusAccess
    from infrastructure.servicebus.dlq import ParkedDeadLetters

    transport = sb.ServiceBusTransport(
        sb.client_factory(ServiceBusAccess.from_settings(settings)),
        {"jobs": settings.jobs_queue, "tasks": settings.tasks_queue},
        parked=ParkedDeadLetters(database),
    )
    return transport, OutboxRelay(database, transport)


def _queue_depths(settings: Settings, database: Database) -> Callable[[], dict[str, int]]:
    """Where the queue depth metric reads from: the queue table, or Service Bus's management API."""
    if settings.transport == "postgres":
        return lambda: queue_depths(database, (settings.jobs_queue, settings.tasks_queue))
    from infrastructure.servicebus import transport as sb
    from infrastructure.servicebus.client import ServiceBusAccess
    from infrastructure.servicebus.depth import ServiceBusQueueDepths

    access = ServiceBusAccess.from_settings(settings)
    entities = {"jobs": settings.jobs_queue, "tasks": settings.tasks_queue}
    return ServiceBusQueueDepths(lambda: sb.admin_factory(access), entities)


def _housekeeping(transport: Transport, settings: Settings) -> list[Callable[[], int]]:
    """Deleting settled queue rows once the duplicate-detection window has passed."""
    purge: Callable[[float], int] | None = getattr(transport, "purge_settled", None)
    if purge is None:
        return []
    window = settings.duplicate_window_seconds
    return [lambda: purge(window)]


def retention_policy(settings: Settings) -> RetentionPolicy:
    """Per-state retention from the settings; refused when shorter than the duplicate-detection window."""

    def days(value: float | None) -> timedelta | None:
        return None if value is None else timedelta(days=value)

    policy = RetentionPolicy({
        JobStatus.COMPLETED: days(settings.retain_completed_days),
        JobStatus.COMPLETED_WITH_ERRORS: days(settings.retain_completed_with_errors_days),
        JobStatus.FAILED: days(settings.retain_failed_days),
        JobStatus.CANCELLED: days(settings.retain_cancelled_days),
    })
    try:
        policy.check_at_least(timedelta(seconds=settings.duplicate_window_seconds))
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    return policy


def _pruning(pruner: PruneStore, policy: RetentionPolicy, settings: Settings) -> Callable[[], int]:
    """One janitor pass prunes at most `prune_rows_per_pass` rows of expired history; the next goes on."""
    limits = PruneLimits(budget_rows=settings.prune_rows_per_pass)
    return lambda: prune(pruner, policy, datetime.now(UTC), limits).total_jobs
