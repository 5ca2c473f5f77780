"""The gateway's behaviour: routes, auth, request checks, faults, tasks and records.

Transport-free: ``GatewayApp.handle`` takes a parsed ``HttpRequest`` and returns
an ``HttpReply`` (or ``None``: drop the connection without answering).  The
h11 server in ``server.py`` carries the bytes.  Runs on one event loop; the
records are also read from other threads, hence the lock.

Two answers, as the gateway has spoken over time: a task answered
``{"id": "cgt-..."}`` is polled with ``POST /bytedance-polling/getVideoResult``;
a task answered with the envelope (``request_id``, ``polling_url``) is polled
with ``GET /v2/requests/status/{request_id}``.  Each poll endpoint knows only its
own dialect's tasks (the other's ids are 404), like two generations of a real
API.  The Seedance 1.0 endpoints answer in the dialect ``submit_answer`` names;
the Seedance 2 endpoints always with the envelope, its ``request_id`` prefixed
with the endpoint's first path segment (``seedance-2-0-fast_<uuid7>``).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import string
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from PIL import Image

from seedance_watch.simulator.board import TERMINAL, Status, Task, TaskBoard, TokenBucket
from seedance_watch.simulator.commands import CommandError, parse_text
from seedance_watch.simulator.config import (
    PROXY_STATUSES,
    Dialect,
    Kind,
    RequestRecord,
    SimulatorConfig,
    SubmitRecord,
    WebhookRecord,
)
from seedance_watch.simulator.protocol import (
    POLL_PATH,
    STATUS_PREFIX,
    BadRequest,
    HttpReply,
    HttpRequest,
    error_reply,
    invalid,
    json_body,
    json_reply,
    server_error,
    xml_error,
)
from seedance_watch.simulator.submits import (
    AUTO_DURATION,
    Endpoint,
    SubmitRequest,
    check_submit,
    submit_endpoints,
)
from seedance_watch.simulator.video import (
    make_frames_video,
    make_reference_video,
    make_text_video,
    make_video,
)

__all__ = ["POLL_PATH", "STATUS_PREFIX", "SUBMIT_PATH", "GatewayApp"]

log = structlog.get_logger(__name__)

#: The Seedance 1.0 image-to-video submit (``submits.submit_endpoints`` lists them all).
SUBMIT_PATH = "/byteplus/v1/generateImage2VideoTask"
VIDEO_PREFIX = "/videos/"
MAX_IMAGE_BYTES = 30 * 1024 * 1024
_ID_ALPHABET = string.ascii_lowercase + string.digits
_PIXAZO_STATUS = {
    "queued": "QUEUED",
    "running": "PROCESSING",
    "succeeded": "COMPLETED",
    "failed": "FAILED",
    "expired": "ERROR",
    "cancelled": "CANCELLED",
}
_RESOLUTION_PIXELS = {"480p": (864, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
#: What a Seedance 2 model uses for an option it takes that the body does not set.
_SEEDANCE_2_DEFAULTS: dict[str, str | int | bool] = {
    "resolution": "720p",
    "ratio": "adaptive",
    "duration": 5,
    "generate_audio": True,
    "watermark": False,
}


@dataclass(frozen=True)
class _Faults:
    drop: bool = False
    slow: bool = False
    status_5xx: int | None = None
    limited: bool = False
    accept_then_drop: bool = False
    truncate: bool = False
    #: A status injected on submit (``submit_status_codes``).
    submit_status: int | None = None


class GatewayApp:
    """One simulated gateway: its config, tasks, video cache and records."""

    def __init__(
        self, config: SimulatorConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._config = config
        self._endpoints = submit_endpoints(config.models)
        self._peak_unfinished = 0
        # Tasks accepted and not yet finished as a client sees them (queued, running, or
        # ended but its video still encoding), pruned at each submit: the peak counter.
        self._unfinished: set[Task] = set()
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
        self._videos: dict[tuple[object, ...], asyncio.Future[bytes]] = {}
        self._to_encode: list[Task] = []
        # Tasks whose end is to be announced to their X-Webhook-URL, and deliveries under way.
        self._webhook_due: dict[str, Task] = {}
        self._webhooks: list[WebhookRecord] = []
        self._deliveries: set[asyncio.Task[None]] = set()
        self._hooks: httpx.AsyncClient | None = None
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
            if new.models is not self._config.models:
                self._endpoints = submit_endpoints(new.models)
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
    def webhooks(self) -> list[WebhookRecord]:
        with self._lock:
            return list(self._webhooks)

    @property
    def polls(self) -> int:
        with self._lock:
            return self._polls

    @property
    def submit_attempts(self) -> int:
        with self._lock:
            return self._submit_attempts

    @property
    def peak_unfinished(self) -> int:
        """The most tasks ever unfinished at once: accepted and not yet finished as a
        client polling them would see (queued, running, or ended but its video still
        being made).  The gateway's peak concurrency, as its clients' submits drove it:
        counted at each accepted submit, the only moment it can grow."""
        with self._lock:
            return self._peak_unfinished

    def task_spans(self) -> list[tuple[float, float | None]]:
        """Each task's ``(accepted, finished)`` in the simulator's clock (monotonic
        seconds), in submit order; ``finished`` None while it is not (a client sees
        it finished from then on)."""
        with self._lock:
            now = self._advance()
            out = []
            for task in self._board.tasks.values():
                finished = task.updated(now) if task.status(now) in TERMINAL else None
                out.append((task.created, finished))
            return out

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
        """Advance the schedule, start encoding the videos of tasks now running, and
        send the webhooks of tasks that ended."""
        with self._lock:
            self._advance()
        self._kick_encodes()
        self._send_webhooks()

    async def aclose(self) -> None:
        for delivery in list(self._deliveries):
            delivery.cancel()
        await asyncio.gather(*self._deliveries, return_exceptions=True)
        for client in (self._http, self._hooks):
            if client is not None:
                await client.aclose()
        self._http = self._hooks = None

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
        endpoint = self._endpoints.get(path)
        if endpoint is not None:
            kind, methods = "submit", ("POST",)
        elif path == POLL_PATH:
            kind, methods = "poll", ("POST",)
        elif path.startswith(STATUS_PREFIX):
            kind, methods = "status", ("GET",)
        elif path.startswith(VIDEO_PREFIX) and path.endswith(".mp4"):
            kind, methods = "video", ("GET", "HEAD")
        else:
            return error_reply(404, "NotFound", f"Resource not found: {path}")
        with self._lock:
            if kind == "submit":
                self._submit_attempts += 1
            elif kind in ("poll", "status"):
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
        if faults.limited or faults.submit_status == 429:
            return error_reply(
                429,
                "TooManyRequests",
                "Rate limit exceeded",
                headers=[("Retry-After", config.retry_after)],
            )
        if faults.submit_status is not None and faults.submit_status not in PROXY_STATUSES:
            return server_error(faults.submit_status)
        if kind == "video":
            return self._video(request, faults.truncate)
        denied = self._authorize(request, config)
        if denied is not None:
            return denied
        if kind == "poll":
            return self._poll(request, config)
        if kind == "status":
            return self._status(request, config)
        # What the client will get once the task exists: the answer, nothing, or a proxy's.
        answer: int | None = 200
        if faults.accept_then_drop:
            answer = None
        elif faults.submit_status is not None:
            answer = faults.submit_status
        assert endpoint is not None
        reply = await self._submit(request, config, endpoint, answer)
        if reply.status != 200 or answer == 200:
            return reply
        return None if answer is None else server_error(answer)

    def _roll_faults(self, kind: str, config: SimulatorConfig) -> _Faults:
        """Throw the fault dice for one request (lock held); zero rates draw nothing."""
        kind = "poll" if kind == "status" else kind  # both ways of polling are "poll" faults
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

        # On a submit these are the gateway's own refusals, before any task exists (500,
        # 503); a proxy's 502/504 after creation is ``submit_status_rate``'s business.
        codes = (500, 503) if kind == "submit" else (500, 502, 503)
        status_5xx = self._rng.choice(codes) if roll(config.error_5xx_rate) else None
        return _Faults(
            drop=drop,
            slow=roll(config.slow_reply_rate),
            status_5xx=status_5xx,
            limited=roll(config.rate_429),
            accept_then_drop=kind == "submit" and roll(config.submit_accept_then_drop_rate),
            truncate=kind == "video" and roll(config.truncate_video_rate),
            submit_status=(
                self._rng.choice(config.submit_status_codes)
                if kind == "submit" and roll(config.submit_status_rate)
                else None
            ),
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

    async def _submit(
        self, request: HttpRequest, config: SimulatorConfig, endpoint: Endpoint, answer: int | None
    ) -> HttpReply:
        """Check, fetch and create one task; ``answer`` is what the client will be sent."""
        with self._lock:
            wait = self._take_token(config)
        if wait > 0:
            retry = str(max(1, int(wait + 0.999)))
            return error_reply(
                429, "TooManyRequests", "Rate limit is exceeded.", headers=[("Retry-After", retry)]
            )
        body = json_body(request)
        checked = check_submit(endpoint, body, config.models)
        prompt, params = _generation(checked, endpoint, config)
        webhook_url = request.headers.get("x-webhook-url")
        if webhook_url is not None and urlsplit(webhook_url).scheme not in ("http", "https"):
            raise invalid("X-Webhook-URL must be an http(s) URL")
        images = [
            await self._fetch_image(url, name)
            for url, name in zip(checked.urls, _image_names(checked.roles), strict=True)
        ]
        shas = tuple(hashlib.sha256(image).hexdigest() for image in images)
        seconds = config.video_seconds
        if seconds is None:
            seconds = float(params["duration"])
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
            elif config.cancel_task_rate > 0 and self._rng.random() < config.cancel_task_rate:
                outcome = "cancelled"
            dialect: Dialect = "envelope" if checked.family == "2" else config.submit_answer
            task = Task(
                id=self._new_id(dialect, endpoint.prefix),
                model=checked.model,
                text=checked.text,
                params=params,
                image_sha256=shas[0] if shas else "",
                created=now,
                eligible=now + config.queued_seconds,
                outcome=outcome,
                running_seconds=config.running_seconds,
                kind=checked.kind,
                image_sha256s=shas,
                prompt=prompt,
                seconds=seconds,
                dialect=dialect,
                seq=len(self._board.tasks),
                webhook_url=webhook_url,
            )
            if outcome == "succeeded":
                for sha, image in zip(shas, images, strict=True):
                    self._images.setdefault(sha, image)
                    self._image_refs[sha] = self._image_refs.get(sha, 0) + 1
            self._board.add(task)
            self._unfinished = {t for t in self._unfinished if t.status(now) not in TERMINAL}
            self._unfinished.add(task)
            self._peak_unfinished = max(self._peak_unfinished, len(self._unfinished))
            if webhook_url is not None:
                self._webhook_due[task.id] = task
            polling_url = None
            if dialect == "envelope":
                origin = config.polling_origin or self.base_url
                polling_url = f"{origin}{STATUS_PREFIX}{task.id}"
                payload: dict[str, Any] = {
                    "request_id": task.id,
                    "status": "QUEUED",
                    "polling_url": polling_url,
                }
            else:
                payload = {"id": task.id}
            self._submits.append(
                SubmitRecord(
                    task_id=task.id,
                    model=checked.model,
                    text=checked.text,
                    image_url=checked.urls[0] if checked.urls else "",
                    image_sha256=task.image_sha256,
                    headers=dict(request.headers),
                    body=body,
                    at=time.time(),
                    endpoint=request.path,
                    kind=checked.kind,
                    family=checked.family,
                    webhook_url=webhook_url,
                    fetched_urls=checked.urls,
                    fetched_sha256s=shas,
                    roles=checked.roles,
                    dialect=dialect,
                    polling_url=polling_url,
                    answer_status=answer,
                    answer=dict(payload),
                    params=dict(params),
                    video_seconds=seconds,
                )
            )
        log.debug(
            "simulator.task_created",
            task_id=task.id,
            kind=checked.kind,
            model=checked.model,
            outcome=outcome,
            answer=answer,
        )
        return json_reply(200, payload)

    def _take_token(self, config: SimulatorConfig) -> float:
        if config.rate_limit_per_minute is None:
            return 0.0
        now = self._clock()
        if self._bucket is None:
            self._bucket = TokenBucket(config.rate_limit_per_minute, now)
        return self._bucket.take(now)

    def _new_id(self, dialect: Dialect = "id", prefix: str = "byteplus") -> str:
        """``cgt-<UTC stamp>-<5 chars>`` (ModelArk), or ``<prefix>_<UUIDv7>`` (envelope)."""
        while True:
            if dialect == "envelope":
                # A UUIDv7 layout: 48 bits of epoch milliseconds, then seeded random bits.
                millis = int(time.time() * 1000) & ((1 << 48) - 1)
                bits = self._ids.getrandbits(74)
                value = (
                    (millis << 80)
                    | (0x7 << 76)
                    | ((bits >> 62) << 64)
                    | (0b10 << 62)
                    | (bits & ((1 << 62) - 1))
                )
                task_id = f"{prefix}_{uuid.UUID(int=value)}"
            else:
                stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
                suffix = "".join(self._ids.choice(_ID_ALPHABET) for _ in range(5))
                task_id = f"cgt-{stamp}-{suffix}"
            if task_id not in self._board.tasks:
                return task_id

    async def _fetch_image(self, url: str, name: str = "image_url") -> bytes:
        """The image at ``url``; a 400 naming the body key ``name`` if it is not one."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10.0, follow_redirects=True)
        try:
            async with self._http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise invalid(f"{name} could not be fetched: HTTP {response.status_code}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_IMAGE_BYTES:
                        raise invalid(f"{name} could not be fetched: image larger than 30 MB")
                    chunks.append(chunk)
        except (httpx.HTTPError, ValueError) as exc:
            raise invalid(f"{name} could not be fetched: {type(exc).__name__}: {exc}") from exc
        image = b"".join(chunks)
        if not await asyncio.to_thread(_is_image, image):
            raise invalid(f"{name} could not be fetched: the content is not a supported image")
        return image

    # --- poll ---------------------------------------------------------------------------

    def _poll(self, request: HttpRequest, config: SimulatorConfig) -> HttpReply:
        body = json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("task_id"), str):
            raise invalid('the body must be {"task_id": "<id>"}')
        with self._lock:
            now = self._advance()
            task = self._board.tasks.get(body["task_id"])
            if task is None or task.dialect != "id":  # envelope ids are the v2 API's
                return error_reply(404, "NotFound", f"The task {body['task_id']} was not found.")
            payload = self._task_json(task, now, config)
        self._kick_encodes()
        return json_reply(200, payload)

    def _status(self, request: HttpRequest, config: SimulatorConfig) -> HttpReply:
        """``GET /v2/requests/status/{request_id}``: the v2 answer of an envelope task."""
        request_id = request.path[len(STATUS_PREFIX) :]
        with self._lock:
            now = self._advance()
            task = self._board.tasks.get(request_id)
            if task is None or task.dialect != "envelope":  # cgt- ids are the legacy API's
                return error_reply(404, "NotFound", f"The request {request_id} was not found.")
            payload = self._status_json(task, task.status(now), config)
        self._kick_encodes()
        return json_reply(200, payload)

    def _status_json(self, task: Task, status: Status, config: SimulatorConfig) -> dict[str, Any]:
        """The v2 status answer (also a webhook's body).

        A failed or expired task is ``FAILED`` and ``ERROR`` on alternate tasks, so
        only the error code (``TaskExpired``) tells an expiry, as on the gateway.
        """
        out: dict[str, Any] = {"request_id": task.id, "output": None, "error": None}
        if status in ("failed", "expired"):
            out["status"] = "FAILED" if task.seq % 2 == 0 else "ERROR"
            code, message = _failure(task, status)
            as_string = config.error_style == "string" or (
                config.error_style == "alternate" and task.seq % 2 == 1
            )
            out["error"] = f"{code}: {message}" if as_string else {"code": code, "message": message}
        else:
            out["status"] = _PIXAZO_STATUS[status]
        if status == "succeeded":
            out["output"] = {"media_url": self._media_url(task, config)}
        return out

    def _media_url(self, task: Task, config: SimulatorConfig) -> str | list[str]:
        url = self._video_url(task.id)
        as_list = config.media_url_style == "list" or (
            config.media_url_style == "alternate" and task.seq % 2 == 1
        )
        return [url] if as_list else url

    def _task_json(self, task: Task, now: float, config: SimulatorConfig) -> dict[str, Any]:
        status = task.status(now)
        url = self._video_url(task.id)
        out: dict[str, Any] = {"id": task.id, "model": task.model}
        if config.status_style == "pixazo":
            out["status"] = _PIXAZO_STATUS[status]
            if status == "succeeded":
                out["output"] = {"media_url": self._media_url(task, config)}
        else:
            out["status"] = status
            if status == "succeeded":
                out["content"] = {"video_url": url}
        if status == "succeeded":
            tokens = _tokens(task.params)
            out["usage"] = {"completion_tokens": tokens, "total_tokens": tokens}
        elif status in ("failed", "expired"):
            code, message = _failure(task, status)
            out["error"] = {"code": code, "message": message}
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
            shape = _Shape(config.video_max_side, config.video_fps, task.seconds)
            shas = task.image_sha256s
            prompt = task.prompt if task.kind == "text" else ""
            ratio = str(task.params.get("ratio", "adaptive")) if task.kind == "text" else ""
            key = (task.kind, shas, prompt, ratio, shape)
            with self._lock:
                future = self._videos.get(key)
                images = [self._images.get(sha) for sha in shas]
                for sha in shas:
                    self._release_image(sha)
            if future is None:
                present = [image for image in images if image is not None]
                if len(present) != len(shas):  # cannot happen: a reference was held for this task
                    task.video_error = "internal: the image is gone"
                    continue
                future = asyncio.ensure_future(
                    asyncio.to_thread(_encode, task.kind, present, prompt, ratio, shape)
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

    # --- webhooks -----------------------------------------------------------------------

    def _send_webhooks(self) -> None:
        """Start a delivery for each task with an ``X-Webhook-URL`` that has now ended."""
        with self._lock:
            if not self._webhook_due:
                return
            now = self._clock()
            config = self._config
            ready: list[tuple[Task, dict[str, Any]]] = []
            for task_id, task in list(self._webhook_due.items()):
                status = task.status(now)
                if status in TERMINAL:
                    del self._webhook_due[task_id]
                    ready.append((task, self._status_json(task, status, config)))
        for task, body in ready:
            assert task.webhook_url is not None
            delivery = asyncio.ensure_future(
                self._deliver(task.id, task.webhook_url, body, config.webhook_timeout)
            )
            self._deliveries.add(delivery)
            delivery.add_done_callback(self._deliveries.discard)

    async def _deliver(self, task_id: str, url: str, body: dict[str, Any], wait: float) -> None:
        """POST one callback; any failure is logged and recorded, never raised."""
        if self._hooks is None:
            self._hooks = httpx.AsyncClient(follow_redirects=False)
        status: int | None = None
        error: str | None = None
        try:
            response = await self._hooks.post(
                url,
                json=body,
                headers={"User-Agent": "seedance-watch-simulator"},
                timeout=wait,
            )
            status = response.status_code
        except (httpx.HTTPError, ValueError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._webhooks.append(WebhookRecord(task_id, url, body, status, error, time.time()))
        if error is None:
            log.debug("simulator.webhook_sent", task_id=task_id, status=status)
        else:
            log.warning("simulator.webhook_failed", task_id=task_id, error=error)


@dataclass(frozen=True)
class _Shape:
    """How a clip is encoded: its longer side, frame rate and length."""

    max_side: int
    fps: int
    seconds: float


def _encode(kind: Kind, images: list[bytes], prompt: str, ratio: str, shape: _Shape) -> bytes:
    """The mp4 of a task of ``kind`` (in a worker thread)."""
    side, fps, seconds = shape.max_side, shape.fps, shape.seconds
    if kind == "frames":
        return make_frames_video(images[0], images[1], max_side=side, fps=fps, seconds=seconds)
    if kind == "text":
        return make_text_video(prompt, ratio, max_side=side, fps=fps, seconds=seconds)
    if kind == "reference":
        return make_reference_video(images, max_side=side, fps=fps, seconds=seconds)
    return make_video(images[0], max_side=side, fps=fps, seconds=seconds)


def _generation(
    checked: SubmitRequest, endpoint: Endpoint, config: SimulatorConfig
) -> tuple[str, dict[str, str | int | bool]]:
    """The prompt and the parameters a task is generated with; ``duration`` is the
    length the model makes (for ``duration: -1``, the one it picks).

    Seedance 1.0 reads them from the text commands (an unknown one is a 400, an
    invalid value silently the default); Seedance 2 takes the checked keys, and
    its defaults for the options the model takes that were not sent.
    """
    if checked.family == "1.0":
        try:
            parsed = parse_text(checked.text)
        except CommandError as exc:
            field = "content.text" if checked.kind == "image" else "text"
            raise invalid(f"{field}: {exc}") from exc
        return parsed.prompt, parsed.params
    assert endpoint.row is not None
    params = {k: v for k, v in _SEEDANCE_2_DEFAULTS.items() if k in endpoint.row.options}
    params.update(checked.options)
    if params.get("duration") == AUTO_DURATION:
        params["duration"] = config.auto_seconds
    return checked.text, params


def _image_names(roles: tuple[str, ...]) -> list[str]:
    """How a fetch error names each image: its role, numbered when several share it."""
    return [
        role if roles.count(role) == 1 else f"{role} {roles[:index].count(role) + 1}"
        for index, role in enumerate(roles)
    ]


def _failure(task: Task, status: Status) -> tuple[str, str]:
    """The error code and message of a failed or expired task."""
    if status == "expired":
        return "TaskExpired", "The task expired before it ran."
    return "InternalServiceError", task.video_error or "The video generation failed (simulated)."


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
