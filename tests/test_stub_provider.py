"""A second provider end to end: the ModelArk stub (``tests/stub_provider.py``) as a
plug-in, against a fake ModelArk on loopback, with the real daemon.

Adding a provider is one module plus its tests: the stub touches no file of the
daemon.  :class:`FakeModelArk` speaks the stub's protocol (``Authorization: Bearer``,
``POST``/``GET /api/v3/contents/generations/tasks``), fetches the images it is given
as the real gateway does, walks each task ``queued`` -> ``running`` -> its end, and
serves the videos from a second origin (a file host, as a CDN would); it records
every request either origin receives.  The provider contract suite
(``tests/test_provider_contract.py``) drives it too.
"""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from structlog.testing import capture_logs

from seedance_watch.config import load_config
from seedance_watch.ledger import open_reader
from seedance_watch.providers.registry import provider_spec
from seedance_watch.simulator.video import make_video
from seedance_watch.testing.s3emulator import S3Emulator

from . import stub_provider
from .helpers import WritePair, files_under, run_once, sha256, write_config

pytestmark = pytest.mark.timeout(60)

#: The stub's key in these tests (a canary: it must appear nowhere but in its header).
KEY = "ark-canary-key-0123456789abcdef"
#: The plug-in's name in a config.
PLUGIN = "tests.stub_provider:PROVIDER"


# --- the fake gateway -----------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request one of the fake's origins received."""

    origin: str  # "api" or "files"
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Task:
    task_id: str
    ending: str
    polls: int = 0
    video: bytes = b""


@dataclass
class FakeModelArk:
    """ModelArk's task API on one loopback port, its file host on another.

    ``key``: the key it accepts.  ``submit_answers``: statuses the next submits get
    instead of a task (401, 402, 429, 400 and 503 before anything is created; 502
    after the task was created, as a proxy that lost the answer).  ``ending``: how
    tasks created from now on end (``succeeded``, ``failed``, ``expired`` or
    ``cancelled``), on their third poll.
    """

    key: str
    submit_answers: list[int] = field(default_factory=list)
    ending: str = "succeeded"
    requests: list[Request] = field(default_factory=list)
    tasks: dict[str, Task] = field(default_factory=dict)
    #: Every image it fetched: ``(url, sha256)``.
    fetched: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._api = _serve("api", self._answer_api)
        self._files = _serve("files", self._answer_files)

    @property
    def base_url(self) -> str:
        return _url(self._api)

    @property
    def files_url(self) -> str:
        return _url(self._files)

    @property
    def submits(self) -> list[Request]:
        """The submits that reached the API, whatever they were answered."""
        return [r for r in self.seen("api") if r.method == "POST"]

    def seen(self, origin: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.origin == origin]

    def video_bytes(self, task_id: str) -> bytes:
        return self.tasks[task_id].video

    def close(self) -> None:
        for server in (self._api, self._files):
            server.shutdown()
            server.server_close()

    def __enter__(self) -> FakeModelArk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the API ---

    def _answer_api(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        self._record(request)
        presented = request.headers.get("authorization", "")
        if presented != f"Bearer {self.key}":
            # As some gateways do, it quotes what it was given: a provider must not.
            given = presented.removeprefix("Bearer ")
            return _error(401, "AuthenticationError", f"The API key {given} is invalid.")
        tasks = stub_provider.TASKS_PATH
        if request.method == "POST" and request.path == tasks:
            return self._submit(request)
        if request.method == "GET" and request.path.startswith(tasks + "/"):
            return self._status(request.path.removeprefix(tasks + "/"))
        return _error(404, "NotFound", f"no route for {request.method} {request.path}")

    def _submit(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            answer = self.submit_answers.pop(0) if self.submit_answers else 200
        if answer == 402:
            return _error(402, "AccountOverdueError", "The account has no balance left.")
        if answer == 429:
            return _error(429, "RateLimitExceeded", "Too many requests.", retry_after="2")
        if answer not in (200, 502):
            return _error(answer, "InvalidParameter", f"refused with HTTP {answer}")
        body = request.json()
        if not isinstance(body.get("model"), str) or not isinstance(body.get("content"), list):
            return _error(400, "InvalidParameter", "model and content are required")
        images = [item["image_url"]["url"] for item in body["content"] if item["type"] != "text"]
        fetched = []
        for url in images:  # as the real gateway does, before it takes the task
            got = httpx.get(url, timeout=10)
            try:
                Image.open(io.BytesIO(got.content)).verify()
            except Exception:
                return _error(400, "InvalidParameter", f"image_url could not be fetched ({url})")
            fetched.append((url, got.content))
        task = Task(f"cgt-{uuid.uuid4().hex[:20]}", self.ending)
        if task.ending == "succeeded":
            picture = fetched[0][1] if fetched else _BLANK_PNG
            task.video = make_video(picture, max_side=64, fps=4, seconds=0.25)
        with self._lock:
            self.fetched.extend((url, sha256(data)) for url, data in fetched)
            self.tasks[task.task_id] = task
        if answer == 502:  # created, and the answer lost on its way back
            return 502, {"Content-Type": "text/html"}, b"<html>502 Bad Gateway</html>"
        return _json(200, {"id": task.task_id})

    def _status(self, task_id: str) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            task = self.tasks.get(task_id)
            if task is not None:
                task.polls += 1
        if task is None:
            return _error(404, "ResourceNotFound", f"task {task_id} was not found")
        answer: dict[str, Any] = {"id": task.task_id, "model": "seedance"}
        if task.polls < 3:
            return _json(200, {**answer, "status": ("queued", "running")[task.polls - 1]})
        answer["status"] = task.ending
        if task.ending == "succeeded":
            answer["content"] = {"video_url": f"{self.files_url}/videos/{task.task_id}.mp4"}
            answer["usage"] = {"completion_tokens": 1000, "total_tokens": 1000}
        else:
            answer["error"] = {"code": f"Task{task.ending.title()}", "message": "as scripted"}
        return _json(200, answer)

    # --- the file host ---

    def _answer_files(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        self._record(request)
        task_id = request.path.removeprefix("/videos/").removesuffix(".mp4")
        task = self.tasks.get(task_id)
        if request.method != "GET" or task is None or not task.video:
            return 404, {}, b""
        return 200, {"Content-Type": "video/mp4"}, task.video

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)


def _blank_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), "teal").save(buf, "PNG")
    return buf.getvalue()


_BLANK_PNG = _blank_png()

Answer = Callable[[Request], tuple[int, dict[str, str], bytes]]


def _serve(origin: str, answer: Answer) -> ThreadingHTTPServer:
    """A threaded HTTP/1.1 server on a free loopback port, answering with ``answer``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            heads = {k.lower(): v for k, v in self.headers.items()}
            status, headers, payload = answer(Request(origin, self.command, self.path, heads, body))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def _json(status: int, payload: Any, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json", **headers}, json.dumps(payload).encode()


def _error(
    status: int, code: str, message: str, *, retry_after: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    extra = {"Retry-After": retry_after} if retry_after is not None else {}
    return _json(status, {"error": {"code": code, "message": message}}, **extra)


# --- the tests ------------------------------------------------------------------------------


def test_the_plugin_is_found_by_its_import_path_and_brings_its_own_defaults(
    tmp_path: Path,
) -> None:
    """``gateway.provider: tests.stub_provider:PROVIDER`` is the stub's spec; a config
    that names no base URL gets the stub's own, not Pixazo's."""
    assert provider_spec(PLUGIN) is stub_provider.PROVIDER
    path = tmp_path / "sw.yaml"
    path.write_text(
        f"paths: {{inbox: {tmp_path}/i, outbox: {tmp_path}/o, done: {tmp_path}/d, "
        f"failed: {tmp_path}/f, state: {tmp_path}/s}}\n"
        f"gateway: {{provider: '{PLUGIN}'}}\nstorage: {{bucket: b}}\n"
    )
    config = load_config(path, {})
    assert config.gateway.provider == PLUGIN
    assert config.gateway.base_url == stub_provider.PROVIDER.base_url


def test_a_job_runs_end_to_end_through_the_stub_provider(
    tmp_path: Path, s3_server: S3Emulator, write_pair: WritePair
) -> None:
    """A drop goes to ModelArk's endpoint with ModelArk's body and Bearer header, is
    polled there, and its video comes from the file host into the outbox; the job's
    record names the stub; the key went to the API's origin only, in its header only
    (not to the file host, not into a log line, the ledger or an output)."""
    with FakeModelArk(KEY) as ark, capture_logs() as logs:
        config_path = write_config(tmp_path, s3_server, ark, provider=PLUGIN)
        _, sidecar = write_pair(tmp_path / "inbox", "beach")
        result, config = run_once(config_path, key=KEY)

        assert result.exit_code == 0, result.summary
        assert files_under(tmp_path / "inbox") == []
        # The submit: one, at ModelArk's endpoint, in ModelArk's words.
        (submit,) = ark.submits
        assert submit.path == stub_provider.TASKS_PATH
        (task_id,) = ark.tasks
        body = submit.json()
        image_url = body["content"][1]["image_url"]["url"]
        assert body == {
            "model": config.gateway.model,
            "content": [
                {
                    "type": "text",
                    "text": "A calm scene: beach --resolution 720p --duration 5 "
                    "--camerafixed false",
                },
                {"type": "image_url", "image_url": {"url": image_url}, "role": "first_frame"},
            ],
        }
        meta = json.loads((tmp_path / "outbox" / "beach.json").read_text())
        # The gateway fetched the very image that was dropped.
        assert ark.fetched == [(image_url, meta["source_sha256"])]
        # Polled at the task's own URL until it ended, then the video from the file host.
        polls = [r for r in ark.seen("api") if r.method == "GET"]
        assert [r.path for r in polls] == [f"{stub_provider.TASKS_PATH}/{task_id}"] * 3
        (download,) = ark.seen("files")
        assert download.path == f"/videos/{task_id}.mp4"
        video = (tmp_path / "outbox" / "beach.mp4").read_bytes()
        assert video == ark.video_bytes(task_id) and meta["video_sha256"] == sha256(video)
        assert meta["task_id"] == task_id

        # The record says whose task it is.
        (job,) = open_reader(config).snapshot()
        assert job.provider == stub_provider.NAME == "modelark"
        assert job.task_id == task_id and job.state.value == "done"

        # The key: in the API's Authorization header, and nowhere else.
        for request in ark.seen("api"):
            assert request.headers["authorization"] == f"Bearer {KEY}"
            assert "ocp-apim-subscription-key" not in request.headers
            assert KEY not in request.body.decode()
        for request in ark.seen("files"):
            assert "authorization" not in request.headers
            assert KEY not in json.dumps(request.headers)
        assert {"job.submitted", "gateway.request"} <= {event["event"] for event in logs}
        assert all(KEY not in repr(event) for event in logs)
        for path in (tmp_path / "state").rglob("*"):
            if path.is_file():
                assert KEY.encode() not in path.read_bytes(), path
        for path in (tmp_path / "outbox").glob("*.json"):
            assert KEY not in path.read_text()
    assert sidecar.name in files_under(tmp_path / "done")
