"""Company-id enrichment on PostgreSQL: reference table, provider within a per-run budget, released connections."""

from __future__ import annotations

import csv
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from core.errors import ConfigurationError
from core.registry import TaskContext

PROVIDER = textwrap.dedent('''
    """A fake external registry that knows every company."""

    calls: list[str] = []


    class Registry:
        def lookup(self, name: str) -> str | None:
            calls.append(name)
            return "EXT" + str(len(calls))

        def close(self) -> None:
            calls.append("<closed>")


    def registry() -> Registry:
        return Registry()
''')


def test_ids_come_from_the_reference_table_once_it_is_filled(runner, data_root, warehouse):
    data_root()
    assert runner.run({"domains": ["annuity_income"], "execute": True}).error is None
    run = runner.run({"domains": ["annuity_performance"], "execute": True})
    stats = run.report["domains"]["annuity_performance"]["enrichment"]
    assert stats["temporary"] == 0 and stats["from_reference"] == stats["names"]
    assert run.report["domains"]["annuity_performance"]["unknown_names"] == 0
    unresolved = warehouse.execute(
        "SELECT count(*) FROM warehouse.annuity_performance p LEFT JOIN warehouse.company_reference r "
        "ON r.company_id = p.company_id WHERE r.company_id IS NULL"
    ).fetchone()[0]
    assert unresolved == 0


def test_provider_budget_is_shared_by_the_run_and_connections_are_released(
    runner, data_root, data_sources, tmp_path, monkeypatch, connection_factory, warehouse, ingest_env
):
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "fake_registry.py").write_text(PROVIDER, encoding="utf-8")
    monkeypatch.syspath_prepend(str(modules))
    data_root()
    data_sources(lambda c: c["domains"]["annuity_performance"]["enrichment"].update(
        provider="fake_registry:registry", lookup_budget=3))
    opened, closed = [], []

    @contextmanager
    def counting() -> Iterator[psycopg.Connection[Any]]:
        with connection_factory() as conn:
            opened.append(conn)
            try:
                yield conn
            finally:
                closed.append(conn)

    ingest_env.update(connect=counting)
    run = runner.run({"domains": ["annuity_performance"]})

    assert run.error is None
    import fake_registry  # type: ignore[import-not-found]  # written by this test

    lookups = [c for c in fake_registry.calls if c != "<closed>"]
    assert len(lookups) == 3, "two files, one budget of three lookups for the run"
    assert fake_registry.calls.count("<closed>") == 2, "each file's enricher closed its provider"
    results = run.results[2]
    assert sum(r["enrichment"]["lookups_used"] for r in results) == 3
    assert any(r["enrichment"]["budget_exhausted"] for r in results)
    assert len(opened) == len(closed) > 0
    assert all(conn.closed for conn in opened)
    assert _backends_gone(warehouse), "every borrowed connection's server process ended"
    with open(run.report["files"]["unknown_names"], encoding="utf-8") as handle:
        unknown = list(csv.DictReader(handle))
    assert len(unknown) == 16 - 3


def test_handlers_need_the_ingestion_service_from_the_composition_root(task_registry):
    handler = task_registry.get("ingest.references")
    with pytest.raises(ConfigurationError, match="no IngestRuntime service"):
        handler({"domain": "annual_award"}, TaskContext("j", "ingest", 3, "t", 0, 1, 3))


def _backends_gone(warehouse: psycopg.Connection[Any], wait: float = 5.0) -> bool:
    """A closed connection's server process exits asynchronously; give it a moment."""
    deadline = time.monotonic() + wait
    while True:
        row = warehouse.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
        active = row[0] if row else -1
        if active == 0 or time.monotonic() > deadline:
            return bool(active == 0)
        time.sleep(0.05)
