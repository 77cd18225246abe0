"""Loading a run into the warehouse: all of it in one transaction after the gate, or a plan that writes nothing.

Execute (`load_run`): one transaction takes an advisory lock per table it touches, in name order (one lock order
for every run, so runs sharing tables queue instead of deadlocking), backfills every reference table from every
domain's staged records, resolves provisional ids, then loads each fact table: `delete_insert` deletes the rows
whose keys the run carries (a key that changed only from a provisional id to a real one counts as the same key)
and inserts; `append` deletes what the same source files loaded before and inserts. Any failure rolls back the
whole transaction: every warehouse table, facts and references alike, is exactly as it was.
Every target table has its primary key as a constraint; a table created by an older version gets a unique index.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from core.errors import PermanentError
from services.ingestion import staging as st
from services.ingestion.config import DomainConfig, EnrichmentConfig, LoadMode, TargetConfig
from services.ingestion.dberrors import warehouse_errors
from services.ingestion.references import backfill as references_backfill
from services.ingestion.references import provisional_id, resolve_provisional
from services.ingestion.tables import (
    LINEAGE,
    LOADED_AT,
    Column,
    create_table,
    identifiers,
    key_join,
    lineage_columns,
    loaded_at_column,
)
from services.ingestion.warehouse import Warehouse, render, table


@dataclass(frozen=True, slots=True)
class LoadSource:
    """One domain's staged records bound for its target."""

    config: DomainConfig
    staging: st.StagingTable

    @property
    def domain(self) -> str:
        return self.config.name

    @property
    def provisional(self) -> EnrichmentConfig | None:
        """The enrichment whose id column is part of the key, when temporary ids may be replaced by real ones."""
        enrichment = self.config.enrichment
        if enrichment.enabled and enrichment.id_column in self.config.target.primary_key:
            return enrichment
        return None


def target_columns(source: LoadSource) -> list[Column]:
    return source.staging.columns + lineage_columns() + [loaded_at_column()]


def _create(db: Warehouse, target: TargetConfig, source: LoadSource) -> list[sql.Composed]:
    """The table with its primary key as a real constraint, whatever the load mode."""
    return [
        db.q("create_schema", schema=sql.Identifier(target.db_schema)),
        create_table(target.db_schema, target.table, target_columns(source), target.primary_key),
    ]


def _missing_columns(db: Warehouse, target: TargetConfig, source: LoadSource) -> list[Column] | None:
    """None when the table does not exist; else the columns it lacks. Lacking a model column is an error."""
    existing = st.table_columns(db, target.db_schema, target.table)
    if not existing:
        return None
    missing = [c for c in target_columns(source) if c.name not in existing]
    lacking_data = [c.name for c in missing if c.name not in LINEAGE and c.name != LOADED_AT]
    if lacking_data:
        raise PermanentError(
            f"{target.qualified} exists without column(s) {lacking_data} of the {source.domain} output model; "
            "migrate or drop the table"
        )
    return missing


def _upgrade(db: Warehouse, target: TargetConfig, missing: list[Column]) -> None:
    """A table from an older version: add the lineage columns it lacks and enforce its key with a unique index."""
    target_id = table(target.db_schema, target.table)
    for column in missing:
        nullable = Column(column.name, column.sql_type, nullable=True, default=column.default)
        db.conn.execute(db.q("add_column", table=target_id, definition=nullable.definition()))
    row = db.conn.execute(db.q("has_unique_key"), (target.qualified, sorted(target.primary_key))).fetchone()
    if not (row and row[0]):
        index = sql.Identifier(f"{target.table}_key")
        try:
            with db.conn.transaction():
                db.conn.execute(db.q("create_unique_key", index=index, table=target_id,
                                   key=identifiers(target.primary_key)))
        except psycopg.errors.UniqueViolation as exc:
            raise PermanentError(
                f"{target.qualified} holds duplicate rows for its primary key {target.primary_key} (loaded before "
                f"keys were enforced); remove them, then load again: {exc}"
            ) from exc


def _statements(db: Warehouse, target: TargetConfig, source: LoadSource) -> tuple[sql.Composed, sql.Composed]:
    """(delete, insert): delete_insert replaces rows by key; append replaces what the same files loaded before."""
    columns = identifiers([*source.staging.data_columns, *LINEAGE])
    target_id = table(target.db_schema, target.table)
    insert = db.q("insert_from_staging", target=target_id, columns=columns, staging=source.staging.identifier)
    if target.load_mode is LoadMode.APPEND:
        return db.q("delete_by_source_file", target=target_id, staging=source.staging.identifier), insert
    enrichment = source.provisional
    if enrichment is not None:
        rest = [k for k in target.primary_key if k != enrichment.id_column]
        delete = db.q(
            "delete_by_key_or_provisional", target=target_id, staging=source.staging.identifier,
            key=identifiers([*target.primary_key, enrichment.name_column]), join=key_join(rest, "t", "s"),
            id_column=sql.Identifier(enrichment.id_column), provisional=provisional_id(enrichment, "s"),
        )
        return delete, insert
    delete = db.q(
        "delete_by_key", target=target_id, key=identifiers(target.primary_key), staging=source.staging.identifier,
        join=key_join(target.primary_key, "t", "s"),
    )
    return delete, insert


def verify_staged(
    db: Warehouse, target: TargetConfig, sources: list[LoadSource], job_id: str, expected: int | None
) -> int:
    """The staged row count, which must match what the process stage reported (staging is unlogged)."""
    staged = sum(st.count_rows(db, source.staging, job_id) for source in sources)
    if expected is not None and staged != expected:
        raise PermanentError(
            f"{target.qualified}: {staged} staged rows but the process stage reported {expected}; "
            "staging was lost or changed (a database restart empties unlogged staging) — run the job again"
        )
    return staged


def _count_replaced(db: Warehouse, target: TargetConfig, source: LoadSource) -> sql.Composed:
    target_id = table(target.db_schema, target.table)
    if target.load_mode is LoadMode.APPEND:
        return db.q("count_by_source_file", target=target_id, staging=source.staging.identifier)
    enrichment = source.provisional
    if enrichment is not None:
        rest = [k for k in target.primary_key if k != enrichment.id_column]
        return db.q("count_matching_keys_or_provisional", target=target_id, staging=source.staging.identifier,
                    join=key_join(rest, "t", "s"), id_column=sql.Identifier(enrichment.id_column),
                    provisional=provisional_id(enrichment, "s"))
    return db.q("count_matching_keys", target=target_id, staging=source.staging.identifier,
                 join=key_join(target.primary_key, "t", "s"))


def plan(
    db: Warehouse, target: TargetConfig, sources: list[LoadSource], job_id: str,
    expected: int | None = None,
) -> dict[str, Any]:
    """What execute would do: statements and counts, nothing written."""
    verify_staged(db, target, sources, job_id, expected)
    missing = _missing_columns(db, target, sources[0])
    exists = missing is not None
    statements: list[str] = [] if exists else [render(db.conn, s) for s in _create(db, target, sources[0])]
    rows, would_delete = 0, 0
    for source in sources:
        rows += st.count_rows(db, source.staging, job_id)
        delete, insert = _statements(db, target, source)
        statements.append(render(db.conn, delete))
        if exists and not missing:
            counting = _count_replaced(db, target, source)
            row = db.conn.execute(counting, (job_id,)).fetchone()
            would_delete += int(row[0]) if row else 0
        statements.append(render(db.conn, insert))
    return {"table": target.qualified, "mode": "plan only", "load_mode": target.load_mode.value, "rows": rows,
            "would_delete": would_delete, "sql": statements}


def plan_run(
    db: Warehouse, sources: list[LoadSource], job_id: str, expected: dict[str, int]
) -> dict[str, Any]:
    """What `load_run` would do to each fact table: statements and counts, nothing written."""
    tables: dict[str, list[LoadSource]] = {}
    for source in sources:
        tables.setdefault(source.config.target.qualified, []).append(source)
    planned = [plan(db, group[0].config.target, group, job_id, expected.get(name))
               for name, group in sorted(tables.items())]
    return {"mode": "plan only", "tables": planned, "references": []}


def _load_table(
    db: Warehouse, target: TargetConfig, sources: list[LoadSource], job_id: str, expected: int | None
) -> dict[str, Any]:
    """One fact table, inside the run's transaction."""
    started = time.perf_counter()
    missing = _missing_columns(db, target, sources[0])
    if missing is None:
        for statement in _create(db, target, sources[0]):
            db.conn.execute(statement)
    else:
        _upgrade(db, target, missing)
    db.conn.execute(db.q("lock_target", table=table(target.db_schema, target.table)))
    verify_staged(db, target, sources, job_id, expected)
    inserted, deleted = 0, 0
    staged = [_statements(db, target, source) for source in sources]
    with db.conn.cursor() as cur:
        for delete, _insert in staged:
            cur.execute(delete, (job_id,))
            deleted += max(cur.rowcount, 0)
        for _delete, insert in staged:
            cur.execute(insert, (job_id,))
            inserted += max(cur.rowcount, 0)
    return {"table": target.qualified, "mode": "loaded", "load_mode": target.load_mode.value, "rows": inserted,
            "deleted": deleted, "seconds": round(time.perf_counter() - started, 3)}


def load_run(
    db: Warehouse, sources: list[LoadSource], job_id: str, expected: dict[str, int]
) -> dict[str, Any]:
    """Backfill references, resolve provisional ids and load every fact table, all in one transaction."""
    started = time.perf_counter()
    tables: dict[str, list[LoadSource]] = {}
    for source in sources:
        tables.setdefault(source.config.target.qualified, []).append(source)
    references = [(ref, source) for source in sources for ref in source.config.references]
    names = {*tables, *(ref.qualified for ref, _ in references)}
    names |= {f"{s.provisional.reference.db_schema}.{s.provisional.reference.table}"
              for s in sources if s.provisional is not None}
    names |= {f"schema {name.split('.')[0]}" for name in list(names)}
    loaded: list[dict[str, Any]] = []
    backfilled: dict[str, int] = {}
    resolved: dict[str, int] = {}
    with db.conn.transaction():
        for name in sorted(names):
            st.lock(db, name)
        for ref, source in sorted(references, key=lambda item: (item[0].qualified, item[1].domain)):
            backfilled[ref.qualified] = backfilled.get(ref.qualified, 0) + references_backfill(
                db, ref, source.staging, job_id)
        for source in sources:
            if source.provisional is not None:
                resolved[source.domain] = resolve_provisional(db, source.provisional, source.staging, job_id)
        for name in sorted(tables):
            with warehouse_errors(f"load {name}"):
                loaded.append(_load_table(db, tables[name][0].config.target, tables[name], job_id,
                                          expected.get(name)))
    return {"mode": "loaded", "tables": loaded,
            "references": [{"table": t, "mode": "loaded", "inserted": n} for t, n in sorted(backfilled.items())],
            "resolved_ids": resolved, "seconds": round(time.perf_counter() - started, 3)}
