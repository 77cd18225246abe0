"""`coremachine serve`: the HTTP API on a local stdlib server (127.0.0.1 by default), same handlers as Azure."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from rich.console import Console

from triggers.http_api import handle
from triggers.http_base import JSON_TYPE, ApiContext, ApiError, Response

log = logging.getLogger("coremachine.http")


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], context: ApiContext) -> None:
        super().__init__(address, _Handler)
        self.context = context

    @property
    def url(self) -> str:
        host, port = self.server_address[0], self.server_address[1]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        limit = self.server.context.settings.http_max_body_bytes
        length_header = self.headers.get("Content-Length") or "0"
        if not length_header.isdecimal():
            self._send(ApiError(400, "invalid_request", "Content-Length is not a number").response(), close=True)
            return
        length = int(length_header)
        if length > limit:
            # Do not read a body we will refuse; close the connection so its bytes are never parsed as a request.
            error = ApiError(413, "payload_too_large", f"the body is {length} bytes; the limit is {limit}")
            self._send(error.response(), close=True)
            return
        body = self.rfile.read(length) if length else b""
        response = handle(self.server.context, self.command, parts.path, query, dict(self.headers.items()), body)
        self._send(response)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _dispatch  # noqa: N815

    def _send(self, response: Response, close: bool = False) -> None:
        payload = response.encoded()
        self.send_response(response.status)
        self.send_header("Content-Type", JSON_TYPE)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("http %s", format % args, extra={"client": self.client_address[0]})


def make_server(context: ApiContext, host: str = "127.0.0.1", port: int = 0) -> ApiServer:
    """A server bound to host:port (0 = an ephemeral port); call `serve_forever` or run it in a thread."""
    return ApiServer((host, port), context)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve the HTTP API locally (same handlers as on Azure)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7071)
    p.add_argument("--concurrency", type=int, default=0, help="also run an in-process worker with N threads")


def run(args: argparse.Namespace, runtime: Any, console: Console) -> int:
    """Serve until SIGTERM or Ctrl-C; `runtime` is a `triggers.runtime.Runtime`."""
    server = make_server(ApiContext.from_runtime(runtime), args.host, args.port)
    worker = runtime.worker(concurrency=args.concurrency) if args.concurrency > 0 else None
    if worker is not None:
        worker.start()
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=server.serve_forever, name="coremachine-http", daemon=True)
    thread.start()
    keys = "admin routes need x-functions-key" if runtime.settings.admin_key else "no admin key set"
    console.print(f"serving {server.url}/api (OpenAPI at {server.url}/api/openapi.json; {keys}); Ctrl-C stops",
                  style="dim", highlight=False)
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        if worker is not None:
            worker.stop()
    return 0
