"""A tiny HTTP/1.1 server on loopback (h11) that answers what a test tells it to:
for the gateway client's tests, which need exact control over every byte."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import h11

from seedance_watch.providers.pixazo import Gateway

KEY = "sk-test-0123456789abcdef"
MODEL = "seedance-1-0-pro-fast-251015"
TEXT = "Clouds drift --resolution 720p --duration 5 --camerafixed false"
IMAGE_URL = "https://bucket.example/seedance-watch/j1/sky.jpg?X-Amz-Signature=abc"


@dataclass(frozen=True)
class FakeKey:
    value: str = KEY

    def reveal(self) -> str:
        return self.value


Action = Literal["answer", "close", "hang", "truncate"]


@dataclass(frozen=True)
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    action: Action = "answer"
    chunk: int | None = None  # send the body chunked, in pieces of this size

    @classmethod
    def json(cls, status: int, payload: Any, **kwargs: Any) -> Reply:
        return cls(
            status, json.dumps(payload).encode(), [("Content-Type", "application/json")], **kwargs
        )


Handler = Callable[[Seen], Reply]


class LoopbackHTTP:
    """Serves ``handler``'s replies on 127.0.0.1 with keep-alive; counts connections."""

    def __init__(self, handler: Handler | Reply) -> None:
        self._handler: Handler = handler if callable(handler) else (lambda _seen: handler)
        self.requests: list[Seen] = []
        self.connections = 0
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> LoopbackHTTP:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while (seen := await _read_request(conn, reader)) is not None:
                self.requests.append(seen)
                reply = self._handler(seen)
                if reply.action == "close":
                    return
                if reply.action == "hang":
                    await self._stop.wait()
                    return
                await _send_reply(conn, writer, reply)
                if reply.action == "truncate" or conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> Seen | None:
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            headers = {k.decode().lower(): v.decode() for k, v in request.headers}
            return Seen(request.method.decode(), request.target.decode(), headers, bytes(body))
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _send_reply(conn: h11.Connection, writer: asyncio.StreamWriter, reply: Reply) -> None:
    headers = list(reply.headers)
    if reply.chunk is None:
        headers.append(("Content-Length", str(len(reply.body))))
    else:
        headers.append(("Transfer-Encoding", "chunked"))
    writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers)))
    if reply.action == "truncate":
        # Promise the whole body, deliver half of it, hang up.
        writer.write(conn.send(h11.Data(data=reply.body[: len(reply.body) // 2])))
        await writer.drain()
        return
    step = reply.chunk or max(len(reply.body), 1)
    for start in range(0, len(reply.body), step):
        writer.write(conn.send(h11.Data(data=reply.body[start : start + step])))
        await writer.drain()
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()


@contextlib.asynccontextmanager
async def serving(
    handler: Handler | Reply, **kwargs: Any
) -> AsyncIterator[tuple[LoopbackHTTP, Gateway]]:
    async with LoopbackHTTP(handler) as server, Gateway(server.url, FakeKey(), **kwargs) as gw:
        yield server, gw
