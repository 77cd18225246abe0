"""schemathesis, every check, against `coremachine serve` (uvicorn on a free loopback port, keys set): the API
keeps the contract its OpenAPI document states - status codes, bodies, headers, auth, 405s with Allow."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from triggers.http_base import ApiContext
from triggers.runtime import Runtime
from triggers.serve import make_server

CONFIG = Path(__file__).with_name("schemathesis.toml")
API_KEY, ADMIN_KEY = "schema-api-key", "schema-admin-key"
EXAMPLES = 8  # per operation and phase: under a minute on a quiet machine
# One worker: CPython 3.11's `ast` is not safe across threads, and Hypothesis parses source when it explains a
# failure ("AST constructor recursion depth mismatch" with two workers).


def test_schemathesis_finds_no_failure_with_every_check(http_runtime: Runtime, tmp_path: Path) -> None:
    settings = http_runtime.settings.model_copy(update={"api_key": API_KEY, "admin_key": ADMIN_KEY})
    context = ApiContext(**{**ApiContext.from_runtime(http_runtime).__dict__, "settings": settings})
    server = make_server(context).start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color",
             "run", f"{server.url}/api/openapi.json", "--checks", "all", "-H", f"x-functions-key: {ADMIN_KEY}",
             "--max-examples", str(EXAMPLES), "--workers", "1", "--generation-database", "none",
             "--request-timeout", "20"],
            cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
        )
    finally:
        server.stop()
    report = result.stdout
    assert result.returncode == 0, report[-12000:] + result.stderr[-2000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", report)
    assert selected and selected[1] == selected[2] and int(selected[1]) >= 15, report[-3000:]
    assert re.search(r"\d+ generated, \d+ passed", report), report[-3000:]
