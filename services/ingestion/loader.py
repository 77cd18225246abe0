"""Loading staged records into a warehouse table: a SQL plan with counts, or one all-or-nothing transaction.

Execute: in one transaction the target table is created if needed (from the output model), locked against
concurrent loads, then `delete_insert` deletes the rows whose keys the batch carries and inserts the batch,
or `append` only inserts. Any failure rolls the whole transaction back: the table is exactly as it was.
Records of every file of the run (up to `max_files`) are already accumulated in staging, so each table is
loaded in a single operation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from core.errors import PermanentError
from services.ingestion import staging as st
from services.ingestion.config import LoadMode, TargetConfig
from services.ingestion.queries import query, render, table
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


@dataclass(frozen=True, slots=True)
class LoadSource:
    """One domain's staged records bound for the target."""

    domain: str
    staging: st.StagingTable


def target_columns(source: LoadSource) -> list[Column]:
    return source.staging.columns + lineage_columns() + [loaded_at_column()]


def _create(target: TargetConfig, source: LoadSource) -> list[sql.Composed]:
    """The table with its primary key as a real constraint, whatever the load mode."""
    return [
        query("create_schema", schema=sql.Identifier(target.db_schema)),
        create_table(target.db_schema, target.table, target_columns(source), target.primary_key),
    ]


def _missing_columns(conn: psycopg.Connection[Any], target: TargetConfig, source: LoadSource) -> list[Column] | None:
    """None when the table does not exist; else the columns it lacks. Lacking a model column is an error."""
    existing = st.table_columns(conn, target.db_schema, target.table)
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


def _upgrade(conn: psycopg.Connection[Any], target: TargetConfig, missing: list[Column]) -> None:
    """A table from an older version: add the lineage columns it lacks and enforce its key with a unique index."""
    target_id = table(target.db_schema, target.table)
    for column in missing:
        nullable = Column(column.name, column.sql_type, nullable=True, default=column.default)
        conn.execute(query("add_column", table=target_id, definition=nullable.definition()))
    row = conn.execute(query("has_unique_key"), (target.qualified, sorted(target.primary_key))).fetchone()
    if not (row and row[0]):
        index = sql.Identifier(f"{target.table}_key")
        try:
            with conn.transaction():
                conn.execute(query("create_unique_key", index=index, table=target_id,
                                   key=identifiers(target.primary_key)))
        except psycopg.errors.UniqueViolation as exc:
            raise PermanentError(
                f"{target.qualified} holds duplicate rows for its primary key {target.primary_key} (loaded before "
                f"keys were enforced); remove them, then load again: {exc}"
            ) from exc


def _statements(target: TargetConfig, source: LoadSource) -> tuple[sql.Composed, sql.Composed]:
    """(delete, insert): delete_insert replaces rows by key; append replaces what the same files loaded before."""
    columns = identifiers([*source.staging.data_columns, *LINEAGE])
    target_id = table(target.db_schema, target.table)
    insert = query("insert_from_staging", target=target_id, columns=columns, staging=source.staging.identifier)
    if target.load_mode is LoadMode.APPEND:
        return query("delete_by_source_file", target=target_id, staging=source.staging.identifier), insert
    delete = query(
        "delete_by_key", target=target_id, key=identifiers(target.primary_key), staging=source.staging.identifier,
        join=key_join(target.primary_key, "t", "s"),
    )
    return delete, insert


def verify_staged(
    conn: psycopg.Connection[Any], target: TargetConfig, sources: list[LoadSource], job_id: str, expected: int | None
) -> int:
    """The staged row count, which must match what the process stage reported (staging is unlogged)."""
    staged = sum(st.count_rows(conn, source.staging, job_id) for source in sources)
    if expected is not None and staged != expected:
        raise PermanentError(
            f"{target.qualified}: {staged} staged rows but the process stage reported {expected}; "
            "staging was lost or changed (a database restart empties unlogged staging) — run the job again"
        )
    return staged


def _count_replaced(target: TargetConfig, source: LoadSource) -> sql.Composed:
    target_id = table(target.db_schema, target.table)
    if target.load_mode is LoadMode.APPEND:
        return query("count_by_source_file", target=target_id, staging=source.staging.identifier)
    return query("count_matching_keys", target=target_id, staging=source.staging.identifier,
                 join=key_join(target.primary_key, "t", "s"))


def plan(
    conn: psycopg.Connection[Any], target: TargetConfig, sources: list[LoadSource], job_id: str,
    expected: int | None = None,
) -> dict[str, Any]:
    """What execute would do: statements and counts, nothing written."""
    verify_staged(conn, target, sources, job_id, expected)
    missing = _missing_columns(conn, target, sources[0])
    exists = missing is not None
    statements: list[str] = [] if exists else [render(conn, s) for s in _create(target, sources[0])]
    rows, would_delete = 0, 0
    for source in sources:
        rows += st.count_rows(conn, source.staging, job_id)
        delete, insert = _statements(target, source)
        statements.append(render(conn, delete))
        if exists and not missing:
            counting = _count_replaced(target, source)
            row = conn.execute(counting, (job_id,)).fetchone()
            would_delete += int(row[0]) if row else 0
        statements.append(render(conn, insert))
    return {"table": target.qualified, "mode": "plan-only", "load_mode": target.load_mode.value, "rows": rows,
            "would_delete": would_delete, "sql": statements}


def execute(
    conn: psycopg.Connection[Any], target: TargetConfig, sources: list[LoadSource], job_id: str,
    expected: int | None = None,
) -> dict[str, Any]:
    """Load every source into the target in one transaction."""
    started = time.perf_counter()
    inserted, deleted = 0, 0
    st.ensure_schema(conn, target.db_schema)
    with conn.transaction():
        st.lock(conn, target.qualified)
        missing = _missing_columns(conn, target, sources[0])
        if missing is None:
            conn.execute(_create(target, sources[0])[-1])
        else:
            _upgrade(conn, target, missing)
        conn.execute(query("lock_target", table=table(target.db_schema, target.table)))
        verify_staged(conn, target, sources, job_id, expected)
        staged = [(source, *_statements(target, source)) for source in sources]
        with conn.cursor() as cur:
            for _source, delete, _insert in staged:
                cur.execute(delete, (job_id,))
                deleted += max(cur.rowcount, 0)
            for _source, _delete, insert in staged:
                cur.execute(insert, (job_id,))
                inserted += max(cur.rowcount, 0)
    return {"table": target.qualified, "mode": "executed", "load_mode": target.load_mode.value, "rows": inserted,
            "deleted": deleted, "seconds": round(time.perf_counter() - started, 3)}
