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
from services.ingestion.tables import LINEAGE, Column, create_table, identifiers, key_join, lineage_columns


@dataclass(frozen=True, slots=True)
class LoadSource:
    """One domain's staged records bound for the target."""

    domain: str
    staging: st.StagingTable


def target_columns(source: LoadSource) -> list[Column]:
    return source.staging.columns + lineage_columns()


def _create(target: TargetConfig, source: LoadSource) -> list[sql.Composed]:
    key = target.primary_key if target.load_mode is LoadMode.DELETE_INSERT else None
    return [
        query("create_schema", schema=sql.Identifier(target.db_schema)),
        create_table(target.db_schema, target.table, target_columns(source), key),
    ]


def _check_shape(conn: psycopg.Connection[Any], target: TargetConfig, source: LoadSource) -> bool:
    """False when the table does not exist; raises when it exists without the columns the model needs."""
    existing = st.table_columns(conn, target.db_schema, target.table)
    if not existing:
        return False
    missing = [c.name for c in target_columns(source) if c.name not in existing]
    if missing:
        raise PermanentError(
            f"{target.qualified} exists without column(s) {missing} of the {source.domain} output model; "
            "migrate or drop the table"
        )
    return True


def _statements(target: TargetConfig, source: LoadSource) -> tuple[sql.Composed | None, sql.Composed]:
    columns = identifiers([*source.staging.data_columns, *LINEAGE])
    target_id = table(target.db_schema, target.table)
    insert = query("insert_from_staging", target=target_id, columns=columns, staging=source.staging.identifier)
    if target.load_mode is LoadMode.APPEND:
        return None, insert
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


def plan(
    conn: psycopg.Connection[Any], target: TargetConfig, sources: list[LoadSource], job_id: str,
    expected: int | None = None,
) -> dict[str, Any]:
    """What execute would do: statements and counts, nothing written."""
    verify_staged(conn, target, sources, job_id, expected)
    exists = _check_shape(conn, target, sources[0])
    statements: list[str] = [] if exists else [render(conn, s) for s in _create(target, sources[0])]
    rows, would_delete = 0, 0
    for source in sources:
        rows += st.count_rows(conn, source.staging, job_id)
        delete, insert = _statements(target, source)
        if delete is not None:
            statements.append(render(conn, delete))
            if exists:
                counting = query(
                    "count_matching_keys", target=table(target.db_schema, target.table),
                    staging=source.staging.identifier, join=key_join(target.primary_key, "t", "s"),
                )
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
        if not _check_shape(conn, target, sources[0]):
            conn.execute(_create(target, sources[0])[-1])
        conn.execute(query("lock_target", table=table(target.db_schema, target.table)))
        verify_staged(conn, target, sources, job_id, expected)
        staged = [(source, *_statements(target, source)) for source in sources]
        with conn.cursor() as cur:
            for _source, delete, _insert in staged:
                if delete is not None:
                    cur.execute(delete, (job_id,))
                    deleted += max(cur.rowcount, 0)
            for _source, _delete, insert in staged:
                cur.execute(insert, (job_id,))
                inserted += max(cur.rowcount, 0)
    return {"table": target.qualified, "mode": "executed", "load_mode": target.load_mode.value, "rows": inserted,
            "deleted": deleted, "seconds": round(time.perf_counter() - started, 3)}
