"""Backfilling reference tables from staged records: missing keys inserted exactly once, however tasks race.

The reference table's key is its primary key and the insert is `ON CONFLICT (key) DO NOTHING`, so two tasks
offering the same new key insert it once between them (the second waits for the first and skips the row).
Domains may feed different columns of one reference table; each adds the columns it needs.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from services.ingestion import staging as st
from services.ingestion.config import ReferenceConfig
from services.ingestion.queries import query, render, table
from services.ingestion.tables import Column, create_table, identifiers, key_join, not_null

JOB_COLUMN = Column("_job_id", "text", nullable=True)


def reference_columns(ref: ReferenceConfig, staging: st.StagingTable) -> list[Column]:
    by_name = {c.name: c for c in staging.columns}
    return [
        Column(ref_column, by_name[source].sql_type, nullable=ref_column not in ref.key)
        for ref_column, source in ref.columns.items()
    ]


def ensure_reference_table(conn: psycopg.Connection[Any], ref: ReferenceConfig, staging: st.StagingTable) -> None:
    columns = reference_columns(ref, staging)
    existing = set(st.table_columns(conn, ref.db_schema, ref.table))
    if existing and all(c.name in existing for c in columns):
        return
    st.ensure_schema(conn, ref.db_schema)
    with conn.transaction():
        st.lock(conn, ref.qualified)
        conn.execute(create_table(ref.db_schema, ref.table, [*columns, JOB_COLUMN], ref.key))
        for column in columns:
            conn.execute(query("add_column", table=table(ref.db_schema, ref.table), definition=column.definition()))


def _slots(ref: ReferenceConfig, staging: st.StagingTable) -> dict[str, sql.Composable]:
    source_key = [ref.columns[k] for k in ref.key]
    others = [source for column, source in ref.columns.items() if column not in ref.key]
    order: list[sql.Composable] = [sql.Identifier(c) for c in source_key]
    order += [sql.SQL("{} NULLS LAST").format(sql.Identifier(c)) for c in others]
    return {
        "reference": table(ref.db_schema, ref.table),
        "reference_columns": identifiers([*ref.columns, JOB_COLUMN.name]),
        "reference_key": identifiers(ref.key),
        "source_columns": identifiers(list(ref.columns.values())),
        "source_key": identifiers(source_key),
        "key_not_null": not_null(source_key),
        "order": sql.SQL(", ").join(order),
        "staging": staging.identifier,
        "join": key_join(ref.key, "r", "s", right_names=source_key),
    }


def backfill(
    conn: psycopg.Connection[Any], ref: ReferenceConfig, staging: st.StagingTable, job_id: str, *, execute: bool
) -> dict[str, Any]:
    """Insert the missing reference rows (execute) or count them (plan-only)."""
    slots = _slots(ref, staging)
    statement = query("backfill_reference", **slots)
    if execute:
        ensure_reference_table(conn, ref, staging)
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(statement, (job_id, job_id))
            inserted = max(cur.rowcount, 0)
        return {"table": ref.qualified, "mode": "executed", "inserted": inserted}
    exists = bool(st.table_columns(conn, ref.db_schema, ref.table))
    counting = query("count_missing_references" if exists else "count_distinct_keys", **slots)
    row = conn.execute(counting, (job_id,)).fetchone()
    return {"table": ref.qualified, "mode": "plan-only", "missing": int(row[0]) if row else 0,
            "sql": render(conn, statement)}
