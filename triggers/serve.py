"""`coremachine serve`: the HTTP app on uvicorn (127.0.0.1 by default), the same app Azure Functions hosts."""

from __future__ import annotations

import argparse
import logging
import socket
import threading
from typing import Any

import uvicorn
from fastapi import FastAPI
from rich.console import Console

from triggers.cli_output import bounded_int
from triggers.http_app import DOCS_PATH, OPENAPI_PATH, create_app
from triggers.http_base import API_PREFIX, ApiContext

log = logging.getLogger("coremachine.http")


class ApiServer:
    """uvicorn on a socket bound up front, so the URL (and an ephemeral port) is known before it serves."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self.socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.host, self.port = self.socket.getsockname()[:2]
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def serve(self) -> None:
        """Serve in this thread until `stop` (or, in the main thread, SIGINT/SIGTERM)."""
        self.server.run(sockets=[self.socket])

    def start(self) -> ApiServer:
        """Serve in a background thread; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self.serve, name="coremachine-http", daemon=True)
        self._thread.start()
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the HTTP server stopped while starting; see the logs")
            self._thread.join(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.socket.close()


def make_server(context: ApiContext, host: str = "127.0.0.1", port: int = 0) -> ApiServer:
    """The app for this context's job types, on host:port (0 = an ephemeral port)."""
    app = create_app(context.jobs, lambda: context, max_body_bytes=context.settings.http_max_body_bytes)
    return ApiServer(app, host, port)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve the HTTP API and the dashboard locally (the same app as on Azure)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=bounded_int(0, 65535), default=7071, help="port to bind (default 7071; 0: any)")
    p.add_argument("--concurrency", type=bounded_int(0), default=0, help="also run an in-process worker with N threads")


def run(args: argparse.Namespace, runtime: Any, console: Console) -> int:
    """Serve until SIGTERM or Ctrl-C; `runtime` is a `triggers.runtime.Runtime`."""
    server = make_server(ApiContext.from_runtime(runtime), args.host, args.port)
    worker = runtime.worker(concurrency=args.concurrency) if args.concurrency > 0 else None
    if worker is not None:
        worker.start()
    keys = "keys required" if runtime.settings.api_key or runtime.settings.admin_key else "no keys set"
    console.print(f"serving {server.url}{API_PREFIX} (Swagger UI at {server.url}{DOCS_PATH}, OpenAPI at "
                  f"{server.url}{OPENAPI_PATH}; {keys}); Ctrl-C stops", style="dim", highlight=False)
    try:
        server.serve()
    finally:
        server.socket.close()
        if worker is not None:
            worker.stop()
    return 0
