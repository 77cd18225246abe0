"""The staging area in PostgreSQL: processed records, rejected rows and unknown names of a job, by file.

Records are never passed through task results: the read-and-process task COPYs them, chunk by chunk, into a
typed, unlogged table per domain (`<staging schema>.<domain>_<shape fingerprint>`) with lineage columns
`_job_id`, `_source_file`, `_source_sheet`, `_source_row`; later stages read them by job id. Writing one file
first deletes what an earlier attempt of the same task left, in the same transaction, so a retried task never
doubles rows.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from psycopg import errors, sql
from psycopg.types.json import Json
from pydantic import BaseModel

from services.ingestion.tables import (
    LINEAGE,
    Column,
    create_table,
    fingerprint,
    identifiers,
    lineage_columns,
    model_columns,
)
from services.ingestion.warehouse import Warehouse, table

REJECTED = "rejected_rows"
UNKNOWN_NAMES = "unknown_names"
LOOKUP_BUDGET = "lookup_budget"
PROVIDER_IDS = "provider_ids"


@dataclass(frozen=True, slots=True)
class StagingTable:
    """Where one domain's processed records wait for the load."""

    schema: str
    name: str
    columns: list[Column]

    @classmethod
    def for_domain(cls, schema: str, domain: str, model: type[BaseModel]) -> StagingTable:
        columns = model_columns(model)
        return cls(schema, f"{domain}_{fingerprint(lineage_columns() + columns)}", columns)

    @property
    def identifier(self) -> sql.Identifier:
        return table(self.schema, self.name)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def data_columns(self) -> list[str]:
        return [c.name for c in self.columns]


def lock(db: Warehouse, name: str) -> None:
    """Serialise DDL on one object across workers (concurrent CREATE ... IF NOT EXISTS can collide)."""
    db.conn.execute(db.q("advisory_lock"), (f"coremachine.ingest:{name}",))


def _schema_exists(db: Warehouse, schema: str) -> bool:
    row = db.conn.execute(db.q("schema_exists"), (schema,)).fetchone()
    return bool(row and row[0])


def ensure_schema(db: Warehouse, schema: str) -> None:
    """Create the schema unless it exists (concurrent CREATE SCHEMA IF NOT EXISTS can collide).

    A worker that looked before another created the schema may still run CREATE SCHEMA IF NOT EXISTS after its
    lock wait and hit a unique violation on `pg_namespace`: its lookups in the same transaction can miss the other
    worker's commit (seen readily through PgBouncer, where the workers' transactions truly overlap). The CREATE
    runs in a savepoint, so that collision is recognised and leaves the caller's transaction usable.
    """
    if _schema_exists(db, schema):
        return
    with db.conn.transaction():
        lock(db, f"schema {schema}")
        try:
            with db.conn.transaction():
                db.conn.execute(db.q("create_schema", schema=sql.Identifier(schema)))
        except (errors.UniqueViolation, errors.DuplicateSchema):
            if not _schema_exists(db, schema):
                raise


def table_columns(db: Warehouse, schema: str, name: str) -> list[str]:
    return [r[0] for r in db.conn.execute(db.q("table_columns"), (schema, name)).fetchall()]


def ensure_base_tables(db: Warehouse, schema: str) -> None:
    """The job-wide staging tables (rejected rows, unknown names, provider ids, lookup budget); cheap when present."""
    if table_columns(db, schema, LOOKUP_BUDGET):
        return
    ensure_schema(db, schema)
    with db.conn.transaction():
        lock(db, f"{schema}.*")
        for name, ddl in ((REJECTED, "create_rejected_rows"), (UNKNOWN_NAMES, "create_unknown_names")):
            db.conn.execute(db.q(ddl, table=table(schema, name)))
            db.conn.execute(_job_index(db, schema, name, ("job_id", "domain")))
        db.conn.execute(db.q("create_provider_ids", table=table(schema, PROVIDER_IDS)))
        db.conn.execute(db.q("create_lookup_budget", table=table(schema, LOOKUP_BUDGET)))


def ensure_staging_table(db: Warehouse, staging: StagingTable) -> None:
    if table_columns(db, staging.schema, staging.name):
        return
    ensure_schema(db, staging.schema)
    with db.conn.transaction():
        lock(db, staging.qualified)
        db.conn.execute(create_table(staging.schema, staging.name, lineage_columns() + staging.columns, unlogged=True))
        db.conn.execute(_job_index(db, staging.schema, staging.name, ("_job_id", "_source_file")))


def _job_index(db: Warehouse, schema: str, name: str, columns: tuple[str, ...]) -> sql.Composed:
    return db.q(
        "create_job_index", index=sql.Identifier(f"{name}_job_idx"), table=table(schema, name),
        columns=identifiers(list(columns)),
    )


def _row_getter(columns: list[str]) -> Callable[[BaseModel], tuple[Any, ...]]:
    getter = operator.attrgetter(*columns)
    if len(columns) == 1:
        return lambda record: (getter(record),)
    return getter


@dataclass(frozen=True, slots=True)
class FileWriter:
    """Writes one file's staged rows inside the transaction `stage_file` opened."""

    db: Warehouse
    schema: str
    staging: StagingTable
    job_id: str
    domain: str
    file: str

    def records(self, sheet: str, records: list[BaseModel], source_rows: list[int]) -> None:
        columns = self.staging.data_columns
        get = _row_getter(columns)
        statement = self.db.q("copy_in", table=self.staging.identifier, columns=identifiers([*LINEAGE, *columns]))
        prefix = (self.job_id, self.file, sheet)
        with self.db.conn.cursor() as cur, cur.copy(statement) as copy:
            for record, row in zip(records, source_rows, strict=True):
                copy.write_row((*prefix, row, *get(record)))

    def rejected(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """(sheet, row, reason, raw values) per rejected row."""
        _copy_rows(self.db, table(self.schema, REJECTED),
                   ["job_id", "domain", "source_file", "sheet", "source_row", "reason", "raw"],
                   ((self.job_id, self.domain, self.file, sheet, row, reason, Json(raw))
                    for sheet, row, reason, raw in rows))

    def unknown(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """(name, temporary id, occurrences, first row) per unknown name."""
        _copy_rows(self.db, table(self.schema, UNKNOWN_NAMES),
                   ["job_id", "domain", "source_file", "name", "temporary_id", "occurrences", "first_row"],
                   ((self.job_id, self.domain, self.file, *values) for values in rows))

    def reject_duplicates(self, key: list[str]) -> int:
        """Move staged rows repeating an earlier row's key (across chunks of this file) to the rejected rows."""
        reason = sql.SQL(" || ', ' || ").join(
            sql.SQL("{} || '=' || coalesce({}::text, '')").format(sql.Literal(k), sql.Identifier("d", k))
            for k in key
        )
        statement = self.db.q(
            "reject_duplicate_keys", staging=self.staging.identifier, key=identifiers(key),
            rejected=table(self.schema, REJECTED), reason=reason,
        )
        with self.db.conn.cursor() as cur:
            cur.execute(statement, {"job": self.job_id, "file": self.file, "domain": self.domain})
            return max(cur.rowcount, 0)


@contextmanager
def stage_file(
    db: Warehouse, schema: str, staging: StagingTable, job_id: str, domain: str, file: str
) -> Iterator[FileWriter]:
    """One transaction for one file: what an earlier attempt staged is deleted, then the writer adds rows."""
    with db.conn.transaction():
        db.conn.execute(_delete_file(db, staging.identifier, "_job_id", "_source_file"), (job_id, file))
        for name in (REJECTED, UNKNOWN_NAMES):
            db.conn.execute(_delete_file(db, table(schema, name), "job_id", "source_file"), (job_id, file))
        yield FileWriter(db, schema, staging, job_id, domain, file)


def replace_file(
    db: Warehouse, schema: str, staging: StagingTable, job_id: str, domain: str, file: str,
    sheet: str, records: list[BaseModel], source_rows: list[int], rejected: Iterable[tuple[Any, ...]],
    unknown: Iterable[tuple[Any, ...]],
) -> None:
    """Stage one file's records, rejected rows and unknown names in one transaction, replacing any earlier try."""
    with stage_file(db, schema, staging, job_id, domain, file) as writer:
        writer.records(sheet, records, source_rows)
        writer.rejected(rejected)
        writer.unknown(unknown)


def _delete_file(db: Warehouse, target: sql.Identifier, job: str, file: str) -> sql.Composed:
    return db.q("delete_job_file", table=target, job=sql.Identifier(job), file=sql.Identifier(file))


def _copy_rows(
    db: Warehouse, target: sql.Identifier, columns: list[str], rows: Iterable[tuple[Any, ...]]
) -> None:
    with db.conn.cursor() as cur, cur.copy(db.q("copy_in", table=target, columns=identifiers(columns))) as copy:
        for row in rows:
            copy.write_row(row)


def count_rows(db: Warehouse, staging: StagingTable, job_id: str) -> int:
    row = db.conn.execute(db.q("count_job_rows", table=staging.identifier), (job_id,)).fetchone()
    return int(row[0]) if row else 0


def purge_job(db: Warehouse, schema: str, job_id: str, staging_tables: list[StagingTable]) -> None:
    """Remove everything a job staged (after its report is written)."""
    with db.conn.transaction():
        for staging in staging_tables:
            if table_columns(db, staging.schema, staging.name):
                db.conn.execute(_delete_job(db, staging.identifier, "_job_id"), (job_id,))
        for name in (REJECTED, UNKNOWN_NAMES, PROVIDER_IDS, LOOKUP_BUDGET):
            if table_columns(db, schema, name):
                db.conn.execute(_delete_job(db, table(schema, name), "job_id"), (job_id,))


def _delete_job(db: Warehouse, target: sql.Identifier, job: str) -> sql.Composed:
    return db.q("delete_job", table=target, job=sql.Identifier(job))
