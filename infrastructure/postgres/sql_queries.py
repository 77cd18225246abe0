"""Named SQL blocks loaded once from a folder of `.sql` files; Python refers to queries by name only.

The one loader: the engine's queries (`sql/queries/*.sql`) and a service's own folder (ingestion's warehouse SQL,
handed to it by the composition root as a `SqlQueries`) are parsed and looked up the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from psycopg import sql

QUERIES_DIR = Path(__file__).parent / "sql" / "queries"
_NAME = re.compile(r"^--\s*name:\s*(?P<name>[a-z0-9_]+)\s*$", re.MULTILINE)


def parse_named_blocks(text: str, source: str = "<sql>") -> dict[str, str]:
    """Split `-- name: foo` blocks; each block runs to the next name line."""
    blocks: dict[str, str] = {}
    matches = list(_NAME.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        name = match.group("name")
        if name in blocks:
            raise ValueError(f"{source}: query {name!r} is defined twice")
        if not body:
            raise ValueError(f"{source}: query {name!r} is empty")
        blocks[name] = body
    return blocks


@cache
def load_queries(directory: Path = QUERIES_DIR) -> dict[str, sql.SQL]:
    queries: dict[str, sql.SQL] = {}
    for path in sorted(directory.glob("*.sql")):
        for name, body in parse_named_blocks(path.read_text(encoding="utf-8"), path.name).items():
            if name in queries:
                raise ValueError(f"{path.name}: query {name!r} is also defined in another file")
            queries[name] = sql.SQL(body)
    return queries


def query(name: str) -> sql.SQL:
    try:
        return load_queries()[name]
    except KeyError:
        raise KeyError(f"no SQL query named {name!r} under {QUERIES_DIR.name}/") from None


class SqlQueries:
    """The named blocks of one folder of `.sql` files: the engine's, or a service's own (ingestion's warehouse SQL).

    `get(name)` is the statement as written; `compose(name, **slots)` fills its `{slot}`s with identifiers or
    composed fragments (`psycopg.sql`), never with values, which stay `%s` parameters.
    """

    def __init__(self, blocks: Mapping[str, sql.SQL], source: str) -> None:
        self._blocks = dict(blocks)
        self.source = source

    @classmethod
    def load(cls, directory: Path) -> SqlQueries:
        return cls(load_queries(directory), directory.name)

    def get(self, name: str) -> sql.SQL:
        try:
            return self._blocks[name]
        except KeyError:
            raise KeyError(f"no SQL query named {name!r} under {self.source}/") from None

    def compose(self, name: str, /, **slots: sql.Composable) -> sql.Composed:
        return self.get(name).format(**slots)

    def names(self) -> list[str]:
        return sorted(self._blocks)
