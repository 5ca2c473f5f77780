"""The simulator's HTTP/1.1 server: asyncio streams + h11, no web framework.

Raw h11 gives the control a fault injector needs (drop a connection before
answering, send half a body under a full Content-Length, answer slowly) and
keeps thousands of keep-alive polls a second cheap.  ``serve`` runs in the
caller's loop (the CLI); ``Simulator`` runs its own loop in a daemon thread
(tests, benchmarks, the demo).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

import h11
import structlog

from seedance_watch.simulator.app import GatewayApp
from seedance_watch.simulator.config import (
    RequestRecord,
    SimulatorConfig,
    SubmitRecord,
    WebhookRecord,
)
from seedance_watch.simulator.protocol import HttpReply, HttpRequest, error_reply

__all__ = ["Simulator", "serve"]

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 1024 * 1024
#: A keep-alive connection idle this long is closed (like a real front end).
IDLE_TIMEOUT = 75.0
#: How often the single background ticker advances the task schedule.
TICK_SECONDS = 0.02
_SERVER_HEADER = ("Server", "seedance-watch-simulator")


class _Drop(Exception):
    """Close the connection without (further) answering."""


class _Http:
    """The listening socket and one h11 handler per connection."""

    def __init__(self, app: GatewayApp) -> None:
        self.app = app
        self._connections: set[asyncio.Task[None]] = set()

    async def run(self, host: str, port: int, on_ready: Callable[[str], None]) -> None:
        server = await asyncio.start_server(self._accept, host, port, backlog=1024)
        bound_host, bound_port = server.sockets[0].getsockname()[:2]
        self.app.base_url = f"http://{bound_host}:{bound_port}"
        log.info("simulator.listening", url=self.app.base_url)
        on_ready(self.app.base_url)
        try:
            async with server:
                while True:
                    await self.app.tick()
                    await asyncio.sleep(TICK_SECONDS)
        finally:
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self.app.aclose()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve_connection(reader, writer)
        except _Drop:
            writer.transport.abort()
        except (ConnectionError, TimeoutError, h11.ProtocolError):
            writer.transport.abort()
        except asyncio.CancelledError:
            # Shutting down.  Not re-raised: asyncio 3.11's stream callback calls
            # task.exception() on the handler task, which raises if it was cancelled.
            writer.transport.abort()
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            try:
                request = await _read_request(conn, reader)
            except h11.RemoteProtocolError:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await _send(
                        conn, writer, error_reply(400, "BadRequest", "malformed HTTP request")
                    )
                return
            if request is None:
                return
            if isinstance(request, HttpReply):  # body too large
                await _send(conn, writer, request)
                return
            reply = await self.app.handle(request)
            if reply is None:
                raise _Drop
            await _send(conn, writer, reply)
            if reply.truncate_at is not None or conn.our_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return


async def _read_request(
    conn: h11.Connection, reader: asyncio.StreamReader
) -> HttpRequest | HttpReply | None:
    """The next complete request, ``None`` at a clean end of the connection."""
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await asyncio.wait_for(reader.read(65536), IDLE_TIMEOUT)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY_BYTES:
                return error_reply(413, "PayloadTooLarge", "the request body is too large")
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
            return HttpRequest(
                head.method.decode("ascii"), head.target.decode("latin-1"), headers, bytes(body)
            )
        elif isinstance(event, h11.ConnectionClosed):
            return None
        else:  # PAUSED cannot happen: we answer each request before reading the next
            return None


async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, reply: HttpReply) -> None:
    headers = [
        _SERVER_HEADER,
        ("Content-Type", reply.content_type),
        ("Content-Length", str(len(reply.body))),
        *reply.headers,
    ]
    if reply.truncate_at is not None:
        headers.append(("Connection", "close"))
    data = conn.send(h11.Response(status_code=reply.status, headers=headers))
    if not reply.head_only:
        body = reply.body if reply.truncate_at is None else reply.body[: reply.truncate_at]
        data = (data or b"") + (conn.send(h11.Data(data=body)) or b"")
    if reply.truncate_at is None:
        data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
    writer.write(data or b"")
    await writer.drain()


async def serve(
    config: SimulatorConfig,
    host: str,
    port: int,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run a simulator in the current event loop until cancelled.

    ``on_ready(base_url)`` is called once the socket listens.
    """
    await _Http(GatewayApp(config)).run(host, port, on_ready or (lambda url: None))


class Simulator:
    """A simulated Pixazo gateway on its own event loop, in a daemon thread."""

    def __init__(
        self, config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.app = GatewayApp(config or SimulatorConfig())
        self._host = host
        self._port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> Simulator:
        """Start serving; returns once the socket listens (raises if it cannot)."""
        if self._thread is not None:
            raise RuntimeError("the simulator is already started")
        self._thread = threading.Thread(target=self._run, name="pixazo-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("the simulator did not start within 30 s")
        if self._error is not None:
            raise RuntimeError(f"the simulator could not start: {self._error}") from self._error
        return self

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._main = asyncio.current_task()
            await _Http(self.app).run(self._host, self._port, lambda url: self._ready.set())

        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        thread, loop, main = self._thread, self._loop, self._main
        if thread is None:
            return
        if loop is not None and main is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(main.cancel)
        thread.join(timeout=30)
        self._thread = None

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` of the running simulator."""
        if not self.app.base_url:
            raise RuntimeError("the simulator is not started")
        return self.app.base_url

    @property
    def config(self) -> SimulatorConfig:
        return self.app.config

    def configure(self, **changes: Any) -> None:
        """Change knobs while running, e.g. ``configure(api_key="new", error_5xx_rate=0.0)``."""
        self.app.configure(**changes)

    @property
    def submits(self) -> list[SubmitRecord]:
        """Every submit that created a task, in order (a snapshot)."""
        return self.app.submits

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request, in order (a snapshot)."""
        return self.app.requests

    @property
    def webhooks(self) -> list[WebhookRecord]:
        """Every webhook sent (or attempted), in order of completion (a snapshot)."""
        return self.app.webhooks

    @property
    def polls(self) -> int:
        """Polls of either kind (``getVideoResult`` and ``/v2/requests/status``)."""
        return self.app.polls

    @property
    def submit_attempts(self) -> int:
        return self.app.submit_attempts

    @property
    def peak_unfinished(self) -> int:
        """The most tasks ever unfinished (accepted and not yet finished) at once."""
        return self.app.peak_unfinished

    def task_spans(self) -> list[tuple[float, float | None]]:
        """Each task's ``(accepted, finished)``, monotonic seconds (None: not yet)."""
        return self.app.task_spans()

    def video_bytes(self, task_id: str) -> bytes:
        """The complete mp4 served for ``task_id`` (a ``cgt-`` id or an envelope's
        ``request_id``; ``KeyError`` if none yet)."""
        return self.app.video_bytes(task_id)

    def tasks_by_status(self) -> dict[str, int]:
        return self.app.tasks_by_status()

    def task_params(self, task_id: str) -> dict[str, str | int | bool]:
        return self.app.task_params(task_id)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
