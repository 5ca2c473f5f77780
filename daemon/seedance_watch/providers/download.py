"""The video download every provider shares: stream, check, fsync.

The video host is not the gateway: no API key is ever sent there, and the URL's
query string (a signature) is never logged.  A download writes to the staging file
it is given, and checks the HTTP status, Content-Length, a non-empty mp4 (``ftyp``
at offset 4) and ``gateway.max_video_bytes`` before it fsyncs; on any failure the
file is removed.  Nothing here retries: the download stage does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from seedance_watch.errors import DownloadFailed, DownloadIncomplete
from seedance_watch.files.fsutil import write_all
from seedance_watch.providers.http import (
    ResponseHook,
    mapped_errors,
    observe,
    parse_retry_after,
    strip_query,
)

__all__ = ["Downloaded", "VideoDownloader"]

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Downloaded:
    """A video written (and fsynced) to the destination file."""

    sha256: str
    size: int


class VideoDownloader:
    """Fetches videos from wherever the gateway put them (redirects followed, no key)."""

    def __init__(
        self,
        *,
        request_timeout: float = 30.0,
        max_connections: int = 20,
        transport: httpx.AsyncBaseTransport | None = None,
        on_response: ResponseHook | None = None,
    ) -> None:
        self._on_response = on_response
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(request_timeout),
            limits=httpx.Limits(max_connections=max_connections),
            follow_redirects=True,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

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
            with mapped_errors("download", shown):
                async with self._client.stream(
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
            observe(self._on_response, "download", "GET", shown, status, time.monotonic() - started)


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
            write_all(fd, chunk)
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


def _fsync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    """Best effort: a failed download must not leave a partial file behind."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
