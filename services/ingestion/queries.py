"""Named SQL blocks of the ingestion pipeline, loaded once from `sql/ingest.sql`; Python refers to them by name."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

from psycopg import sql

SQL_FILE = Path(__file__).parent / "sql" / "ingest.sql"
_NAME = re.compile(r"^--\s*name:\s*(?P<name>[a-z0-9_]+)\s*$", re.MULTILINE)


@cache
def _blocks() -> dict[str, str]:
    text = SQL_FILE.read_text(encoding="utf-8")
    matches = list(_NAME.finditer(text))
    blocks: dict[str, str] = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        name = match.group("name")
        if name in blocks:
            raise ValueError(f"{SQL_FILE.name}: query {name!r} is defined twice")
        blocks[name] = text[match.end() : end].strip().rstrip(";")
    return blocks


def query(name: str, **slots: sql.Composable) -> sql.Composed:
    """The named query with its `{slot}`s filled by identifiers or composed fragments."""
    try:
        body = _blocks()[name]
    except KeyError:
        raise KeyError(f"no SQL query named {name!r} in {SQL_FILE.name}") from None
    return sql.SQL(body).format(**slots)


def table(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def names() -> list[str]:
    return sorted(_blocks())


def render(conn: Any, statement: sql.Composable) -> str:
    """Readable text of a statement, for plans and logs."""
    return " ".join(statement.as_string(conn).split())
