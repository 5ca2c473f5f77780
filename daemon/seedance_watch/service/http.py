"""``/healthz``, ``/metrics`` and the webhook callbacks over HTTP (``health.listen``).

The server runs in its own thread (the standard library's threading HTTP server)
so that it can still answer when the event loop is stuck, and say so: the loop
proves it is alive through a :class:`Heartbeat` it beats itself, and a stale beat
turns ``/healthz`` into a 503.  ``/metrics`` is prometheus-client's text format.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST

__all__ = ["MAX_WEBHOOK_BYTES", "WEBHOOK_PATH", "HealthServer", "Heartbeat", "probe"]

#: Where the gateway's callbacks arrive (SPEC §2, ``gateway.webhook_url``).
WEBHOOK_PATH = "/webhooks/pixazo"
MAX_WEBHOOK_BYTES = 64 * 1024

log = structlog.get_logger(__name__)


class Heartbeat:
    """A time stamp the event loop refreshes; stale means the loop is stuck."""

    def __init__(self, period: float = 1.0, stale_after: float = 10.0) -> None:
        self.period = period
        self.stale_after = stale_after
        self.last = time.monotonic()

    async def run(self) -> None:
        """Beat every ``period`` seconds until cancelled (a task on the watched loop)."""
        while True:
            self.last = time.monotonic()
            await asyncio.sleep(self.period)

    def age(self) -> float:
        return time.monotonic() - self.last

    def alive(self) -> bool:
        return self.age() < self.stale_after


#: ``check()`` returns ``(healthy, body)``; the body is served as JSON.
Check = Callable[[], tuple[bool, Mapping[str, Any]]]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "seedance-watch"
    sys_version = ""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            with self.server.lock:  # one ledger probe at a time
                healthy, body = self.server.check()
            data = json.dumps({"status": "ok" if healthy else "unhealthy", **body}).encode()
            self._reply(200 if healthy else 503, "application/json", data)
        elif path == "/metrics":
            self._reply(200, CONTENT_TYPE_LATEST, self.server.render())
        else:
            self._reply(404, "application/json", b'{"error": "not found"}')

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        path, _, query = self.path.partition("?")
        if path != WEBHOOK_PATH:
            self._reply(404, "application/json", b'{"error": "not found"}')
            return
        # A callback is a hint: its body is never read beyond its size, never trusted.
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit() or int(length) > MAX_WEBHOOK_BYTES:
            self.close_connection = True
            self._reply(413, "application/json", b'{"error": "body too large"}')
            return
        self.rfile.read(int(length))
        token = urllib.parse.parse_qs(query).get("token", [""])[0]
        known = bool(token) and self.server.on_webhook is not None and self.server.on_webhook(token)
        if known:
            self._reply(204, "application/json", b"")
        else:
            self._reply(404, "application/json", b'{"error": "unknown token"}')

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Scrapes every few seconds are not events worth a log line.
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    lock: threading.Lock
    check: Check
    render: Callable[[], bytes]
    on_webhook: Callable[[str], bool] | None


class HealthServer:
    """Serves ``/healthz`` (``check``) and ``/metrics`` (``render``) on ``address``."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        check: Check,
        render: Callable[[], bytes],
        on_webhook: Callable[[str], bool] | None = None,
    ) -> None:
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("_BoundServer", (_Server,), {"address_family": family})
        self._server: _Server = server_class((host, port), _Handler)
        self._server.lock = threading.Lock()
        self._server.check = check
        self._server.render = render
        self._server.on_webhook = on_webhook
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="health",
            daemon=True,
        )
        self._thread.start()
        host, port = self.address
        log.info("health.listening", host=host, port=port, url=f"http://{_url_host(host)}:{port}")

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def probe(address: tuple[str, int], timeout: float = 5.0) -> tuple[int, str]:
    """GET ``/healthz`` at ``address`` (a wildcard host means loopback): status and body."""
    host, port = address
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()
