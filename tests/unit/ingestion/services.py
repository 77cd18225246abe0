"""The ingestion service for unit tests: the catalog and data root are real, the warehouse is out of reach."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.services import Services
from infrastructure.artifacts.local import LocalArtifactStore
from infrastructure.postgres.sql_queries import SqlQueries
from services.ingestion.warehouse import SQL_DIR, IngestRuntime, IngestSettings


@contextmanager
def _no_warehouse() -> Iterator[Any]:
    raise AssertionError("unit tests have no warehouse")
    yield  # pragma: no cover


def ingest_services(data_root: Path | None = None, reports: Path = Path("/nonexistent")) -> Services:
    return Services(IngestRuntime(_no_warehouse, SqlQueries.load(SQL_DIR), LocalArtifactStore(reports),
                                  IngestSettings(data_root=data_root)))
