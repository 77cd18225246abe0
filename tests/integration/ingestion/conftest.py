"""Ingestion fixtures: the ingestion service on this test's database, and a runner calling the handlers in order.

The runner does what the engine does for one job — build each stage's tasks with `Ingest.create_tasks`
from the previous stage's results, call the handlers, then `finalize` — without queues, so the pipeline's
semantics can be tested on the real PostgreSQL before (and independently of) the engine.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from core.errors import CoreMachineError, TaskError
from core.ids import task_id_for
from core.jobs import FinalizeContext, PreviousResults
from core.models import JobStatus, TaskResultRow, TaskStatus
from core.registry import TaskContext, TaskRegistry, discover_tasks
from core.services import Services
from infrastructure.artifacts.local import LocalArtifactStore
from infrastructure.postgres.sql_queries import SqlQueries
from jobs.ingest import Ingest
from services.ingestion.config import PROJECT_ROOT, data_sources_path
from services.ingestion.warehouse import SQL_DIR, ConnectionFactory, IngestRuntime, IngestSettings

SAMPLE_DATA = PROJECT_ROOT / "sample_data"


@dataclass
class Run:
    job_id: str
    parameters: dict[str, Any]
    results: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    error: Exception | None = None

    @property
    def outcome(self) -> str:
        return "failed" if self.error else "completed"


class IngestEnv:
    """The ingestion service a test's runs use; tests swap settings or the connection factory between runs."""

    def __init__(self, runtime: IngestRuntime) -> None:
        self.runtime = runtime

    @property
    def services(self) -> Services:
        return Services(self.runtime)

    def update(self, **changes: Any) -> None:
        self.runtime = replace(self.runtime, **changes)

    def settings(self, **changes: Any) -> None:
        self.update(settings=replace(self.runtime.settings, **changes))

    def context(self, job_id: str, stage: int, index: int = 0) -> TaskContext:
        return TaskContext(job_id, "ingest", stage, task_id_for(job_id, stage, index), index, 1, 3, self.services)


class IngestRunner:
    def __init__(self, tasks: TaskRegistry, env: IngestEnv, workers: int = 1) -> None:
        self.job = Ingest()
        self.tasks = tasks
        self.env = env
        self.workers = workers

    def parameters(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """What submit would store: the input manifest added, then validated."""
        return self.job.validate_parameters(self.job.prepare(raw, self.env.services))

    def _call(self, job_id: str, stage: int, index: int, task_type: str, params: dict[str, Any]) -> dict[str, Any]:
        result = self.tasks.get(task_type)(params, self.env.context(job_id, stage, index))
        return dict(result or {})

    def run(self, raw: Mapping[str, Any], *, stop_before: int | None = None) -> Run:
        parameters = self.parameters(raw)
        run = Run(self.job.job_id(parameters), parameters)
        previous = PreviousResults(stage=0)
        stage_results: dict[int, PreviousResults] = {}
        for stage in self.job.numbered_stages():
            if stop_before is not None and stage.number >= stop_before:
                return run
            specs = self.job.build_tasks(stage, parameters, previous)
            try:
                with ThreadPoolExecutor(max_workers=self.workers) as pool:
                    futures = [pool.submit(self._call, run.job_id, stage.number, i, s.task_type, s.parameters)
                               for i, s in enumerate(specs)]
                    results = [f.result() for f in futures]
            except (TaskError, CoreMachineError, ValueError, OSError) as exc:
                run.error = exc
                break
            run.results[stage.number] = results
            rows = [TaskResultRow(task_id_for(run.job_id, stage.number, i), i, TaskStatus.COMPLETED, r)
                    for i, r in enumerate(results)]
            previous = stage_results[stage.number] = PreviousResults(stage.number, rows)
        outcome = JobStatus.FAILED if run.error else JobStatus.COMPLETED
        errors = [{"message": str(run.error), "type": type(run.error).__name__}] if run.error else []
        context = FinalizeContext(run.job_id, "ingest", parameters, outcome, stage_results, {}, errors,
                                  self.env.services)
        run.report = self.job.finalize(context)
        return run


@pytest.fixture(scope="session")
def task_registry() -> TaskRegistry:
    return discover_tasks("services")


@pytest.fixture
def connection_factory(database_url: str) -> ConnectionFactory:
    """Plain (non-autocommit) connections to this test's database, closed when their block ends."""
    return lambda: psycopg.connect(database_url)


@pytest.fixture(scope="session")
def ingest_queries() -> SqlQueries:
    return SqlQueries.load(SQL_DIR)


@pytest.fixture
def ingest_env(connection_factory: ConnectionFactory, tmp_path: Path, ingest_queries: SqlQueries) -> IngestEnv:
    """The ingestion service on this test's database, reports in the test's folder."""
    return IngestEnv(IngestRuntime(connection_factory, ingest_queries, LocalArtifactStore(tmp_path / "reports"),
                                   IngestSettings()))


@pytest.fixture
def runner(ingest_env: IngestEnv, task_registry: TaskRegistry) -> IngestRunner:
    return IngestRunner(task_registry, ingest_env)


@pytest.fixture
def warehouse(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def data_root(tmp_path: Path, ingest_env: IngestEnv) -> Iterator[Callable[..., Path]]:
    """Point the data root at a copy of the sample set (or an empty folder) for this test."""

    def use(copy_samples: bool = True) -> Path:
        root = tmp_path / "data"
        if copy_samples and not root.exists():
            shutil.copytree(SAMPLE_DATA, root)
        root.mkdir(exist_ok=True)
        ingest_env.settings(data_root=root)
        return root

    yield use


@pytest.fixture
def data_sources(tmp_path: Path, ingest_env: IngestEnv) -> Callable[[Callable[[dict[str, Any]], None]], Path]:
    """Use a copy of data_sources.yml changed by `edit(config_dict)` for this test."""

    def use(edit: Callable[[dict[str, Any]], None]) -> Path:
        config = yaml.safe_load(data_sources_path().read_text(encoding="utf-8"))
        edit(config)
        path = tmp_path / "data_sources.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        ingest_env.settings(data_sources=path)
        return path

    return use


@pytest.fixture
def table_rows(warehouse: psycopg.Connection[Any]) -> Callable[[str], int]:
    """Rows in `schema.table`, or -1 when the table does not exist."""

    def count(qualified: str) -> int:
        exists = warehouse.execute("SELECT to_regclass(%s)", (qualified,)).fetchone()
        if not exists or exists[0] is None:
            return -1
        schema, table = qualified.split(".")
        statement = psycopg.sql.SQL("SELECT count(*) FROM {}").format(psycopg.sql.Identifier(schema, table))
        row = warehouse.execute(statement).fetchone()
        return int(row[0]) if row else 0

    return count
