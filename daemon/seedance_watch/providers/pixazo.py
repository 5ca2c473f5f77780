"""The Pixazo gateway client: submit, poll and download, one attempt each.

This is the only module that knows httpx.  Every outcome of an HTTP call is
translated here into the exception tree of :mod:`seedance_watch.errors`; the
engine owns scheduling and retries, so nothing here retries or sleeps.

The one subtle case is a submit: every task costs money, so a submit that may
have reached the gateway must never be sent again automatically (SPEC §2).
Submits therefore travel on a fresh connection each (no keep-alive pool), so
that a failure to connect provably means "not sent" (:class:`SubmitNotSent`)
and any failure after the request may have been written means "outcome
unknown" (:class:`SubmitAmbiguous`).  Polls are idempotent and share a pool.

Downloads go to the video host, not the gateway: the API key is never sent
there, and the video URL's query string (a signature) is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol

import httpx
import structlog

from seedance_watch.errors import (
    ConfigError,
    CredentialsRefused,
    DownloadFailed,
    DownloadIncomplete,
    GatewayRejected,
    GatewayUnavailable,
    RateLimited,
    SubmitAmbiguous,
    SubmitNotSent,
    TaskNotFound,
)

__all__ = [
    "POLL_PATH",
    "SUBMIT_PATH",
    "ApiKeyLike",
    "Downloaded",
    "Gateway",
    "Operation",
    "ResponseHook",
    "TaskState",
    "TaskStatus",
    "parse_retry_after",
    "strip_query",
]

log = structlog.get_logger(__name__)

SUBMIT_PATH = "/byteplus/v1/generateImage2VideoTask"
POLL_PATH = "/bytedance-polling/getVideoResult"

Operation = Literal["submit", "poll", "download"]
TaskState = Literal["pending", "succeeded", "failed", "expired", "cancelled"]
#: ``on_response(operation, http_status or None on a transport error, seconds)``.
ResponseHook = Callable[[str, int | None, float], None]

_MAX_MESSAGE = 500
_CHUNK = 64 * 1024

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


class ApiKeyLike(Protocol):
    """A secret that shows its value only when asked (``config.ApiKey``)."""

    def reveal(self) -> str: ...


@dataclass(frozen=True)
class TaskStatus:
    """One poll answer, normalised across the gateway's two dialects."""

    state: TaskState
    raw_status: str
    video_url: str | None
    usage: dict[str, Any] | None
    error_code: str | None
    error_message: str | None


@dataclass(frozen=True)
class Downloaded:
    """A video written (and fsynced) to the destination file."""

    sha256: str
    size: int


def strip_query(url: str) -> str:
    """``url`` without its query string or fragment, safe to log (no signature)."""
    return url.split("?", 1)[0].split("#", 1)[0]


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP-date); None if unusable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


class Gateway:
    """An async client for the Pixazo Seedance 1.0 gateway (SPEC §2).

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
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"gateway.base_url must be an http(s) URL, got {base_url!r}", key="gateway.base_url"
            )
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._on_response = on_response
        self._unknown_statuses: set[str] = set()
        timeout = httpx.Timeout(request_timeout)
        self._poll_client = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections),
            transport=transport,
        )
        # No keep-alive for submits: see the module docstring.
        self._submit_client = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=0),
            headers={"Connection": "close"},
            transport=transport,
        )
        self._download_client = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections),
            follow_redirects=True,
            transport=transport,
        )

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
        for client in (self._submit_client, self._poll_client, self._download_client):
            await client.aclose()

    # --- submit -------------------------------------------------------------------------

    async def submit(self, *, model: str, text: str, image_url: str) -> str:
        """Create one task and return its id; a single attempt, never retried here.

        Raises SubmitNotSent (safe to resend), SubmitAmbiguous (never resend),
        RateLimited, GatewayRejected or CredentialsRefused.
        """
        url = self._base_url + SUBMIT_PATH
        body: dict[str, Any] = {
            "model": model,
            "content": [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": image_url},
            ],
        }
        response = await self._post(self._submit_client, "submit", SUBMIT_PATH, body)
        if response.is_success:
            task_id = _task_id(_json_object(response))
            if task_id is None:
                raise SubmitAmbiguous(
                    f"the gateway answered HTTP {response.status_code} to the submit at {url} "
                    f"without a task id: {self._excerpt(response)}",
                    http_status=response.status_code,
                )
            return task_id
        if response.status_code == 404:
            raise GatewayRejected(
                f"the gateway answered 404 Not Found for POST {url} with model {model!r}: "
                f"{self._error_message(response)}",
                hint="check gateway.base_url and the model name",
                http_status=404,
            )
        raise self._status_error("submit", response)

    # --- poll ---------------------------------------------------------------------------

    async def poll(self, task_id: str) -> TaskStatus:
        """Ask once for a task's status.

        Raises GatewayUnavailable (retry the poll), RateLimited, TaskNotFound (404),
        GatewayRejected or CredentialsRefused.
        """
        response = await self._post(self._poll_client, "poll", POLL_PATH, {"task_id": task_id})
        if response.status_code == 404:
            raise TaskNotFound(
                f"the gateway does not know task {task_id} (HTTP 404): "
                f"{self._error_message(response)}",
                task_id=task_id,
                http_status=404,
            )
        if not response.is_success:
            raise self._status_error("poll", response)
        data = _json_object(response)
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
            # Still pending until the task deadline (SPEC §2); say so once per spelling.
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
        return TaskStatus(
            state=state,
            raw_status=raw,
            video_url=video_url,
            usage=usage if isinstance(usage, dict) else None,
            error_code=code,
            error_message=message,
        )

    # --- download -----------------------------------------------------------------------

    async def download(self, url: str, dest: Path, *, max_bytes: int) -> Downloaded:
        """Stream the video at ``url`` into ``dest`` (created/truncated, fsynced).

        Checks HTTP 200, Content-Length, a non-empty mp4 (``ftyp`` at offset 4) and
        ``max_bytes``.  Raises DownloadIncomplete (retry) or DownloadFailed (the URL
        is gone); on any failure ``dest`` is removed.
        """
        shown = strip_query(url)
        started = time.monotonic()
        status: int | None = None
        try:
            with _mapped_errors("download", shown):
                async with self._download_client.stream(
                    "GET", url, headers={"Accept-Encoding": "identity"}
                ) as response:
                    status = response.status_code
                    _check_download_status(response, shown)
                    expected = _content_length(response)
                    if expected is not None and expected > max_bytes:
                        raise DownloadIncomplete(
                            f"the video at {shown} is {expected} bytes, "
                            f"over gateway.max_video_bytes ({max_bytes})",
                            http_status=status,
                        )
                    return await _stream_to_file(response, dest, max_bytes, expected, shown)
        except BaseException:
            _remove_quietly(dest)
            raise
        finally:
            self._observe("download", "GET", shown, status, time.monotonic() - started)

    # --- shared -------------------------------------------------------------------------

    async def _post(
        self, client: httpx.AsyncClient, op: Operation, path: str, body: dict[str, Any]
    ) -> httpx.Response:
        url = self._base_url + path
        headers = {
            "Ocp-Apim-Subscription-Key": self._api_key.reveal(),
            "Content-Type": "application/json",
            "Cache-Control": "no-cache",
        }
        started = time.monotonic()
        status: int | None = None
        try:
            with _mapped_errors(op, url):
                response = await client.post(url, json=body, headers=headers)
            status = response.status_code
            return response
        finally:
            self._observe(op, "POST", path, status, time.monotonic() - started)

    def _observe(
        self, op: Operation, method: str, path: str, status: int | None, seconds: float
    ) -> None:
        log.debug(
            "gateway.request",
            op=op,
            method=method,
            path=path,
            status=status,
            seconds=round(seconds, 4),
        )
        if self._on_response is not None:
            try:
                self._on_response(op, status, seconds)
            except Exception:
                # A metrics bug must not turn a created (billed) task into an error.
                log.exception("gateway.response_hook_failed", op=op)

    def _status_error(self, op: Operation, response: httpx.Response) -> Exception:
        """The error for a non-2xx answer (404 is handled by the caller)."""
        status = response.status_code
        message = self._error_message(response)
        if status in (401, 402, 403):
            what = {
                401: "refused the API key",
                402: "refused the request: the account has no credit left",
                403: "refused access: the API key may not use this endpoint or model",
            }[status]
            return CredentialsRefused(
                f"the gateway {what} (HTTP {status}): {message}", http_status=status
            )
        if status == 429:
            return RateLimited(
                f"the gateway is rate limiting us (HTTP 429): {message}",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                http_status=429,
            )
        if status >= 500:
            cls = SubmitNotSent if op == "submit" else GatewayUnavailable
            return cls(
                f"the gateway failed the {op} (HTTP {status}): {message}",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                http_status=status,
            )
        return GatewayRejected(
            f"the gateway rejected the {op} (HTTP {status}): {message}", http_status=status
        )

    def _error_message(self, response: httpx.Response) -> str:
        """The gateway's own words from an error body, truncated, key redacted."""
        message: str | None = None
        data = _json_object(response)
        if data is not None:
            code, text = _error_parts(data.get("error"))
            message = ": ".join(p for p in (code, text) if p) or None
            if message is None and isinstance(data.get("message"), str):
                message = data["message"]
        if not message:
            return self._excerpt(response)
        return self._redact(message)

    def _excerpt(self, response: httpx.Response) -> str:
        text = response.text.strip() if response.content else ""
        return self._redact(
            " ".join(text.split())
            or response.reason_phrase
            or httpx.codes.get_reason_phrase(response.status_code)
            or "(empty body)"
        )

    def _redact(self, text: str) -> str:
        key = self._api_key.reveal()
        if key:
            text = text.replace(key, "[redacted]")
        return text[:_MAX_MESSAGE]


# --- helpers --------------------------------------------------------------------------------


@contextlib.contextmanager
def _mapped_errors(op: Operation, target: str) -> Iterator[None]:
    """Translate httpx's request errors for ``op`` into our tree, in one place."""
    try:
        yield
    except httpx.UnsupportedProtocol as exc:
        if op == "download":
            raise DownloadFailed(f"cannot fetch the video at {target}: {exc}") from exc
        raise GatewayRejected(
            f"cannot call {target}: {exc}", hint="check gateway.base_url"
        ) from exc
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        # Raised before any byte of the request left: provably not sent.
        message = f"could not connect to {target}: {_describe(exc)}"
        if op == "submit":
            raise SubmitNotSent(message) from exc
        if op == "poll":
            raise GatewayUnavailable(message) from exc
        raise DownloadIncomplete(message) from exc
    except httpx.RequestError as exc:
        if op == "submit":
            raise SubmitAmbiguous(
                f"the submit to {target} may have reached the gateway, but no answer "
                f"came back: {_describe(exc)}"
            ) from exc
        if op == "poll":
            raise GatewayUnavailable(f"the poll at {target} failed: {_describe(exc)}") from exc
        raise DownloadIncomplete(f"the download from {target} broke off: {_describe(exc)}") from exc


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


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


def _check_download_status(response: httpx.Response, shown: str) -> None:
    status = response.status_code
    if status == 200:
        return
    message = f"the video host answered HTTP {status} for {shown}"
    if 400 <= status < 500 and status not in (408, 429):
        raise DownloadFailed(message, http_status=status)
    raise DownloadIncomplete(
        message,
        http_status=status,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


async def _stream_to_file(
    response: httpx.Response, dest: Path, max_bytes: int, expected: int | None, shown: str
) -> Downloaded:
    status = response.status_code
    digest = hashlib.sha256()
    size = 0
    head = b""
    fd = os.open(dest, os.O_CREAT | os.O_TRUNC | os.O_WRONLY | os.O_CLOEXEC, 0o644)
    try:
        async for chunk in response.aiter_bytes(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise DownloadIncomplete(
                    f"the video at {shown} is over gateway.max_video_bytes ({max_bytes})",
                    http_status=status,
                )
            if len(head) < 8:
                head += chunk[: 8 - len(head)]
                if len(head) == 8 and head[4:8] != b"ftyp":
                    raise DownloadIncomplete(
                        f"the body at {shown} is not an mp4", http_status=status
                    )
            digest.update(chunk)
            _write_all(fd, chunk)
        if expected is not None and size != expected:
            raise DownloadIncomplete(
                f"the video at {shown} has {size} bytes, Content-Length said {expected}",
                http_status=status,
            )
        if size == 0:
            raise DownloadIncomplete(f"the video at {shown} is empty", http_status=status)
        if len(head) < 8:
            raise DownloadIncomplete(f"the body at {shown} is not an mp4", http_status=status)
        # The thread owns the descriptor from here: a cancellation cannot close it
        # under a running fsync.
        owned, fd = fd, -1
        await asyncio.to_thread(_fsync_and_close, owned)
    finally:
        if fd >= 0:
            os.close(fd)
    return Downloaded(sha256=digest.hexdigest(), size=size)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    """Best effort: a failed download must not leave a partial file behind."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
