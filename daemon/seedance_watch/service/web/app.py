"""The routes of ``health.listen`` as one Starlette application.

=============================  =====================================================
``GET  /healthz``              200 healthy, 503 not (open); ``check()``'s details to the admitted
``GET  /metrics``              Prometheus text
``GET  /``                     the status page (server-side rendered first view)
``GET  /api/jobs``             exactly ``seedance-watch status --json``
``GET  /api/view``             the page's content (:func:`.view.build_view`), for its script
``GET  /jobs/{id}/thumbnail``  a small JPEG of the job's source image (cached)
``GET  /jobs/{id}/video``      the job's mp4 from the outbox, with Range requests
``POST /jobs/{id}/retry``      ``seedance-watch retry ID`` (same-origin only; ``confirm=yes``
                               for a task that may be billed; refused while a
                               failure would repeat as is)
``POST /webhooks/<provider>``  a gateway callback: ``?token=`` pokes its job (open)
``GET  /static/...``           the page's script and style sheet
=============================  =====================================================

Access (the token, the cookie, the loopback ``Host``) is :mod:`.access`.  Blocking
work (the ledger probe, reading files, moving inputs) runs in worker threads, so
the server's own event loop keeps answering.  JSON answers are ASCII (``\\u``
escapes), as ``status --json`` prints them: a file name that is not UTF-8 is data,
never a reason to fail.  On a shared store whose database is out of reach, the page
shows this host's own jobs and says why; ``/api/jobs`` answers 503.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
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
from seedance_watch.core.jobs import Job, State
from seedance_watch.core.text import printable
from seedance_watch.errors import StoreUnavailable
from seedance_watch.ledger.base import HostLease
from seedance_watch.service.web.access import Access, AccessGuard, same_origin
from seedance_watch.service.web.files import JobFiles
from seedance_watch.service.web.view import build_view

__all__ = [
    "CONFIRM_FIELD",
    "CONFIRM_VALUE",
    "MAX_WEBHOOK_BYTES",
    "Check",
    "PageSources",
    "build_app",
]

log = structlog.get_logger(__name__)

MAX_WEBHOOK_BYTES = 64 * 1024
#: A retry's form body is a field or two.
MAX_FORM_BYTES = 4096
#: The form field a retry of a job whose task may be billed must carry (the page's
#: "Retry anyway" button sends it; ``seedance-watch retry --include-ambiguous``).
CONFIRM_FIELD = "confirm"
CONFIRM_VALUE = "yes"
#: How long the page's last read of the jobs serves file requests (thumbnails, videos).
JOBS_FRESH_SECONDS = 2.0

#: ``check()`` returns ``(healthy, body)``; the body is served as JSON.
Check = Callable[[], tuple[bool, Mapping[str, Any]]]


def _nothing() -> None:
    return None


def _empty_report() -> dict[str, Any]:
    return {"counts": {}, "jobs": [], "daemon": None}


def _no_owners() -> Mapping[str, str]:
    return {}


class _AsciiJSON(JSONResponse):
    """JSON as ``status --json`` prints it: ASCII, so any name encodes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


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
    #: ``seedance-watch retry JOB_ID`` (with ``--include-ambiguous`` when the second
    #: argument is True): the inbox names moved, or why not.
    retry: Callable[[str, bool], tuple[list[str] | None, str]] | None = None
    #: The learned task time, seconds.
    task_eta: Callable[[], float | None] = _nothing
    #: Today's spend against the caps.
    budget: Callable[[], Mapping[str, Any] | None] = _nothing
    #: A webhook callback's token: True when it names a job.
    poke: Callable[[str], bool] | None = None
    #: A shared store's hosts (None: a store of one host) and each job's host, read
    #: through the store's :class:`~seedance_watch.ledger.base.JobReader`.
    hosts: Callable[[], Sequence[HostLease] | None] = _nothing
    owners: Callable[[], Mapping[str, str]] = _no_owners
    #: This daemon's host name in a shared store (None: a store of one host).
    host: str | None = None
    #: The jobs to show when ``jobs`` cannot be read (the shared store's database is out
    #: of reach): this host's own records, as its daemon holds them.
    local_jobs: Callable[[], Sequence[Job]] | None = None


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
        self._jobs_lock = threading.Lock()
        self._jobs_by_id: tuple[dict[str, Job], float] = ({}, -JOBS_FRESH_SECONDS)

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

    def _read_jobs(
        self,
    ) -> tuple[Sequence[Job], Sequence[HostLease] | None, Mapping[str, str], str]:
        """The jobs, the hosts and each job's host, and why they are fewer than usual."""
        try:
            jobs = self.jobs()
            hosts = self.sources.hosts()
            owners = self.sources.owners() if hosts is not None else {}
            problem = ""
        except StoreUnavailable as exc:
            if self.sources.local_jobs is None:
                raise
            jobs, hosts, owners = self.sources.local_jobs(), None, {}
            problem = (
                f"The database cannot be reached ({exc.message}): this page shows only "
                "this host's jobs, as its daemon holds them."
            )
        with self._jobs_lock:
            self._jobs_by_id = ({job.job_id: job for job in jobs}, time.monotonic())
        return jobs, hosts, owners, problem

    def _view(self) -> dict[str, Any]:
        jobs, hosts, owners, problem = self._read_jobs()
        view = build_view(
            jobs,
            now=self.clock(),
            task_eta=self.sources.task_eta(),
            budget=self.sources.budget(),
            daemon=self.sources.daemon(),
            advice=self.files.retry_advice,
            thumbnailed=self.files.thumbnailed,
            hosts=hosts,
            owners=owners,
            host=self.sources.host,
            problem=problem,
        )
        view["shared"] = self.sources.host is not None
        return view

    async def page(self, request: Request) -> Response:
        view = await run_in_threadpool(self._view)
        return self.templates.TemplateResponse(
            request, "page.html", {"view": view}, headers=_NO_STORE
        )

    async def api_view(self, request: Request) -> Response:
        return _AsciiJSON(await run_in_threadpool(self._view), headers=_NO_STORE)

    async def api_jobs(self, request: Request) -> Response:
        try:
            report = await run_in_threadpool(self.sources.report)
        except StoreUnavailable as exc:
            error = f"the database cannot be reached: {exc.message}"
            return _AsciiJSON({"error": error}, 503, headers=_NO_STORE)
        return _AsciiJSON(report, headers=_NO_STORE)

    # --- files, by job id ---------------------------------------------------------------

    def _job(self, request: Request) -> Job | None:
        """The job the request names: from the page's last read of the jobs when it is
        fresh (a page's thumbnails and videos do not each read every job again)."""
        job_id = request.path_params["job_id"]
        if not _JOB_ID.fullmatch(job_id):
            return None
        with self._jobs_lock:
            known, read_at = self._jobs_by_id
        if time.monotonic() - read_at > JOBS_FRESH_SECONDS or job_id not in known:
            known = {job.job_id: job for job in self._read_jobs()[0]}
        return known.get(job_id)

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

    def _retry(self, job_id: str, include_ambiguous: bool) -> tuple[list[str] | None, str]:
        if self.sources.retry is None:
            return None, "retry is not available here"
        with self._retry_lock:
            return self.sources.retry(job_id, include_ambiguous)

    def _refusal(self, job: Job, confirmed: bool) -> tuple[str, bool] | None:
        """Why the page does not retry ``job`` now, and whether a confirmation would
        (the same rules that shape its card: :meth:`.files.JobFiles.retry_advice`)."""
        if job.state is not State.FAILED:
            return None  # ``retry`` itself says why not
        advice = self.files.retry_advice(job)
        if advice.waiting and advice.fix is not None:
            return (
                f"nothing changed in failed/ since it failed, so it would fail the same way: "
                f"first {advice.fix}, then retry (if the config changed instead: "
                f"seedance-watch retry {job.job_id})",
                False,
            )
        if advice.ambiguous and not confirmed:
            return (
                "its task may exist at the gateway and be billed: a retry would pay again; "
                f"check the gateway's dashboard first, then confirm ({CONFIRM_FIELD}="
                f"{CONFIRM_VALUE})",
                True,
            )
        return None

    async def retry(self, request: Request) -> Response:
        wants_json = "application/json" in request.headers.get("accept", "")
        if not same_origin(request.headers):
            return PlainTextResponse("cross-origin request refused\n", 403)
        form = await _form(request)
        if form is None:
            return PlainTextResponse("a retry's form is a few bytes\n", 413)
        job = await run_in_threadpool(self._job, request)
        if job is None:
            return PlainTextResponse("no such job\n", 404)
        confirmed = form.get(CONFIRM_FIELD) == CONFIRM_VALUE
        refusal = await run_in_threadpool(self._refusal, job, confirmed)
        if refusal is not None:
            problem, confirmable = refusal
            moved = None
        else:
            confirmable = False
            moved, problem = await run_in_threadpool(self._retry, job.job_id, confirmed)
        if moved is None:
            log.info("page.retry_refused", job_id=job.job_id, reason=problem)
            if wants_json:
                return _AsciiJSON({"job_id": job.job_id, "error": problem}, 409)
            context = {
                "job_id": job.job_id,
                "source": printable(job.source),
                "problem": printable(problem),
                "confirm_url": f"/jobs/{job.job_id}/retry" if confirmable else "",
                "confirm_field": CONFIRM_FIELD,
                "confirm_value": CONFIRM_VALUE,
            }
            return self.templates.TemplateResponse(
                request, "refused.html", context, status_code=409, headers=_NO_STORE
            )
        log.info("page.retried", job_id=job.job_id, inbox=moved, confirmed=confirmed)
        if wants_json:
            return _AsciiJSON({"job_id": job.job_id, "moved": moved})
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


async def _form(request: Request) -> dict[str, str] | None:
    """A small url-encoded form body as a dict (last value wins); None when too large."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    fields = urllib.parse.parse_qsl(body.decode("latin-1"), keep_blank_values=True)
    return dict(fields)


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
