"""``health.listen``: ``/healthz``, ``/metrics``, the status page and the webhooks.

The routes are a Starlette application (:mod:`seedance_watch.service.web`) that
uvicorn serves from its **own thread with its own event loop**, so the server still
answers when the daemon's loop is stuck, and says so: the daemon's loop proves it
is alive through a :class:`Heartbeat` it beats itself, and a stale beat turns
``/healthz`` into a 503.

What the daemon wires: the config (``health.listen``, ``health.token``, paths), the
:class:`~seedance_watch.service.web.PageSources` (everything the routes read and do,
each callable safe to call from the server's thread), and the provider's webhook
path::

    server = HealthServer(config, sources, webhook_path=spec.webhook_path)
    server.start()                   # binds at construction; returns once it serves
    ...
    server.close()                   # stops serving and releases the port

``probe()`` is the client side of ``seedance-watch health`` (the container's
HEALTHCHECK).
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
from collections.abc import Callable

import structlog
import uvicorn

from seedance_watch.config import Config
from seedance_watch.service.web import MAX_WEBHOOK_BYTES, Check, PageSources, build_app

__all__ = ["MAX_WEBHOOK_BYTES", "Check", "HealthServer", "Heartbeat", "PageSources", "probe"]

log = structlog.get_logger(__name__)

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


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


def _bind(address: tuple[str, int]) -> socket.socket:
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


class HealthServer:
    """The ``health.listen`` server: bound at construction, serving after :meth:`start`."""

    def __init__(
        self,
        config: Config,
        sources: PageSources,
        *,
        webhook_path: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        address = config.health.address
        if address is None:
            raise ValueError("health.listen is not set")
        app = build_app(config, sources, webhook_path=webhook_path, clock=clock)
        self._socket = _bind(address)
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                loop="asyncio",
                http="h11",
                ws="none",
                lifespan="off",
                log_config=None,  # our logging stays ours; uvicorn says only what is wrong
                log_level="warning",
                access_log=False,
                server_header=False,
                proxy_headers=False,
                timeout_keep_alive=5,
                timeout_graceful_shutdown=2,
            )
        )
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Serve from a new thread; return once it serves (raise if it cannot)."""
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="health", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the health.listen server did not start")
            time.sleep(0.01)
        host, port = self.address
        log.info("health.listening", host=host, port=port, url=f"http://{_url_host(host)}:{port}")

    def close(self) -> None:
        """Stop serving (open connections get a short grace) and release the port."""
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=STOP_TIMEOUT)
            self._thread = None
        self._socket.close()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def probe(
    address: tuple[str, int], timeout: float = 5.0, *, token: str | None = None
) -> tuple[int, str]:
    """GET ``/healthz`` at ``address`` (a wildcard host means loopback): status and body.

    With ``token`` (``health.token``) the request carries it, so the body has the
    details (counts, pauses) that only an admitted caller gets.
    """
    host, port = address
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/healthz", headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()
