"""The gateway's behaviour: routes, auth, request checks, faults, tasks and records.

Transport-free: ``GatewayApp.handle`` takes a parsed ``HttpRequest`` and returns
an ``HttpReply`` (or ``None``: drop the connection without answering).  The
h11 server in ``server.py`` carries the bytes.  Runs on one event loop; the
records are also read from other threads, hence the lock.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from PIL import Image

from seedance_watch.simulator.board import Task, TaskBoard, TokenBucket
from seedance_watch.simulator.commands import CommandError, parse_text
from seedance_watch.simulator.config import RequestRecord, SimulatorConfig, SubmitRecord
from seedance_watch.simulator.protocol import (
    BadRequest,
    HttpReply,
    HttpRequest,
    check_submit_body,
    error_reply,
    invalid,
    json_body,
    json_reply,
    server_error,
    xml_error,
)
from seedance_watch.simulator.video import make_video

__all__ = ["POLL_PATH", "SUBMIT_PATH", "GatewayApp"]

log = structlog.get_logger(__name__)

SUBMIT_PATH = "/byteplus/v1/generateImage2VideoTask"
POLL_PATH = "/bytedance-polling/getVideoResult"
VIDEO_PREFIX = "/videos/"
MAX_IMAGE_BYTES = 30 * 1024 * 1024
_ID_ALPHABET = string.ascii_lowercase + string.digits
_PIXAZO_STATUS = {
    "queued": "QUEUED",
    "running": "PROCESSING",
    "succeeded": "COMPLETED",
    "failed": "FAILED",
    "expired": "ERROR",
}
_RESOLUTION_PIXELS = {"480p": (864, 480), "720p": (1280, 720), "1080p": (1920, 1080)}


@dataclass(frozen=True)
class _Faults:
    drop: bool = False
    slow: bool = False
    status_5xx: int | None = None
    limited: bool = False
    accept_then_drop: bool = False
    truncate: bool = False


class GatewayApp:
    """One simulated gateway: its config, tasks, video cache and records."""

    def __init__(
        self, config: SimulatorConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._config = config
        self._rng = random.Random(config.seed)
        self._ids = random.Random(f"{config.seed}-ids")
        self._bucket: TokenBucket | None = None
        self._board = TaskBoard()
        self._submits: list[SubmitRecord] = []
        self._requests: list[RequestRecord] = []
        self._polls = 0
        self._submit_attempts = 0
        # Image bytes wait here, shared by identical images, until their video is under way.
        self._images: dict[str, bytes] = {}
        self._image_refs: dict[str, int] = {}
        self._videos: dict[tuple[str, int, int, float], asyncio.Future[bytes]] = {}
        self._to_encode: list[Task] = []
        # Monotonic -> epoch seconds, fixed once so timestamps never jump.
        self._wall_offset = time.time() - clock()
        self._http: httpx.AsyncClient | None = None
        self.base_url = ""

    # --- knobs and records (any thread) -------------------------------------------------

    @property
    def config(self) -> SimulatorConfig:
        with self._lock:
            return self._config

    def configure(self, **changes: Any) -> None:
        with self._lock:
            new = self._config.replace(**changes)
            if new.seed != self._config.seed:
                self._rng = random.Random(new.seed)
            if new.rate_limit_per_minute != self._config.rate_limit_per_minute:
                self._bucket = None
            self._config = new

    @property
    def submits(self) -> list[SubmitRecord]:
        with self._lock:
            return list(self._submits)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    @property
    def polls(self) -> int:
        with self._lock:
            return self._polls

    @property
    def submit_attempts(self) -> int:
        with self._lock:
            return self._submit_attempts

    def video_bytes(self, task_id: str) -> bytes:
        """The full mp4 served for ``task_id``; ``KeyError`` if it has no video (yet)."""
        with self._lock:
            video = self._board.tasks[task_id].video
        if video is None:
            raise KeyError(task_id)
        return video

    def tasks_by_status(self) -> dict[str, int]:
        """Number of tasks per (ModelArk-style) status, now."""
        with self._lock:
            now = self._advance()
            return self._board.counts(now)

    def task_params(self, task_id: str) -> dict[str, str | int | bool]:
        """The generation parameters used for ``task_id`` (invalid values replaced)."""
        with self._lock:
            return dict(self._board.tasks[task_id].params)

    # --- life cycle (event loop) --------------------------------------------------------

    async def tick(self) -> None:
        """Advance the schedule and start encoding the videos of tasks now running."""
        with self._lock:
            self._advance()
        self._kick_encodes()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # --- requests -----------------------------------------------------------------------

    async def handle(self, request: HttpRequest) -> HttpReply | None:
        """Answer ``request``; ``None`` means: drop the connection without answering."""
        try:
            reply = await self._route(request)
        except BadRequest as exc:
            reply = exc.reply
        with self._lock:
            status = None if reply is None else reply.status
            self._requests.append(RequestRecord(request.method, request.path, status, time.time()))
        return reply

    async def _route(self, request: HttpRequest) -> HttpReply | None:
        path = request.path
        methods: tuple[str, ...]
        if path == SUBMIT_PATH:
            kind, methods = "submit", ("POST",)
        elif path == POLL_PATH:
            kind, methods = "poll", ("POST",)
        elif path.startswith(VIDEO_PREFIX) and path.endswith(".mp4"):
            kind, methods = "video", ("GET", "HEAD")
        else:
            return error_reply(404, "NotFound", f"Resource not found: {path}")
        with self._lock:
            if kind == "submit":
                self._submit_attempts += 1
            elif kind == "poll":
                self._polls += 1
            config = self._config
            faults = self._roll_faults(kind, config)
        if request.method not in methods:
            return error_reply(405, "MethodNotAllowed", f"{request.method} is not allowed here")
        if faults.drop:
            return None
        if faults.slow:
            await asyncio.sleep(config.slow_reply_seconds)
        if faults.status_5xx is not None:
            return server_error(faults.status_5xx)
        if faults.limited:
            return error_reply(
                429,
                "TooManyRequests",
                "Rate limit exceeded",
                headers=[("Retry-After", config.retry_after)],
            )
        if kind == "video":
            return self._video(request, faults.truncate)
        denied = self._authorize(request, config)
        if denied is not None:
            return denied
        if kind == "poll":
            return self._poll(request, config)
        reply = await self._submit(request, config)
        if reply.status == 200 and faults.accept_then_drop:
            return None
        return reply

    def _roll_faults(self, kind: str, config: SimulatorConfig) -> _Faults:
        """Throw the fault dice for one request (lock held); zero rates draw nothing."""
        drop_on = config.faults_on if config.drop_on is None else config.drop_on
        drop = (
            kind in drop_on
            and config.drop_connection_rate > 0.0
            and self._rng.random() < config.drop_connection_rate
        )
        if kind not in config.faults_on:
            return _Faults(drop=drop)

        def roll(rate: float) -> bool:
            return rate > 0.0 and self._rng.random() < rate

        status_5xx = self._rng.choice((500, 502, 503)) if roll(config.error_5xx_rate) else None
        return _Faults(
            drop=drop,
            slow=roll(config.slow_reply_rate),
            status_5xx=status_5xx,
            limited=roll(config.rate_429),
            accept_then_drop=kind == "submit" and roll(config.submit_accept_then_drop_rate),
            truncate=kind == "video" and roll(config.truncate_video_rate),
        )

    def _authorize(self, request: HttpRequest, config: SimulatorConfig) -> HttpReply | None:
        key = request.headers.get("ocp-apim-subscription-key")
        if key is None:
            return error_reply(
                401,
                "Unauthorized",
                "Access denied due to missing subscription key. Make sure to include "
                "subscription key when making requests to an API.",
            )
        if key != config.api_key:
            return error_reply(
                401,
                "Unauthorized",
                "Access denied due to invalid subscription key. Make sure to provide a "
                "valid key for an active subscription.",
            )
        if config.credit_exhausted:
            return error_reply(
                402,
                "InsufficientCredits",
                "Your account has run out of credits. Top up to continue.",
            )
        if config.access_denied:
            return error_reply(
                403, "Forbidden", "Access denied: this subscription has no access to this API."
            )
        return None

    # --- submit -------------------------------------------------------------------------

    async def _submit(self, request: HttpRequest, config: SimulatorConfig) -> HttpReply:
        with self._lock:
            wait = self._take_token(config)
        if wait > 0:
            retry = str(max(1, int(wait + 0.999)))
            return error_reply(
                429, "TooManyRequests", "Rate limit is exceeded.", headers=[("Retry-After", retry)]
            )
        body = json_body(request)
        model, text, image_url = check_submit_body(body)
        try:
            parsed = parse_text(text)
        except CommandError as exc:
            raise invalid(f"content.text: {exc}") from exc
        image = await self._fetch_image(image_url)
        sha = hashlib.sha256(image).hexdigest()
        with self._lock:
            now = self._advance()
            config = self._config
            if (
                config.concurrency_mode == "reject"
                and config.max_concurrent is not None
                and self._board.unfinished() >= config.max_concurrent
            ):
                return error_reply(
                    429,
                    "TooManyRequests",
                    f"Too many unfinished tasks (limit {config.max_concurrent}).",
                    headers=[("Retry-After", "1")],
                )
            outcome: Any = "succeeded"
            if config.fail_task_rate > 0 and self._rng.random() < config.fail_task_rate:
                outcome = "failed"
            elif config.expire_task_rate > 0 and self._rng.random() < config.expire_task_rate:
                outcome = "expired"
            task = Task(
                id=self._new_id(),
                model=model,
                text=text,
                params=parsed.params,
                image_sha256=sha,
                created=now,
                eligible=now + config.queued_seconds,
                outcome=outcome,
                running_seconds=config.running_seconds,
            )
            if outcome == "succeeded":
                self._images.setdefault(sha, image)
                self._image_refs[sha] = self._image_refs.get(sha, 0) + 1
            self._board.add(task)
            self._submits.append(
                SubmitRecord(
                    task.id, model, text, image_url, sha, dict(request.headers), body, time.time()
                )
            )
        log.debug("simulator.task_created", task_id=task.id, model=model, outcome=outcome)
        return json_reply(200, {"id": task.id})

    def _take_token(self, config: SimulatorConfig) -> float:
        if config.rate_limit_per_minute is None:
            return 0.0
        now = self._clock()
        if self._bucket is None:
            self._bucket = TokenBucket(config.rate_limit_per_minute, now)
        return self._bucket.take(now)

    def _new_id(self) -> str:
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        while True:
            suffix = "".join(self._ids.choice(_ID_ALPHABET) for _ in range(5))
            task_id = f"cgt-{stamp}-{suffix}"
            if task_id not in self._board.tasks:
                return task_id

    async def _fetch_image(self, url: str) -> bytes:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10.0, follow_redirects=True)
        try:
            async with self._http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise invalid(f"image_url could not be fetched: HTTP {response.status_code}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_IMAGE_BYTES:
                        raise invalid("image_url could not be fetched: image larger than 30 MB")
                    chunks.append(chunk)
        except (httpx.HTTPError, ValueError) as exc:
            raise invalid(f"image_url could not be fetched: {type(exc).__name__}: {exc}") from exc
        image = b"".join(chunks)
        if not await asyncio.to_thread(_is_image, image):
            raise invalid("image_url could not be fetched: the content is not a supported image")
        return image

    # --- poll ---------------------------------------------------------------------------

    def _poll(self, request: HttpRequest, config: SimulatorConfig) -> HttpReply:
        body = json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("task_id"), str):
            raise invalid('the body must be {"task_id": "<id>"}')
        with self._lock:
            now = self._advance()
            task = self._board.tasks.get(body["task_id"])
            if task is None:
                return error_reply(404, "NotFound", f"The task {body['task_id']} was not found.")
            payload = self._task_json(task, now, config)
        self._kick_encodes()
        return json_reply(200, payload)

    def _task_json(self, task: Task, now: float, config: SimulatorConfig) -> dict[str, Any]:
        status = task.status(now)
        url = self._video_url(task.id)
        out: dict[str, Any] = {"id": task.id, "model": task.model}
        if config.status_style == "pixazo":
            out["status"] = _PIXAZO_STATUS[status]
            if status == "succeeded":
                out["output"] = {"media_url": url}
        else:
            out["status"] = status
            if status == "succeeded":
                out["content"] = {"video_url": url}
        if status == "succeeded":
            tokens = _tokens(task.params)
            out["usage"] = {"completion_tokens": tokens, "total_tokens": tokens}
        elif status == "failed":
            message = task.video_error or "The video generation failed (simulated)."
            out["error"] = {"code": "InternalServiceError", "message": message}
        elif status == "expired":
            out["error"] = {"code": "TaskExpired", "message": "The task expired before it ran."}
        out["created_at"] = int(task.created + self._wall_offset)
        out["updated_at"] = int(task.updated(now) + self._wall_offset)
        for name in ("seed", "resolution", "ratio", "duration"):
            out[name] = task.params[name]
        return out

    def _video_url(self, task_id: str) -> str:
        signature = hashlib.sha256(f"sim-{task_id}".encode()).hexdigest()
        return (
            f"{self.base_url}{VIDEO_PREFIX}{task_id}.mp4"
            f"?X-Tos-Algorithm=TOS4-HMAC-SHA256&X-Tos-Expires=86400&X-Tos-Signature={signature}"
        )

    # --- video --------------------------------------------------------------------------

    def _video(self, request: HttpRequest, truncate: bool) -> HttpReply:
        task_id = request.path[len(VIDEO_PREFIX) : -len(".mp4")]
        with self._lock:
            now = self._advance()
            task = self._board.tasks.get(task_id)
            ready = task is not None and task.status(now) == "succeeded"
            expired = (
                task is not None
                and ready
                and now > task.updated(now) + self._config.video_ttl_seconds
            )
        if task is None or not ready or task.video is None:
            return xml_error(404, "NoSuchKey", "The specified key does not exist.")
        if expired:
            return xml_error(403, "AccessDenied", "Request has expired")
        video = task.video
        return HttpReply(
            200,
            video,
            content_type="video/mp4",
            truncate_at=len(video) // 2 if truncate else None,
            head_only=request.method == "HEAD",
        )

    # --- schedule and encoding ----------------------------------------------------------

    def _advance(self) -> float:
        """Run the schedule up to now (lock held); queue newly running tasks for encoding."""
        now = self._clock()
        started = self._board.advance(now, self._config.max_concurrent)
        self._to_encode.extend(t for t in started if t.outcome == "succeeded")
        return now

    def _kick_encodes(self) -> None:
        """Start (or join) the encoding of each newly running task's video (event loop)."""
        with self._lock:
            todo, self._to_encode = self._to_encode, []
            config = self._config
        for task in todo:
            key = (task.image_sha256, config.video_max_side, config.video_fps, config.video_seconds)
            with self._lock:
                future = self._videos.get(key)
                image = self._images.get(task.image_sha256)
                self._release_image(task.image_sha256)
            if future is None:
                if image is None:  # cannot happen: the reference was held for this task
                    task.video_error = "internal: the image is gone"
                    continue
                future = asyncio.ensure_future(
                    asyncio.to_thread(
                        make_video,
                        image,
                        max_side=config.video_max_side,
                        fps=config.video_fps,
                        seconds=config.video_seconds,
                    )
                )
                with self._lock:
                    self._videos[key] = future
            future.add_done_callback(lambda f, task=task: self._video_done(task, f))  # type: ignore[misc]

    def _release_image(self, sha: str) -> None:
        refs = self._image_refs.get(sha, 0) - 1
        if refs <= 0:
            self._image_refs.pop(sha, None)
            self._images.pop(sha, None)
        else:
            self._image_refs[sha] = refs

    def _video_done(self, task: Task, future: asyncio.Future[bytes]) -> None:
        with self._lock:
            task.video_ready = self._clock()
            if future.cancelled():
                task.video_error = "the video encoding was cancelled"
            elif (exc := future.exception()) is not None:
                task.video_error = f"the video could not be made: {exc}"
                log.warning("simulator.video_failed", task_id=task.id, error=str(exc))
            else:
                task.video = future.result()


def _is_image(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception:
        return False
    return True


def _tokens(params: dict[str, str | int | bool]) -> int:
    width, height = _RESOLUTION_PIXELS.get(str(params["resolution"]), (1280, 720))
    return width * height * 24 * int(params["duration"]) // 1024
