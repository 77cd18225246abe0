"""Table shapes derived from output models: columns, SQL types, and the DDL of target and staging tables.

Identifiers are always `psycopg.sql.Identifier`; SQL types come from a fixed map or a validated
`json_schema_extra={"sql_type": ...}` override on the field.
"""

from __future__ import annotations

import hashlib
import re
import types
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Union, get_args, get_origin

from psycopg import sql
from pydantic import BaseModel
from pydantic.fields import FieldInfo

LINEAGE = ("_job_id", "_source_file", "_source_sheet", "_source_row")
LOADED_AT = "_loaded_at"
_LINEAGE_TYPES = {"_job_id": "text", "_source_file": "text", "_source_sheet": "text", "_source_row": "integer"}
_SQL_TYPES: dict[type, str] = {
    str: "text",
    bool: "boolean",
    int: "bigint",
    float: "double precision",
    Decimal: "numeric",
    datetime: "timestamp",
    date: "date",
}
_SQL_TYPE_OVERRIDE = re.compile(r"^[a-z][a-z ]*(\(\d+(,\s*\d+)?\))?$")


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    sql_type: str
    nullable: bool
    default: str | None = None  # a fixed SQL expression from this module, never user input

    def definition(self) -> sql.Composable:
        null = sql.SQL("") if self.nullable else sql.SQL(" NOT NULL")
        default = sql.SQL(" DEFAULT {}").format(sql.SQL(self.default)) if self.default else sql.SQL("")
        return sql.SQL("{} {}{}{}").format(sql.Identifier(self.name), sql.SQL(self.sql_type), default, null)


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        args = [a for a in get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(get_args(annotation))
        if len(args) == 1:
            inner, _ = _unwrap(args[0])
            return inner, nullable
        return annotation, nullable
    return annotation, False


def _sql_type(name: str, info: FieldInfo, base: Any) -> str:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    override = extra.get("sql_type")
    if isinstance(override, str):
        if not _SQL_TYPE_OVERRIDE.match(override):
            raise TypeError(f"field {name!r}: sql_type {override!r} is not a plain SQL type")
        return override
    for python_type, sql_type in _SQL_TYPES.items():
        if base is python_type:
            return sql_type
    raise TypeError(f"field {name!r}: no SQL type for {base!r}; set json_schema_extra={{'sql_type': ...}}")


def model_columns(model: type[BaseModel]) -> list[Column]:
    """One column per model field, in declaration order."""
    columns = []
    for name, info in model.model_fields.items():
        base, nullable = _unwrap(info.annotation)
        columns.append(Column(name, _sql_type(name, info, base), nullable or not info.is_required()))
    return columns


def optional_fields(model: type[BaseModel]) -> set[str]:
    return {c.name for c in model_columns(model) if c.nullable}


def lineage_columns() -> list[Column]:
    """Where a staged or loaded row came from: job, file, sheet and sheet row."""
    return [Column(name, _LINEAGE_TYPES[name], nullable=False) for name in LINEAGE]


def loaded_at_column() -> Column:
    """When a warehouse row was loaded (the load transaction's time)."""
    return Column(LOADED_AT, "timestamptz", nullable=False, default="now()")


def fingerprint(columns: list[Column]) -> str:
    text = ";".join(f"{c.name}:{c.sql_type}:{c.nullable}" for c in columns)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def identifiers(names: list[str] | tuple[str, ...], qualifier: str | None = None) -> sql.Composed:
    """`a, b, c` (or `q.a, q.b, q.c`) as identifiers."""
    return sql.SQL(", ").join(sql.Identifier(qualifier, n) if qualifier else sql.Identifier(n) for n in names)


def key_join(key: list[str], left: str, right: str, *, right_names: list[str] | None = None) -> sql.Composed:
    """`left.k1 = right.k1 AND ...` (right side optionally under other names)."""
    pairs = zip(key, right_names or key, strict=True)
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, a), sql.Identifier(right, b)) for a, b in pairs
    )


def not_null(names: list[str]) -> sql.Composed:
    return sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(n)) for n in names)


def create_table(
    schema: str, table: str, columns: list[Column], primary_key: list[str] | None = None, *, unlogged: bool = False
) -> sql.Composed:
    parts: list[sql.Composable] = [c.definition() for c in columns]
    if primary_key:
        parts.append(sql.SQL("PRIMARY KEY ({})").format(identifiers(primary_key)))
    return sql.SQL("CREATE {}TABLE IF NOT EXISTS {} ({})").format(
        sql.SQL("UNLOGGED ") if unlogged else sql.SQL(""),
        sql.Identifier(schema, table),
        sql.SQL(", ").join(parts),
    )
