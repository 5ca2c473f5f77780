"""The Pixazo gateway: the provider that fronts ByteDance's Seedance models.

What is Pixazo's here, and nowhere else: its name, where its API key is looked for,
its base URL, its authentication header, its endpoints and request bodies (from the
model table's rows), its two submit answers, its status words, its error bodies, and
its webhook path.  The money-safe HTTP rules every provider shares (a fresh
connection per submit, which failures provably did not send, 502/504 ambiguity, the
key to one origin only, the one error mapping) are :mod:`.http`'s.

The gateway answers a submit in one of two dialects: the first documentation's
``{"id": "cgt-…"}`` (``legacy``: polled with ``POST /bytedance-polling/getVideoResult``)
or today's envelope ``{"request_id", "status", "polling_url"}`` (``envelope``: polled
with ``GET polling_url``).  Both are a created, billed task; the :class:`TaskRef` says
how to poll it, also after a restart.  A ``polling_url`` on another origin than
``gateway.base_url`` is never called (the key would go with it): the task is polled
at ``{base_url}/v2/requests/status/{id}`` instead.

Nothing here retries or sleeps: the engine owns scheduling and retries.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import structlog

from seedance_watch.core.models import MODELS, ModelTable
from seedance_watch.core.options import GenerationOptions
from seedance_watch.errors import (
    ConfigError,
    GatewayRejected,
    GatewayUnavailable,
    JobError,
    SubmitAmbiguous,
    TaskCancelled,
    TaskExpired,
    TaskFailed,
    TaskNotFound,
)
from seedance_watch.providers.base import (
    ApiKeyLike,
    GenerationRequest,
    KeySources,
    Media,
    ProviderSpec,
    TaskRef,
    TaskState,
    TaskStatus,
)
from seedance_watch.providers.download import Downloaded, VideoDownloader
from seedance_watch.providers.http import (
    KeyedClient,
    ResponseHook,
    error_text,
    json_object,
    status_error,
    strip_query,
)

__all__ = [
    "ENVELOPE",
    "LEGACY",
    "POLL_PATH",
    "PROVIDER",
    "STATUS_PATH",
    "SUBMIT_PATH",
    "SUBMIT_PATHS",
    "ApiKeyLike",
    "Downloaded",
    "Gateway",
    "TaskState",
    "TaskStatus",
    "submit_body",
]

log = structlog.get_logger(__name__)

SUBMIT_PATH = "/byteplus/v1/generateImage2VideoTask"
#: The Seedance 1.0 submit endpoint of each kind, for a model the table does not know.
SUBMIT_PATHS = {
    "image": SUBMIT_PATH,
    "text": "/byteplus/v1/generateVideoTask",
}
#: The role of each kind of image in a Seedance 2 body.
SEEDANCE_2_ROLES = {
    "image": "first_frame",
    "last_frame": "last_frame",
    "reference": "reference_image",
}
#: Words of a refusal that says the model itself is gone (400, 404 or 410).
_MODEL_GONE = re.compile(
    r"not (?:be )?(?:available|found|supported|exist)|does not exist|no longer|unavailable|"
    r"retired|deprecated|switched off|decommission|model ?not ?found",
    re.IGNORECASE,
)
MODELS_HINT = (
    "The gateway does not serve this model (any more): check the model name; "
    "`seedance-watch models` lists the models of today. Set model: in the sidecar (or "
    "the gateway.*model keys) to a live one, then retry the job."
)
POLL_PATH = "/bytedance-polling/getVideoResult"
#: Where an envelope task is polled when its ``polling_url`` is not ours to call.
STATUS_PATH = "/v2/requests/status/"
#: The request id the free key check asks about (no task has it).
KEY_CHECK_ID = "seedance-watch-key-check"
LEGACY = "legacy"
ENVELOPE = "envelope"

_MAX_MESSAGE = 500

# BytePlus ModelArk spellings, Pixazo's newer upper-case ones, and a few
# pending-like words other queues use; matched case-insensitively.
_STATUS_STATES: dict[str, TaskState] = {
    "queued": "pending",
    "running": "pending",
    "pending": "pending",
    "processing": "pending",
    "in_progress": "pending",
    "in_queue": "pending",
    "submitted": "pending",
    "created": "pending",
    "waiting": "pending",
    "succeeded": "succeeded",
    "success": "succeeded",
    "completed": "succeeded",
    "failed": "failed",
    "error": "failed",
    "expired": "expired",
    "cancelled": "cancelled",
    "canceled": "cancelled",
}


class Gateway:
    """An async client for the Pixazo gateway (docs/design.md, "The gateway protocol"): a
    VideoProvider.

    ``transport`` replaces the network for every call (tests); ``on_response``
    is told about every HTTP exchange, so the engine can count statuses.
    """

    def __init__(
        self,
        base_url: str,
        api_key: ApiKeyLike,
        *,
        request_timeout: float = 30.0,
        max_connections: int = 20,
        transport: httpx.AsyncBaseTransport | None = None,
        on_response: ResponseHook | None = None,
        downloader: VideoDownloader | None = None,
        models: ModelTable = MODELS,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"gateway.base_url must be an http(s) URL, got {base_url!r}", key="gateway.base_url"
            )
        self.models = models
        self._foreign_logged = False
        self._api_key = api_key
        self._unknown_statuses: set[str] = set()
        self._http = KeyedClient(
            base_url,
            self._headers,
            request_timeout=request_timeout,
            max_connections=max_connections,
            transport=transport,
            on_response=on_response,
        )
        self._base_url = self._http.base_url
        self._downloader = downloader or VideoDownloader(
            request_timeout=request_timeout,
            max_connections=max_connections,
            transport=transport,
            on_response=on_response,
        )

    def _headers(self) -> dict[str, str]:
        return {
            "Ocp-Apim-Subscription-Key": self._api_key.reveal(),
            "Content-Type": "application/json",
            "Cache-Control": "no-cache",
        }

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection pool."""
        await self._http.aclose()
        await self._downloader.aclose()

    async def download(self, url: str, dest: Path, *, max_bytes: int) -> Downloaded:
        """Fetch a video (no key sent): see :class:`~.download.VideoDownloader`."""
        return await self._downloader.download(url, dest, max_bytes=max_bytes)

    # --- submit -------------------------------------------------------------------------

    name = "pixazo"

    async def submit(self, *, model: str, text: str, image_url: str) -> str:
        """Create one image-to-video task and return its id (see :meth:`create_task`)."""
        ref = await self.create_task(
            GenerationRequest(kind="image", model=model, text=text), [("image", image_url)]
        )
        return ref.task_id

    def submit_path(self, request: GenerationRequest) -> str:
        """The endpoint of ``request``: its model's row, or the Seedance 1.0 path of its
        kind for a model the table does not know."""
        row = self.models.get(request.model)
        if row is not None and request.kind in row.endpoints:
            return row.endpoints[request.kind]
        if request.kind not in SUBMIT_PATHS:
            raise GatewayRejected(
                f"no endpoint for a {request.kind} drop with model {request.model!r}",
                hint=MODELS_HINT,
            )
        return SUBMIT_PATHS[request.kind]

    def family(self, model: str) -> str:
        """The request dialect of ``model`` (Seedance 1.0 for a model the table lacks)."""
        row = self.models.get(model)
        return "1.0" if row is None else row.family

    async def create_task(
        self,
        request: GenerationRequest,
        media: Media,
        *,
        webhook_url: str | None = None,
    ) -> TaskRef:
        """Create one task; a single attempt, never retried here.

        Raises SubmitNotSent (safe to resend), SubmitAmbiguous (never resend),
        RateLimited, GatewayRejected or CredentialsRefused.
        """
        path = self.submit_path(request)
        url = self._base_url + path
        body = submit_body(request, media, family=self.family(request.model))
        extra = {"X-Webhook-URL": webhook_url} if webhook_url else None
        response = await self._http.send(
            "submit", "POST", url, shown=path, body=body, extra_headers=extra
        )
        if response.is_success:
            ref = self._task_ref(json_object(response))
            if ref is None:
                raise SubmitAmbiguous(
                    f"the gateway answered HTTP {response.status_code} to the submit at {url} "
                    f"with neither a task id nor a request id: {self._excerpt(response)}",
                    http_status=response.status_code,
                )
            return ref
        status = response.status_code
        if status in (400, 404, 410):
            message = self._error_message(response)
            gone = status == 410 or (
                "model" in message.lower() and bool(_MODEL_GONE.search(message))
            )
            if status == 404 or gone:
                what = f"HTTP {status} {httpx.codes.get_reason_phrase(status)}"
                raise GatewayRejected(
                    f"the gateway answered {what} for POST {url} with model "
                    f"{request.model!r}: {message}",
                    hint=MODELS_HINT if gone else "check gateway.base_url and the model name",
                    http_status=status,
                )
        raise status_error("submit", response, self._error_message(response))

    def _task_ref(self, data: dict[str, Any] | None) -> TaskRef | None:
        """The task reference of a 2xx submit answer, in either dialect, or None."""
        if data is None:
            return None
        request_id = data.get("request_id")
        if isinstance(request_id, str) and request_id.strip():
            polling_url = data.get("polling_url")
            poll_url = polling_url.strip() if isinstance(polling_url, str) else None
            if poll_url and not self._http.is_ours(poll_url):
                self._log_foreign(poll_url)
                poll_url = None
            return TaskRef(task_id=request_id.strip(), poll_url=poll_url or None, dialect=ENVELOPE)
        task_id = _task_id(data)
        return None if task_id is None else TaskRef(task_id=task_id, dialect=LEGACY)

    def _log_foreign(self, url: str) -> None:
        if not self._foreign_logged:
            self._foreign_logged = True
            log.warning(
                "gateway.foreign_polling_url",
                polling_url=strip_query(url),
                base_url=self._base_url,
                detail="the key goes to gateway.base_url only; polling there instead",
            )

    # --- the free key check -----------------------------------------------------------

    async def check_key(self) -> bool:
        """Ask for the status of a request that does not exist: a 404 from the gateway
        means it accepted the key (nothing is created, nothing billed); 401, 402 or 403
        that it does not."""
        url = self._base_url + STATUS_PATH + KEY_CHECK_ID
        response = await self._http.send("poll", "GET", url, shown=STATUS_PATH + "{id}")
        if response.is_success or (response.status_code == 404 and json_object(response)):
            return True
        raise status_error("poll", response, self._error_message(response))

    # --- poll ---------------------------------------------------------------------------

    async def poll(self, task: str | TaskRef) -> TaskStatus:
        """Ask once for a task's status (a bare id is a legacy task)."""
        return await self.task_status(task if isinstance(task, TaskRef) else TaskRef(task))

    async def task_status(self, ref: TaskRef) -> TaskStatus:
        """Ask once for a task's status, the way it was submitted.

        Raises GatewayUnavailable (retry the poll), RateLimited, TaskNotFound (404),
        GatewayRejected or CredentialsRefused.
        """
        task_id = ref.task_id
        if ref.dialect == ENVELOPE:
            url = ref.poll_url
            if url is None or not self._http.is_ours(url):
                if url is not None:
                    self._log_foreign(url)
                url = self._base_url + STATUS_PATH + task_id
            response = await self._http.send("poll", "GET", url, shown=STATUS_PATH + "{id}")
        else:
            url = self._base_url + POLL_PATH
            response = await self._http.send(
                "poll", "POST", url, shown=POLL_PATH, body={"task_id": task_id}
            )
        if response.status_code == 404:
            raise TaskNotFound(
                f"the gateway does not know task {task_id} (HTTP 404): "
                f"{self._error_message(response)}",
                task_id=task_id,
                http_status=404,
            )
        if not response.is_success:
            raise status_error("poll", response, self._error_message(response))
        data = json_object(response)
        if data is None:
            raise GatewayUnavailable(
                f"the poll answer for task {task_id} is not a JSON object: "
                f"{self._excerpt(response)}",
                http_status=response.status_code,
            )
        return self._task_status(task_id, data)

    def _task_status(self, task_id: str, data: dict[str, Any]) -> TaskStatus:
        if "status" not in data and isinstance(data.get("data"), dict):
            data = data["data"]
        raw = data.get("status")
        if not isinstance(raw, str) or not raw.strip():
            raise GatewayUnavailable(f"the poll answer for task {task_id} has no status")
        spelling = raw.strip().lower()
        state = _STATUS_STATES.get(spelling)
        if state is None:
            # Still pending until the task deadline (docs/design.md, "The gateway protocol"); say
            # so once per spelling.
            state = "pending"
            if spelling not in self._unknown_statuses:
                self._unknown_statuses.add(spelling)
                log.warning("task.unknown_status", task_id=task_id, status=raw)
        video_url = _video_url(data)
        if state == "succeeded" and video_url is None:
            raise GatewayUnavailable(
                f"task {task_id} is {raw} but the poll answer has no video URL"
            )
        usage = data.get("usage")
        code, message = _error_parts(data.get("error"))
        if state == "failed" and code is not None and "expire" in code.lower():
            state = "expired"  # e.g. {"code": "TaskExpired"}: it never ran
        return TaskStatus(
            state=state,
            raw_status=raw,
            video_url=video_url,
            usage=usage if isinstance(usage, dict) else None,
            error_code=code,
            error_message=message,
            error=_task_error(task_id, state, code, message),
        )

    # --- shared -------------------------------------------------------------------------

    def _error_message(self, response: httpx.Response) -> str:
        """The gateway's own words from an error body, truncated, key redacted."""
        return error_text(response, self._redact)

    def _excerpt(self, response: httpx.Response) -> str:
        text = response.text.strip() if response.content else ""
        return self._redact(" ".join(text.split()) or "(empty body)")[:_MAX_MESSAGE]

    def _redact(self, text: str) -> str:
        key = self._api_key.reveal()
        return text.replace(key, "[redacted]") if key else text


# --- helpers --------------------------------------------------------------------------------


def submit_body(request: GenerationRequest, media: Media, *, family: str = "1.0") -> dict[str, Any]:
    """The exact JSON body of a submit (docs/design.md, "The gateway's requests").

    Seedance 1.0: the seed's dialect -- ``{"model", "content": [text, image_url as a
    plain string]}`` for an image drop, ``{"model", "text"}`` for a text drop; the
    options are text commands inside ``text``.  Seedance 2: no ``model`` key (the
    endpoint names it), the prompt alone in the text item, each image an object
    with its role, and the options set as top-level keys (``duration: auto`` as -1).
    """
    if family == "2":
        content: list[dict[str, Any]] = [{"type": "text", "text": request.text}]
        content.extend(
            {"type": "image_url", "image_url": {"url": url}, "role": SEEDANCE_2_ROLES[role]}
            for role, url in media
        )
        options = GenerationOptions.model_validate(dict(request.options)).body_keys()
        return {"content": content, **options}
    if request.kind == "text":
        return {"model": request.model, "text": request.text}
    (image,) = (url for role, url in media if role == "image")
    return {
        "model": request.model,
        "content": [
            {"type": "text", "text": request.text},
            {"type": "image_url", "image_url": image},
        ],
    }


def _task_error(
    task_id: str, state: TaskState, code: str | None, message: str | None
) -> JobError | None:
    """The job error of a task that ended badly, with the gateway's own words."""
    detail = ": ".join(p for p in (code, message) if p)
    said = f" ({detail})." if detail else "."
    if state == "failed":
        return TaskFailed(f"The gateway reports task {task_id} failed{said}", task_id=task_id)
    if state == "expired":
        return TaskExpired(f"Task {task_id} expired before it ran{said}", task_id=task_id)
    if state == "cancelled":
        return TaskCancelled(f"Task {task_id} was cancelled{said}", task_id=task_id)
    return None


def _task_id(data: dict[str, Any] | None) -> str | None:
    if data is None:
        return None
    for holder in (data, data.get("data")):
        if isinstance(holder, dict):
            for key in ("id", "task_id"):
                value = holder.get(key)
                if isinstance(value, str) and value.strip():
                    return value.strip()
    return None


def _video_url(data: dict[str, Any]) -> str | None:
    content, output = data.get("content"), data.get("output")
    candidates = [
        content.get("video_url") if isinstance(content, dict) else None,
        output.get("media_url") if isinstance(output, dict) else None,
        data.get("video_url"),
    ]
    for value in candidates:
        if isinstance(value, list):
            value = next((v for v in value if isinstance(v, str)), None)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _error_parts(error: object) -> tuple[str | None, str | None]:
    """``(code, message)`` from ``{"code", "message"}`` or a plain string."""
    if isinstance(error, str):
        return None, error[:_MAX_MESSAGE] or None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        return (
            str(code)[:_MAX_MESSAGE] if code not in (None, "") else None,
            str(message)[:_MAX_MESSAGE] if message not in (None, "") else None,
        )
    return None, None


#: Pixazo in the registry (``gateway.provider: pixazo``, the default).
PROVIDER = ProviderSpec(
    name="pixazo",
    base_url="https://gateway.pixazo.ai",
    keys=KeySources(
        provider="Pixazo",
        credential="pixazo-api-key",
        file_env="PIXAZO_API_KEY_FILE",
        env="PIXAZO_API_KEY",
        home=".pixazo/api-key",
    ),
    make=Gateway,
    models=MODELS,
)
