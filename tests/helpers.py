"""The tests' helpers, one of each kind.

Waiting for a condition (:func:`wait_for`, and :func:`until` in a coroutine), a hash
(:func:`sha256`), images and drops (:func:`make_image_bytes`, :func:`write_pair`), a
free loopback port, a webhook receiver (:class:`Receiver`), and the daemon harness:
a config pointing at the emulators (:func:`write_config`), ``run --once`` in-process
(:func:`run_once`), the daemon as a subprocess (:class:`DaemonProcess`).

Fixtures built on them live in ``conftest.py`` (``write_pair``, ``sim``,
``sim_factory``); talking to the simulator is ``simhelpers.py``'s.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from seedance_watch.config import Config, load_config
from seedance_watch.daemon import RunResult, run_service
from seedance_watch.providers.keys import load_api_key
from seedance_watch.providers.registry import provider_spec
from seedance_watch.testing.s3emulator import EMULATOR_CREDENTIALS, S3Emulator

#: The S3 emulator's bucket (created by the ``s3_server`` fixture).
BUCKET = "test-bucket"


# --- waiting --------------------------------------------------------------------------------


def wait_for(condition: Callable[[], Any], timeout: float = 30, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it is truthy and return its value; fail with the last
    value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
        time.sleep(interval)


async def until(
    condition: Callable[[], Any],
    within: float = 10.0,
    *,
    watching: Awaitable[Any] | None = None,
    interval: float = 0.01,
) -> Any:
    """:func:`wait_for` in a coroutine (the loop runs meanwhile), for ``within`` seconds.
    ``watching``: a task that must keep running; if it ends first, its error (or its
    end) fails the wait."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        if isinstance(watching, asyncio.Future) and watching.done():
            watching.result()
            raise AssertionError(f"{watching!r} ended while waiting")
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s (last value {value!r})")
        await asyncio.sleep(interval)


# --- bytes, images, drops -------------------------------------------------------------------


def sha256(data: bytes | Path) -> str:
    """The hex SHA-256 of ``data``, or of the file at ``data``."""
    return hashlib.sha256(data.read_bytes() if isinstance(data, Path) else data).hexdigest()


def make_image_bytes(
    width: int = 640,
    height: int = 480,
    fmt: str = "JPEG",
    color: tuple[int, int, int] = (40, 120, 200),
) -> bytes:
    """A decodable image with a gradient (so encoders have something to chew on)."""
    img = Image.new("RGB", (width, height), color)
    for x in range(0, width, 8):
        for y in range(0, height, 8):
            img.putpixel((x, y), ((x * 255) // width, (y * 255) // height, 128))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


class WritePair(Protocol):
    """:func:`write_pair`'s signature (the ``write_pair`` fixture)."""

    def __call__(
        self,
        folder: Path,
        stem: str,
        *,
        ext: str = ".jpg",
        fmt: str = "JPEG",
        sidecar: str | None = None,
        size: tuple[int, int] = (640, 480),
        color: tuple[int, int, int] = (40, 120, 200),
    ) -> tuple[Path, Path]: ...


def write_pair(
    folder: Path,
    stem: str,
    *,
    ext: str = ".jpg",
    fmt: str = "JPEG",
    sidecar: str | None = None,
    size: tuple[int, int] = (640, 480),
    color: tuple[int, int, int] = (40, 120, 200),
) -> tuple[Path, Path]:
    """Write ``stem{ext}`` (an image) and ``stem.yaml`` (``sidecar``, or a prompt naming
    the stem) in ``folder``; return both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / f"{stem}{ext}"
    image.write_bytes(make_image_bytes(*size, fmt=fmt, color=color))
    side = folder / f"{stem}.yaml"
    side.write_text(sidecar if sidecar is not None else f'prompt: "A calm scene: {stem}"\n')
    return image, side


def files_under(root: Path) -> list[str]:
    """Every file below ``root``, relative and sorted (hidden files included)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --- loopback -------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Receiver:
    """A webhook receiver on loopback: records every POST (and GET) and answers it.

    ``calls``: ``(path, headers, JSON body)`` of each request, in order (a GET's body:
    None); the answer is the next status of ``plan``, then ``status``.  While ``gate``
    is cleared, answers wait.  ``url`` is its ``http://`` address, ``json_url`` the
    same for Apprise (``json://``).
    """

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.calls: list[tuple[str, dict[str, str], Any]] = []
        self.plan: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                data = json.loads(self.rfile.read(length)) if length else None
                receiver.gate.wait(30)
                heads = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.calls.append((self.path, heads, data))
                    status = receiver.plan.pop(0) if receiver.plan else receiver.status
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    @property
    def posts(self) -> list[Any]:
        """The JSON body of every request, in order."""
        with self._lock:
            return [data for _, _, data in self.calls]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def json_url(self) -> str:
        return f"json://127.0.0.1:{self._server.server_address[1]}/"

    def close(self) -> None:
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the daemon -----------------------------------------------------------------------------


class Gateway(Protocol):
    """Whatever serves a gateway on loopback: the simulator, a test's fake server."""

    @property
    def base_url(self) -> str: ...


def write_config(
    folder: Path,
    s3: S3Emulator,
    gateway: Gateway,
    *,
    extra: str = "",
    settle: float = 0.2,
    poll_interval: float = 0.1,
    pair_timeout: float = 300,
    mode: str = "auto",
    bucket: str = BUCKET,
    provider: str | None = None,
) -> Path:
    """A config file in ``folder`` pointing at the emulators, with fast timings
    (``provider``: ``gateway.provider``, when not the default)."""
    path = folder / "seedance-watch.yaml"
    named = f"provider: '{provider}', " if provider is not None else ""
    path.write_text(
        "paths: {inbox: ./inbox, outbox: ./outbox, done: ./done, failed: ./failed, "
        "state: ./state}\n"
        f"gateway: {{{named}base_url: '{gateway.base_url}', poll_interval: {poll_interval}, "
        "task_timeout: 60, request_timeout: 5}\n"
        f"storage: {{bucket: {bucket}, endpoint_url: '{s3.endpoint_url}', region: us-east-1}}\n"
        f"watch: {{mode: {mode}, settle_seconds: {settle}, rescan_seconds: 2, "
        f"pair_timeout: {pair_timeout}}}\n"
        "log: {format: json, level: debug}\n" + extra,
        encoding="utf-8",
    )
    for name in ("inbox", "outbox", "done", "failed"):
        (folder / name).mkdir(exist_ok=True)
    return path


def fresh_bucket(s3: S3Emulator) -> str:
    """A new empty bucket, for tests that SIGKILL daemons (they may leave objects behind)."""
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3.client().create_bucket(Bucket=name)
    return name


def run_once(config_path: Path, key: str = "sim-key") -> tuple[RunResult, Config]:
    """``run --once`` in-process (the same code path as the CLI), with ``key`` as the
    configured provider's API key (from its variable)."""
    config = load_config(config_path, {})
    keys = provider_spec(config.gateway.provider).keys
    api_key = load_api_key({keys.env: key}, keys)
    return asyncio.run(run_service(config, api_key, once=True)), config


def daemon_env(key: str = "sim-key", aws: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a daemon subprocess: the emulator's credentials (or ``aws``,
    another S3 server's) in boto3's standard chain, ``key`` as the Pixazo key and no
    other way to one."""
    env = dict(os.environ)
    env.update(EMULATOR_CREDENTIALS if aws is None else aws)
    env["PIXAZO_API_KEY"] = key
    env.pop("PIXAZO_API_KEY_FILE", None)
    env.pop("CREDENTIALS_DIRECTORY", None)
    return env


class DaemonProcess:
    """``seedance-watch run`` as a real subprocess, its log captured to a file."""

    def __init__(
        self,
        config_path: Path,
        *,
        key: str = "sim-key",
        once: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = config_path.parent / f"daemon-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in wait()
        args = [sys.executable, "-m", "seedance_watch", "run", "--config", str(config_path)]
        if once:
            args.append("--once")
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env=daemon_env(key, env)
        )

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def has_event(self, name: str) -> bool:
        return any(e.get("event") == name for e in self.events())

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
