"""Azurite, the Azure Storage emulator (npm package `azurite`), started for the test session on a free port.

`make test` installs it into `.tools/` (`make tools`); `AZURITE_BLOB` may name another `azurite-blob`
executable. Data lives in memory and dies with the process; its working folder is a temporary directory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTALL_HINT = (
    "Azurite (the Azure Storage emulator) is not installed: run `make tools` "
    "(npm install --prefix .tools azurite), or set AZURITE_BLOB to an azurite-blob executable"
)
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
"""Azurite's fixed, publicly documented development account key (not a secret)."""
_LISTENING = re.compile(r"Blob service successfully listens on (http://\S+)")


def azurite_executable() -> str | None:
    explicit = os.environ.get("AZURITE_BLOB")
    if explicit:
        return explicit
    local = PROJECT_ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    return shutil.which("azurite-blob")


def connection_string(endpoint: str) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={endpoint}/{ACCOUNT};"
    )


@contextmanager
def running_azurite(workspace: Path, timeout: float = 60.0) -> Iterator[str]:
    """Start azurite-blob on 127.0.0.1 and a free port; yields its connection string; stops it after."""
    executable = azurite_executable()
    if executable is None or shutil.which(executable) is None:
        raise FileNotFoundError(f"{INSTALL_HINT} (looked for {executable or 'azurite-blob'})")
    command = [
        executable, "--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence",
        "--extentMemoryLimit", "256", "--skipApiVersionCheck", "--disableTelemetry", "--loose",
    ]
    process = subprocess.Popen(
        command, cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    assert process.stdout is not None
    found: list[str] = []
    seen: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if not found:
                seen.append(line)
                match = _LISTENING.search(line)
                if match:
                    found.append(match.group(1))
                    ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1) and time.monotonic() < deadline:
            pass
        if not found:
            raise RuntimeError(f"azurite did not start within {timeout:.0f} s: {''.join(seen)[-2000:]}")
        yield connection_string(found[0])
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(5)
