"""The routes of ``health.listen`` as one Starlette application.

=============================  =====================================================
``GET  /healthz``              200 healthy, 503 not (open); ``check()``'s details to the admitted
``GET  /metrics``              Prometheus text
``GET  /``                     the status page (server-side rendered first view)
``GET  /api/jobs``             exactly ``seedance-watch status --json``
``GET  /api/view``             the page's content (:func:`.view.build_view`), for its script
``GET  /jobs/{id}/thumbnail``  a small JPEG of the job's source image (cached)
``GET  /jobs/{id}/video``      the job's mp4 from the outbox, with Range requests
``POST /jobs/{id}/retry``      ``seedance-watch retry ID`` (same-origin only)
``POST /webhooks/<provider>``  a gateway callback: ``?token=`` pokes its job (open)
``GET  /static/...``           the page's script and style sheet
=============================  =====================================================

Access (the token, the cookie, the loopback ``Host``) is :mod:`.access`.  Blocking
work (the ledger probe, reading files, moving inputs) runs in worker threads, so
the server's own event loop keeps answering.
"""

from __future__ import annotations

import html
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import structlog
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seedance_watch.config import Config
from seedance_watch.core.jobs import Job
from seedance_watch.service.web.access import Access, AccessGuard, same_origin
from seedance_watch.service.web.files import JobFiles
from seedance_watch.service.web.view import build_view

__all__ = ["MAX_WEBHOOK_BYTES", "Check", "PageSources", "build_app"]

log = structlog.get_logger(__name__)

MAX_WEBHOOK_BYTES = 64 * 1024

#: ``check()`` returns ``(healthy, body)``; the body is served as JSON.
Check = Callable[[], tuple[bool, Mapping[str, Any]]]


def _nothing() -> None:
    return None


def _empty_report() -> dict[str, Any]:
    return {"counts": {}, "jobs": [], "daemon": None}


@dataclass(frozen=True)
class PageSources:
    """What the routes read and do, handed in by ``daemon.py``: each callable is safe
    to call from the server's own thread, and cheap (the engine's side is its
    :class:`~seedance_watch.pipeline.view.EngineView`)."""

    #: ``/healthz``: ``(healthy, body)``.
    check: Check
    #: ``/metrics``: the Prometheus text.
    metrics: Callable[[], bytes]
    #: A consistent copy of every job record.
    jobs: Callable[[], Sequence[Job]]
    #: ``GET /api/jobs``: exactly ``seedance-watch status --json``.
    report: Callable[[], Mapping[str, Any]] = _empty_report
    #: The daemon's recorded pauses and whether one runs (``status``'s ``daemon``).
    daemon: Callable[[], Mapping[str, Any] | None] = _nothing
    #: ``seedance-watch retry JOB_ID``: the inbox names moved, or why not.
    retry: Callable[[str], tuple[list[str] | None, str]] | None = None
    #: The learned task time, seconds.
    task_eta: Callable[[], float | None] = _nothing
    #: Today's spend against the caps.
    budget: Callable[[], Mapping[str, Any] | None] = _nothing
    #: A webhook callback's token: True when it names a job.
    poke: Callable[[str], bool] | None = None


_HERE = Path(__file__).parent
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NO_STORE = {"Cache-Control": "no-store"}
_PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # unless the answer chose (no-referrer)
    (b"content-security-policy", _PAGE_POLICY.encode()),
]


class _SecurityHeaders:
    """Headers every answer carries (unless it set them): no sniffing, no framing, a CSP."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [pair for pair in _SECURITY_HEADERS if pair[0] not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,  # every name, prompt and message comes from whoever drops files
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return Jinja2Templates(env=env)


class _Routes:
    """The endpoints, over the callables the daemon hands in."""

    def __init__(self, config: Config, sources: PageSources, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.sources = sources
        self.jobs = sources.jobs
        self.files = JobFiles(config.paths)
        self.access = Access(config.health.token)
        self.templates = _templates()
        self._check_lock = threading.Lock()  # one ledger probe at a time
        self._retry_lock = threading.Lock()  # two clicks do not move one drop twice

    # --- health and metrics -------------------------------------------------------------

    def _run_check(self) -> tuple[bool, Mapping[str, Any]]:
        with self._check_lock:
            return self.sources.check()

    async def healthz(self, request: Request) -> Response:
        """Open to every probe; the details (counts, pause reasons naming files, the
        bucket, the endpoint) only to a caller the page itself would serve."""
        healthy, body = await run_in_threadpool(self._run_check)
        content: dict[str, Any] = {"status": "ok" if healthy else "unhealthy"}
        if self.access.admits(request):
            content.update(body)
        return JSONResponse(content, 200 if healthy else 503, headers=_NO_STORE)

    async def metrics(self, request: Request) -> Response:
        body = await run_in_threadpool(self.sources.metrics)
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers=_NO_STORE)

    # --- the page -----------------------------------------------------------------------

    def _view(self) -> dict[str, Any]:
        return build_view(
            self.jobs(),
            now=self.clock(),
            task_eta=self.sources.task_eta(),
            budget=self.sources.budget(),
            daemon=self.sources.daemon(),
            retryable=self.files.retryable,
            thumbnailed=self.files.thumbnailed,
        )

    async def page(self, request: Request) -> Response:
        view = await run_in_threadpool(self._view)
        return self.templates.TemplateResponse(
            request, "page.html", {"view": view}, headers=_NO_STORE
        )

    async def api_view(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self._view), headers=_NO_STORE)

    async def api_jobs(self, request: Request) -> Response:
        report = await run_in_threadpool(self.sources.report)
        return JSONResponse(report, headers=_NO_STORE)

    # --- files, by job id ---------------------------------------------------------------

    def _job(self, request: Request) -> Job | None:
        job_id = request.path_params["job_id"]
        if not _JOB_ID.fullmatch(job_id):
            return None
        return next((job for job in self.jobs() if job.job_id == job_id), None)

    async def thumbnail(self, request: Request) -> Response:
        def find() -> Path | None:
            job = self._job(request)
            return None if job is None else self.files.thumbnail(job)

        path = await run_in_threadpool(find)
        if path is None:
            return PlainTextResponse("no thumbnail for this job\n", 404)
        # A job's source image never changes: the browser may keep its thumbnail.
        headers = {"Cache-Control": "private, max-age=86400"}
        return FileResponse(path, media_type="image/jpeg", headers=headers)

    async def video(self, request: Request) -> Response:
        def find() -> Path | None:
            job = self._job(request)
            return None if job is None else self.files.video(job)

        path = await run_in_threadpool(find)
        if path is None:
            return PlainTextResponse("no video for this job\n", 404)
        # Starlette's FileResponse answers Range requests (206, Content-Range, 416).
        return FileResponse(path, media_type="video/mp4", headers={"Cache-Control": "private"})

    # --- actions ------------------------------------------------------------------------

    def _retry(self, job_id: str) -> tuple[list[str] | None, str]:
        if self.sources.retry is None:
            return None, "retry is not available here"
        with self._retry_lock:
            return self.sources.retry(job_id)

    async def retry(self, request: Request) -> Response:
        wants_json = "application/json" in request.headers.get("accept", "")
        if not same_origin(request.headers):
            return PlainTextResponse("cross-origin request refused\n", 403)
        job = await run_in_threadpool(self._job, request)
        if job is None:
            return PlainTextResponse("no such job\n", 404)
        moved, problem = await run_in_threadpool(self._retry, job.job_id)
        if moved is None:
            log.info("page.retry_refused", job_id=job.job_id, reason=problem)
            if wants_json:
                return JSONResponse({"job_id": job.job_id, "error": problem}, 409)
            text = f"<p>Not retried: {html.escape(problem)}. <a href='/'>Back</a></p>"
            return HTMLResponse(text, 409)
        log.info("page.retried", job_id=job.job_id, inbox=moved)
        if wants_json:
            return JSONResponse({"job_id": job.job_id, "moved": moved})
        return RedirectResponse("/", 303)

    async def webhook(self, request: Request) -> Response:
        """A callback is a hint: its body is never read beyond its size, never trusted."""
        too_large = PlainTextResponse("body too large\n", 413, headers={"Connection": "close"})
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_WEBHOOK_BYTES):
            return too_large
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_WEBHOOK_BYTES:
                return too_large
        token = request.query_params.get("token", "")
        poke = self.sources.poke
        known = bool(token) and poke is not None and poke(token)
        if known:
            return Response(status_code=204)
        return PlainTextResponse("unknown token\n", 404)


def build_app(
    config: Config,
    sources: PageSources,
    *,
    webhook_path: str,
    clock: Callable[[], float] = time.time,
) -> ASGIApp:
    """The ASGI application; see :class:`~seedance_watch.service.http.HealthServer`.

    ``webhook_path`` is the provider's (``ProviderSpec.webhook_path``): open to the
    gateway, each callback checked by its own per-job token.
    """
    r = _Routes(config, sources, clock)
    app = Starlette(
        routes=[
            Route("/healthz", r.healthz, methods=["GET"]),
            Route("/metrics", r.metrics, methods=["GET"]),
            Route("/", r.page, methods=["GET"]),
            Route("/api/jobs", r.api_jobs, methods=["GET"]),
            Route("/api/view", r.api_view, methods=["GET"]),
            Route("/jobs/{job_id}/thumbnail", r.thumbnail, methods=["GET"]),
            Route("/jobs/{job_id}/video", r.video, methods=["GET"]),
            Route("/jobs/{job_id}/retry", r.retry, methods=["POST"]),
            Route(webhook_path, r.webhook, methods=["POST"]),
            Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
        ]
    )
    guard = AccessGuard(
        app,
        token=config.health.token,
        open_paths=frozenset({webhook_path}),
        secure_cookie=config.health.secure_cookie,
    )
    return _SecurityHeaders(guard)
