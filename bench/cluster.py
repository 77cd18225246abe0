"""A fresh embedded PostgreSQL cluster for one benchmark run, with its default durability (fsync on).

The cluster lives in a new temporary directory on the default temp filesystem (a real disk, not tmpfs, unless
`TMPDIR` says otherwise) and is stopped and deleted by `close()`. Nothing here turns durability off.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from infrastructure.postgres.database import start_embedded_server
from infrastructure.postgres.migrations import migrate

DURABILITY_SETTINGS = ("fsync", "synchronous_commit", "full_page_writes", "wal_sync_method", "shared_buffers")


def with_dbname(url: str, dbname: str) -> str:
    """`url` pointing at database `dbname` instead (works for pgserver's Unix-socket URLs)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))


@dataclass
class BenchCluster:
    """One throwaway cluster: `url` is its migrated default database; `create_database` adds more."""

    root: Path
    server: Any
    url: str
    extra_databases: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, parent: Path | None = None) -> BenchCluster:
        root = Path(tempfile.mkdtemp(prefix="coremachine-bench-", dir=parent))
        server = start_embedded_server(root / "pgdata", cleanup_mode="delete")
        cluster = cls(root, server, str(server.get_uri()))
        with psycopg.connect(cluster.url) as conn:
            migrate(conn)
        return cluster

    @property
    def log_path(self) -> Path:
        """The server's log file (pgserver starts the postmaster with `pg_ctl -l pgdata/log`)."""
        return Path(self.server.pgdata) / "log"

    @property
    def postmaster_pid(self) -> int:
        return int(self.server.get_pid())

    def create_database(self, name: str) -> str:
        """A new migrated database on this cluster; returns its URL."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.extra_databases.append(name)
        url = with_dbname(self.url, name)
        with psycopg.connect(url) as conn:
            migrate(conn)
        return url

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if name in self.extra_databases:
            self.extra_databases.remove(name)

    def settings(self) -> dict[str, str]:
        """The durability-relevant server settings, as `SHOW` reports them."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            out = {name: str(conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0])  # type: ignore[index]
                   for name in DURABILITY_SETTINGS}
            out["server_version"] = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        return out

    def set_options(self, options: dict[str, str]) -> None:
        """ALTER SYSTEM + reload (only used by the profiling pass, e.g. statement logging)."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            for name, value in options.items():
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
            conn.execute("SELECT pg_reload_conf()")

    def close(self) -> None:
        """Stop the server, delete the cluster and its temporary directory."""
        try:
            self.server.cleanup()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> BenchCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def filesystem_of(path: Path) -> str:
    """The filesystem type holding `path` (from /proc/mounts; 'unknown' elsewhere)."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    target = os.path.realpath(path)
    best, kind = "", "unknown"
    for fields in mounts:
        if len(fields) >= 3 and (target == fields[1] or target.startswith(fields[1].rstrip("/") + "/")) \
                and len(fields[1]) >= len(best):
            best, kind = fields[1], fields[2]
    return kind
