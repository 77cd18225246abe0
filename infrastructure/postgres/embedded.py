"""The embedded PostgreSQL server (pgserver) seen from outside: is it running, where, how big; stop it cleanly.

Reading the status never starts the server: it reads `pgdata/postmaster.pid` and checks the process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from core.errors import StoreUnavailable


@dataclass(frozen=True, slots=True)
class EmbeddedStatus:
    pgdata: Path
    initialised: bool
    running: bool
    pid: int | None
    url: str | None
    started_at: datetime | None
    size_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.pgdata), "initialised": self.initialised, "running": self.running, "pid": self.pid,
            "url": self.url, "started_at": self.started_at.isoformat() if self.started_at else None,
            "size_bytes": self.size_bytes,
        }


def pgdata_of(data_dir: Path) -> Path:
    """Where the cluster of the embedded server under `data_dir` lives."""
    return (data_dir / "pgdata").expanduser().resolve()


def _postmaster(pgdata: Path) -> Any:
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset; its fallback directory is fine.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from pgserver.utils import PostmasterInfo

    try:
        return PostmasterInfo.read_from_pgdata(pgdata)
    except (OSError, ValueError, AssertionError):  # a half-written or stale postmaster.pid
        return None


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:  # a file removed while we walk (WAL segments come and go)
                continue
    return total


def embedded_status(data_dir: Path) -> EmbeddedStatus:
    pgdata = pgdata_of(data_dir)
    info = _postmaster(pgdata)
    running = info is not None and info.is_running()
    return EmbeddedStatus(
        pgdata=pgdata,
        initialised=(pgdata / "PG_VERSION").exists(),
        running=running,
        pid=info.pid if running else None,
        url=info.get_uri() if running else None,
        started_at=info.start_time if running else None,
        size_bytes=_size(pgdata) if pgdata.is_dir() else 0,
    )


def stop_embedded_server(data_dir: Path, timeout_seconds: float = 60.0) -> bool:
    """Stop the server cleanly with PostgreSQL's "fast" shutdown (sessions closed, open transactions rolled back,
    data flushed by a checkpoint); returns False when it was not running.

    On POSIX this is SIGINT to the postmaster, which is what `pg_ctl stop -m fast` sends, and works whoever owns
    the process (pgserver runs the server as its own user when started by root); elsewhere `pg_ctl` itself.
    """
    status = embedded_status(data_dir)
    if not status.running or status.pid is None:
        return False
    if os.name == "posix":
        try:
            os.kill(status.pid, signal.SIGINT)
        except ProcessLookupError:
            return False
    else:
        from pgserver._commands import POSTGRES_BIN_PATH

        command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(status.pgdata), "-m", "fast", "stop"]
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                       timeout=timeout_seconds)
    deadline = time.monotonic() + timeout_seconds
    while embedded_status(data_dir).running:
        if time.monotonic() > deadline:
            raise StoreUnavailable(f"the embedded server in {status.pgdata} did not stop within {timeout_seconds:g}s")
        time.sleep(0.1)
    return True
