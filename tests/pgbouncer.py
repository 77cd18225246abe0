"""A real PgBouncer in transaction pooling mode in front of the test PostgreSQL, as on Azure (port 6432 there).

Started by the test fixture on a free loopback port, with a configuration of its own in a temporary directory.
Clients authenticate to PgBouncer with SCRAM against a password of the fixture's choosing (standing in for an
Entra ID token); PgBouncer reaches the server as the same user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict

INSTALL_HINT = (
    "PgBouncer is needed by the tests that run the engine through it (as Azure's PostgreSQL does on port 6432); "
    "install it with: sudo apt-get install -y pgbouncer   (Debian/Ubuntu; macOS: brew install pgbouncer)"
)
_CANDIDATES = ("pgbouncer", "/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer", "/opt/homebrew/bin/pgbouncer")


class PgBouncerMissing(RuntimeError):
    """The pgbouncer program is not installed: the message says how to install it."""


def pgbouncer_binary() -> str:
    for candidate in _CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise PgBouncerMissing(INSTALL_HINT)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class PgBouncer:
    port: int
    user: str
    password: str

    def url(self, dbname: str) -> str:
        """A client URL for `dbname` through PgBouncer, without the password (the pool supplies it)."""
        return f"postgresql://{quote(self.user)}@127.0.0.1:{self.port}/{quote(dbname)}"


def _backend(server_url: str) -> tuple[dict[str, str], str]:
    """PgBouncer's `[databases]` connection options for the server, and the user to connect as."""
    params = conninfo_to_dict(server_url)
    user = str(params.get("user") or "postgres")
    options = {"host": str(params.get("host") or "127.0.0.1"), "port": str(params.get("port") or "5432"),
               "user": user}
    if params.get("password"):
        options["password"] = str(params["password"])
    return options, user


def _run_as(host: str) -> list[str]:
    """PgBouncer refuses to run as root: then run it as the owner of the server's socket directory."""
    if os.geteuid() != 0:
        return []
    owner = Path(host).owner() if host.startswith("/") else "nobody"
    return ["-u", owner]


@contextmanager
def running_pgbouncer(server_url: str, *, password: str = "pgbouncer-test-token") -> Iterator[PgBouncer]:
    """Start PgBouncer (transaction mode, SCRAM for clients) in front of `server_url`'s server; stop it after."""
    binary = pgbouncer_binary()
    backend, user = _backend(server_url)
    port = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="coremachine-pgbouncer-"))
    workdir.chmod(0o755)  # readable by the user PgBouncer switches to when started as root
    (workdir / "userlist.txt").write_text(f'"{user}" "{password}"\n')
    database_options = " ".join(f"{key}={value}" for key, value in backend.items())
    (workdir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = {database_options}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = scram-sha-256\n"
        f"auth_file = {workdir / 'userlist.txt'}\n"
        "pool_mode = transaction\n"
        "max_client_conn = 500\n"
        "default_pool_size = 20\n"
        "server_reset_query =\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
        "admin_users =\n"
    )
    for name in ("userlist.txt", "pgbouncer.ini"):
        (workdir / name).chmod(0o644)
    log = (workdir / "pgbouncer.log").open("wb")
    process = subprocess.Popen(
        [binary, *_run_as(backend["host"]), str(workdir / "pgbouncer.ini")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        _wait_listening(port, process, workdir / "pgbouncer.log")
        yield PgBouncer(port=port, user=user, password=password)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)  # PgBouncer's immediate shutdown
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {process.returncode}: {log.read_text(errors='replace')}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"pgbouncer did not listen on {port} within {timeout}s: {log.read_text(errors='replace')}")
