"""The files the page serves, found by job id only, and the thumbnails made of them.

A request names a job, never a path: the job's record says where its output
(``outbox/``) and its moved inputs (``done/``, ``failed/``) are, and
:func:`contained` accepts such a path only when it stays under its root, names a
regular file, and is reached without following a symbolic link (a link planted
in ``done/`` does not turn the page into a reader of the whole disk).

Thumbnails are small JPEGs made with Pillow on first request and kept in
``<paths.state>/thumbs/JOB_ID.jpg``; a later request serves that file.  They are as
private as the ledger beside them (:mod:`seedance_watch.ledger.modes`).  Only an image
that passed the image checks gets one, made from the very bytes that were checked
(its recorded hash), with the checks' own decoders (``files/images.PILLOW_FORMATS``);
a decompression bomb is refused before it is decoded (docs/design.md, "Routes").
Whatever else a file in ``done/`` or ``failed/`` holds is never decoded.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
from pathlib import Path, PurePosixPath

import structlog
from PIL import Image, ImageOps

from seedance_watch.config import PathsConfig
from seedance_watch.core.failures import AMBIGUOUS_CODES, failure_code, unchanged_since_failure
from seedance_watch.core.jobs import Job, State
from seedance_watch.files.fsutil import atomic_write_bytes, make_dirs
from seedance_watch.files.images import MAX_IMAGE_BYTES, PILLOW_FORMATS
from seedance_watch.ledger.modes import file_mode, folder_mode, tighten
from seedance_watch.service.web.view import RetryAdvice

__all__ = ["THUMBNAIL_SIZE", "JobFiles", "checked_image", "contained"]

log = structlog.get_logger(__name__)

#: The longest side of a thumbnail, in pixels (about 15 KB as a JPEG).
THUMBNAIL_SIZE = 320


def contained(root: Path, rel: str) -> Path | None:
    """``root/rel`` when it is a regular file under ``root`` reached without a
    symbolic link; None otherwise (absolute, ``..``, missing, a link, a folder)."""
    pure = PurePosixPath(rel)
    if pure.is_absolute() or not pure.parts or any(p in (".", "..") for p in pure.parts):
        return None
    try:
        base = root.resolve(strict=True)
    except OSError:
        return None
    current = base
    mode = 0
    for part in pure.parts:
        current = current / part
        try:
            mode = current.lstat().st_mode
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            return None
    if not stat.S_ISREG(mode) or not current.resolve().is_relative_to(base):
        return None
    return current


def _image_input(job: Job) -> str | None:
    if job.inputs:
        return next((i.path for i in job.inputs if i.role == "image"), None)
    return None if job.kind == "text" else job.source


def checked_image(job: Job) -> str | None:
    """The sha256 of the job's image when it passed the image checks, else None.

    Intake records a request's ``content_key`` only once every check of the drop
    passed (``files/drop.examine_drop``), so a job without one (a drop refused at
    intake, an orphan, a link) has no image worth decoding; a text drop has none.
    """
    if job.content_key is None or not job.image_sha256 or _image_input(job) is None:
        return None
    return job.image_sha256


class JobFiles:
    """Where a job's video and source image are now, and its cached thumbnail."""

    def __init__(self, paths: PathsConfig) -> None:
        self.outbox = paths.outbox
        self.roots = {"done": paths.done, "failed": paths.failed}
        self.state = paths.state
        self.thumbs = paths.state / "thumbs"
        # One an older version made readable by all keeps its thumbnails to itself now.
        tighten(self.thumbs, folder_mode(self.state))
        self._lock = threading.Lock()
        self._unreadable: set[str] = set()

    def video(self, job: Job) -> Path | None:
        """The job's mp4 in the outbox (done jobs only)."""
        if job.state is not State.DONE or not job.output:
            return None
        return contained(self.outbox, job.output)

    def source_image(self, job: Job) -> Path | None:
        """The job's source image where it was moved: done/ or failed/."""
        image = _image_input(job)
        for src, dst in job.moved_to:
            if src != image:
                continue
            kind, _, rel = dst.partition("/")
            root = self.roots.get(kind)
            return None if root is None else contained(root, rel)
        return None

    def retryable(self, job: Job) -> bool:
        """A failed job whose inputs still wait in failed/ (``retry`` can move them)."""
        if job.state is not State.FAILED:
            return False
        failed = self.roots["failed"]
        return any(
            dst.startswith("failed/") and contained(failed, dst.partition("/")[2]) is not None
            for _, dst in job.moved_to
        )

    def failed_stat(self, dst: str) -> tuple[int, int] | None:
        """``(size, mtime_ns)`` of the file a job moved to ``failed/...`` (None: gone)."""
        kind, _, rel = dst.partition("/")
        path = contained(self.roots["failed"], rel) if kind == "failed" else None
        if path is None:
            return None
        try:
            st = path.lstat()
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def retry_advice(self, job: Job) -> RetryAdvice:
        """What the page offers a failed job: Retry, Retry after a confirmation (its task
        may be billed), or what to fix first (a retry would fail the same way: the rule
        of :func:`~seedance_watch.core.failures.unchanged_since_failure`)."""
        if not self.retryable(job):
            return RetryAdvice(waiting=False)
        return RetryAdvice(
            waiting=True,
            fix=unchanged_since_failure(job, self.failed_stat),
            ambiguous=failure_code(job) in AMBIGUOUS_CODES,
        )

    def thumbnailed(self, job: Job) -> bool:
        """Whether the page offers the job's thumbnail (its image passed the checks)."""
        return checked_image(job) is not None

    def thumbnail(self, job: Job) -> Path | None:
        """The cached thumbnail of the job's source image, made on first call."""
        sha256 = checked_image(job)
        if sha256 is None:  # also for a thumbnail an older version cached
            return None
        cached = self.thumbs / f"{job.job_id}.jpg"
        if contained(self.thumbs, cached.name) is not None:
            return cached
        with self._lock:  # one maker at a time: two first requests make it once
            if contained(self.thumbs, cached.name) is not None:
                return cached
            if job.job_id in self._unreadable:
                return None
            source = self.source_image(job)
            if source is None:
                return None
            try:
                data = _make_thumbnail(_read_checked(source, sha256))
            except Exception as exc:  # crafted files make decoders raise anything
                self._unreadable.add(job.job_id)
                log.warning(
                    "page.thumbnail_failed",
                    job_id=job.job_id,
                    error=f"{type(exc).__name__}: {exc}",
                )
                return None
            make_dirs(self.thumbs, mode=folder_mode(self.state))
            atomic_write_bytes(cached, data, mode=file_mode(self.state))
            log.debug("page.thumbnail_made", job_id=job.job_id, bytes=len(data))
            return cached


def _read_checked(source: Path, sha256: str) -> bytes:
    """The bytes of ``source`` when they are the ones the checks passed (``sha256``):
    read through one descriptor, no link followed, the size looked at first."""
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_IMAGE_BYTES:
            raise ValueError(f"{source.name} is not the image that passed the checks")
        data = f.read(MAX_IMAGE_BYTES + 1)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"{source.name} is not the image that passed the checks")
    return data


def _make_thumbnail(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as image:
        # Pillow only warns up to twice its pixel limit: refuse before decoding.
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and image.width * image.height > limit:
            raise Image.DecompressionBombError(
                f"{image.width}x{image.height} px is over Pillow's limit of {limit} pixels"
            )
        image.draft("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE))  # JPEG: decode at 1/2..1/8
        upright = ImageOps.exif_transpose(image)
        upright.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        out = io.BytesIO()
        upright.convert("RGB").save(out, format="JPEG", quality=80, optimize=True)
    return out.getvalue()
