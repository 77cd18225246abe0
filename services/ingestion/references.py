"""Reference tables fed from staged records: counted before the gate, written only inside the run's load.

Plan (and the references stage of every run) only counts the keys a domain would add. The load transaction
(`loader.load_run`) backfills them: `INSERT … ON CONFLICT (key) DO UPDATE` fills columns another domain left
empty (one domain knows plan names, another only plan codes), in key order, so two runs racing on one reference
table insert each key once and never deadlock. Then provisional ids are resolved: a record that got a temporary
company id (no reference knew the name when the file was processed) takes the reference's id if the run's own
backfill, or another run since, supplied one.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from services.ingestion import staging as st
from services.ingestion.config import EnrichmentConfig, ReferenceConfig
from services.ingestion.tables import Column, create_table, identifiers, key_join, not_null
from services.ingestion.warehouse import Warehouse, render, table

JOB_COLUMN = Column("_job_id", "text", nullable=True)


def reference_columns(ref: ReferenceConfig, staging: st.StagingTable) -> list[Column]:
    by_name = {c.name: c for c in staging.columns}
    return [
        Column(ref_column, by_name[source].sql_type, nullable=ref_column not in ref.key)
        for ref_column, source in ref.columns.items()
    ]


def ensure_reference_table(db: Warehouse, ref: ReferenceConfig, staging: st.StagingTable) -> None:
    """Create the table, or add the columns this domain feeds (inside the caller's transaction)."""
    columns = reference_columns(ref, staging)
    existing = set(st.table_columns(db, ref.db_schema, ref.table))
    if existing and all(c.name in existing for c in columns):
        return
    db.conn.execute(db.q("create_schema", schema=sql.Identifier(ref.db_schema)))
    db.conn.execute(create_table(ref.db_schema, ref.table, [*columns, JOB_COLUMN], ref.key))
    for column in columns:
        db.conn.execute(db.q("add_column", table=table(ref.db_schema, ref.table), definition=column.definition()))


def _slots(ref: ReferenceConfig, staging: st.StagingTable) -> dict[str, sql.Composable]:
    source_key = [ref.columns[k] for k in ref.key]
    others = [column for column in ref.columns if column not in ref.key]
    order: list[sql.Composable] = [sql.Identifier(c) for c in source_key]
    order += [sql.SQL("{} NULLS LAST").format(sql.Identifier(ref.columns[c])) for c in others]
    fill = [sql.SQL("{} = coalesce(r.{}, EXCLUDED.{})").format(*(sql.Identifier(c),) * 3) for c in others]
    gaps = [sql.SQL("(r.{} IS NULL AND EXCLUDED.{} IS NOT NULL)").format(*(sql.Identifier(c),) * 2) for c in others]
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
        "fill": sql.SQL(", ").join(fill) if fill else sql.SQL("{} = r.{}").format(
            sql.Identifier(ref.key[0]), sql.Identifier(ref.key[0])),
        "gaps": sql.SQL(" OR ").join(gaps) if gaps else sql.SQL("false"),
    }


def count_missing(db: Warehouse, ref: ReferenceConfig, staging: st.StagingTable, job_id: str) -> dict[str, Any]:
    """How many keys the run would add (nothing is written)."""
    slots = _slots(ref, staging)
    exists = bool(st.table_columns(db, ref.db_schema, ref.table))
    counting = db.q("count_missing_references" if exists else "count_distinct_keys", **slots)
    row = db.conn.execute(counting, (job_id,)).fetchone()
    return {"table": ref.qualified, "missing": int(row[0]) if row else 0,
            "sql": render(db.conn, db.q("backfill_reference", **slots))}


def backfill(db: Warehouse, ref: ReferenceConfig, staging: st.StagingTable, job_id: str) -> int:
    """Insert missing keys and fill empty columns (inside the load transaction); the rows changed."""
    ensure_reference_table(db, ref, staging)
    with db.conn.cursor() as cur:
        cur.execute(db.q("backfill_reference", **_slots(ref, staging)), (job_id, job_id))
        return max(cur.rowcount, 0)


def provisional_id(enrichment: EnrichmentConfig, alias: str) -> sql.Composed:
    """SQL for the temporary id of `<alias>.<name column>`, as `enrichment.temporary_id` computes it."""
    return sql.SQL("{} || upper(substr(encode(sha256(convert_to({}, 'UTF8')), 'hex'), 1, 10))").format(
        sql.Literal(enrichment.temporary_id_prefix), sql.Identifier(alias, enrichment.name_column))


def resolve_provisional(db: Warehouse, enrichment: EnrichmentConfig, staging: st.StagingTable, job_id: str) -> int:
    """Give staged records with a temporary id the reference's id for their name, where it now has one."""
    ref = enrichment.reference
    if not st.table_columns(db, ref.db_schema, ref.table):
        return 0
    statement = db.q(
        "resolve_provisional_ids", staging=staging.identifier, reference=table(ref.db_schema, ref.table),
        id_column=sql.Identifier(enrichment.id_column), ref_id=sql.Identifier(ref.id_column),
        name_column=sql.Identifier(enrichment.name_column), ref_name=sql.Identifier(ref.name_column),
        provisional=provisional_id(enrichment, "s"),
    )
    with db.conn.cursor() as cur:
        cur.execute(statement, (job_id,))
        return max(cur.rowcount, 0)
