"""Turning a ready pair into a job: hashing, validation, the effective request.

Runs in a worker thread (it reads and hashes files); returns the job record and,
for an invalid drop, the error it fails with.  No ledger and no network here.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

from . import errors as E
from .jobs import Job, State, content_key, make_job_id
from .options import GenerationOptions
from .sidecar import build_request, check_image, parse_sidecar

__all__ = ["Drop", "bare_job_id", "examine_drop", "read_nofollow"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Drop:
    job: Job
    error: E.JobError | None


def read_nofollow(path: Path, *, max_bytes: int | None = None) -> bytes:
    """Read a file without following a symlink (a link raises ``UnsafePath``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the last component is a symlink
            raise E.UnsafePath(f"{path.name} is a symbolic link; links are not followed.") from exc
        raise
    with os.fdopen(fd, "rb") as f:
        return f.read() if max_bytes is None else f.read(max_bytes)


def _hash_file(path: Path) -> tuple[str, int]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    h = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest(), st.st_ctime_ns


def examine_drop(
    inbox: Path,
    image_rel: str,
    sidecar_rel: str,
    *,
    defaults: GenerationOptions,
    default_model: str,
    now: float,
) -> Drop:
    """Hash and validate one pair; the job id is derived from what was dropped."""
    try:
        sidecar_bytes = read_nofollow(inbox / sidecar_rel, max_bytes=1 << 20)
        image_sha, ctime_ns = _hash_file(inbox / image_rel)
    except E.JobError as exc:
        return Drop(_job(image_rel, sidecar_rel, now, "-", "-", 0), exc)
    except FileNotFoundError as exc:
        job = _job(image_rel, sidecar_rel, now, "-", "-", 0)
        return Drop(job, E.InputVanished(f"{Path(exc.filename or '').name} left the inbox."))
    except OSError as exc:
        if exc.errno == 40:
            job = _job(image_rel, sidecar_rel, now, "-", "-", 0)
            return Drop(job, E.UnsafePath(f"{image_rel} is a symbolic link; not followed."))
        raise
    sidecar_sha = hashlib.sha256(sidecar_bytes).hexdigest()
    job = _job(image_rel, sidecar_rel, now, image_sha, sidecar_sha, ctime_ns)
    try:
        sidecar = parse_sidecar(sidecar_bytes)
        request = build_request(sidecar, defaults=defaults, default_model=default_model)
        check_image(inbox / image_rel)
    except E.JobError as exc:
        return Drop(job, exc)
    job = replace(
        job,
        model=request.model,
        prompt=request.prompt,
        text=request.text,
        content_key=content_key(image_sha, request.model, request.text),
    )
    return Drop(job, None)


def _job(
    image_rel: str, sidecar_rel: str, now: float, image_sha: str, sidecar_sha: str, ctime_ns: int
) -> Job:
    job_id = make_job_id(image_rel, image_sha, sidecar_sha, ctime_ns or int(now * 1e9))
    return Job(
        job_id=job_id,
        state=State.NEW,
        source=image_rel,
        sidecar=sidecar_rel,
        created_at=now,
        updated_at=now,
        image_sha256=None if image_sha == "-" else image_sha,
    )


def bare_job_id(files: list[str], now: float) -> str:
    """The id of a drop that is not a valid pair (orphan, link, ambiguous names)."""
    return make_job_id("\0".join(files), "-", "-", int(now * 1e9))
