"""What ingestion needs from the composition root, handed over per runtime through `Services`, never globally.

`IngestRuntime` holds the warehouse connection factory, the named SQL of `sql/` (parsed by the engine's one SQL
loader, which the composition root passes in), the artifact store for reports, and the settings. Handlers
find it with `IngestRuntime.of(context.services)` and borrow a `Warehouse` — a connection in autocommit mode
(the pipeline opens its own transactions) with the named queries beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from core.artifacts import ArtifactStore
from core.services import Services
from services.ingestion.catalog import DomainCatalog, load_catalog

SQL_DIR = Path(__file__).parent / "sql"
ConnectionFactory = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]


class NamedQueries(Protocol):
    """The SQL loader's view ingestion uses: a named block with its `{slot}`s filled."""

    def compose(self, name: str, /, **slots: sql.Composable) -> sql.Composed: ...


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """Knobs of the ingestion pipeline. Relative paths are relative to the project root."""

    data_sources: Path | None = None
    data_root: Path | None = None
    staging_schema: str = "ingest_staging"
    keep_staging: bool = False


@dataclass(frozen=True, slots=True)
class Warehouse:
    """A borrowed connection and the named queries, passed to every function that talks to PostgreSQL."""

    conn: psycopg.Connection[Any]
    queries: NamedQueries

    def q(self, name: str, /, **slots: sql.Composable) -> sql.Composed:
        return self.queries.compose(name, **slots)

    def execute(self, name: str, params: Any = None, /, **slots: sql.Composable) -> psycopg.Cursor[Any]:
        return self.conn.execute(self.q(name, **slots), params)


@dataclass(frozen=True)
class IngestRuntime:
    """The ingestion service object the composition root builds once per runtime."""

    connect: ConnectionFactory
    queries: NamedQueries
    artifacts: ArtifactStore
    settings: IngestSettings = IngestSettings()

    @staticmethod
    def of(services: Services) -> IngestRuntime:
        return services.get(IngestRuntime)

    def catalog(self) -> DomainCatalog:
        """The domains of the configured data_sources.yml (re-read when the file changes)."""
        return load_catalog(self.settings.data_sources)

    def data_root(self) -> Path:
        return self.catalog().data_root(self.settings.data_root)

    @contextmanager
    def warehouse(self) -> Iterator[Warehouse]:
        """A connection in autocommit mode for the block, given back (as it was) afterwards."""
        with self.connect() as conn:
            previous = conn.autocommit
            if not previous:
                if conn.info.transaction_status != TransactionStatus.IDLE:
                    conn.rollback()
                conn.autocommit = True
            try:
                yield Warehouse(conn, self.queries)
            finally:
                if not previous and not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
                    conn.autocommit = False


def table(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def render(conn: Any, statement: sql.Composable) -> str:
    """Readable text of a statement, for plans and logs."""
    return " ".join(statement.as_string(conn).split()).rstrip(";")
