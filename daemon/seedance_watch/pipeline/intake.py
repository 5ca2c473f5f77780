"""Turning a ready pair into a job: hashing, validation, the effective request.

Runs in a worker thread (it reads and hashes files); returns the job record and,
for an invalid drop, the error it fails with.  No ledger and no network here.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import structlog

from seedance_watch import errors as E
from seedance_watch.config import Config
from seedance_watch.core.jobs import InputFile, Job, State, content_key, job_files, make_job_id
from seedance_watch.core.names import is_image
from seedance_watch.core.options import GenerationOptions
from seedance_watch.core.stability import AmbiguousDrop, InboxEvent, Orphan, PairReady, Unsafe
from seedance_watch.files.sidecar import build_request, check_image, parse_sidecar

if TYPE_CHECKING:
    from seedance_watch.files.inbox import Inbox
    from seedance_watch.ledger.base import JobStore
    from seedance_watch.pipeline.placement import Placement

log = structlog.get_logger(__name__)

__all__ = [
    "Drop",
    "Intake",
    "bare_job",
    "bare_job_id",
    "event_error",
    "event_files",
    "examine_drop",
    "input_file",
    "job_groups",
    "read_nofollow",
]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Drop:
    job: Job
    error: E.JobError | None


def read_nofollow(path: Path, *, max_bytes: int | None = None) -> bytes:
    """Read a file without following a symlink (a link raises ``UnsafePath``)."""
    return read_nofollow_stat(path, max_bytes=max_bytes)[0]


def read_nofollow_stat(path: Path, *, max_bytes: int | None = None) -> tuple[bytes, os.stat_result]:
    """:func:`read_nofollow`, with what ``fstat`` said of the descriptor read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the last component is a symlink
            raise E.UnsafePath(f"{path.name} is a symbolic link; links are not followed.") from exc
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        return (f.read() if max_bytes is None else f.read(max_bytes)), st


def _hash_file(path: Path) -> tuple[str, os.stat_result]:
    """The sha256 of a file and what ``fstat`` said of the very descriptor hashed."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    h = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest(), st


def input_file(role: str, rel: str, sha256: str, st: os.stat_result) -> InputFile:
    """The identity of an examined input (SPEC §3: a job owns the exact files it read)."""
    return InputFile(role, rel, sha256, st.st_size, st.st_dev, st.st_ino, st.st_mtime_ns)


def examine_drop(
    inbox: Path,
    image_rel: str,
    sidecar_rel: str,
    *,
    defaults: GenerationOptions,
    default_model: str,
    now: float,
    strict_model: bool = False,
) -> Drop:
    """Hash and validate one pair; the job id is derived from what was dropped.

    With ``strict_model`` a sidecar ``model:`` outside ``KNOWN_MODELS`` fails the drop
    (``gateway.strict_model``); otherwise it is logged and kept.
    """
    try:
        sidecar_bytes, sidecar_st = read_nofollow_stat(inbox / sidecar_rel, max_bytes=1 << 20)
        image_sha, image_st = _hash_file(inbox / image_rel)
        ctime_ns = image_st.st_ctime_ns
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
    job = replace(
        job,
        inputs=(
            input_file("image", image_rel, image_sha, image_st),
            input_file("sidecar", sidecar_rel, sidecar_sha, sidecar_st),
        ),
    )
    try:
        sidecar = parse_sidecar(sidecar_bytes, strict_model=strict_model)
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


def event_files(event: InboxEvent) -> list[str]:
    """The inbox files of an event: the pair, the ambiguous group, or the one file."""
    if isinstance(event, PairReady):
        return [event.image, event.sidecar]
    if isinstance(event, AmbiguousDrop):
        return list(event.paths)
    if isinstance(event, Unsafe):
        # The link's partners sort so that an image comes first (the job's source).
        return sorted([event.path, *event.partners], key=lambda p: not is_image(p))
    return [event.path]


def bare_job(event: InboxEvent, now: float) -> Job:
    """A job for an input that is not a valid pair (it will only fail)."""
    files = event_files(event)
    return Job(
        job_id=bare_job_id(files, now),
        state=State.NEW,
        source=files[0],
        sidecar=files[1] if len(files) > 1 else None,
        created_at=now,
        updated_at=now,
    )


def event_error(event: InboxEvent) -> E.JobError:
    """The error a drop that is not a valid pair fails with (shared with ``validate``)."""
    if isinstance(event, Orphan):
        if event.code == "missing_sidecar":
            stem = PurePosixPath(event.path).stem
            return E.MissingSidecar(
                f"No sidecar ({stem}.yaml or {stem}.yml) arrived for {event.path} "
                "within watch.pair_timeout."
            )
        return E.MissingImage(
            f"No image arrived for the sidecar {event.path} within watch.pair_timeout."
        )
    if isinstance(event, Unsafe):
        return E.UnsafePath(
            f"{event.path} is a symbolic link; links are never followed out of the inbox."
        )
    if isinstance(event, AmbiguousDrop):
        return E.AmbiguousPair(event.message)
    raise TypeError(f"a ready pair is not an error: {event!r}")


def job_groups(paths: tuple[str, ...] | list[str]) -> list[list[str]]:
    """The files of an ambiguous group, as jobs of at most two files each.

    A job record holds two inputs (an image and a sidecar), so ``a.jpg`` + ``a.yaml`` +
    ``a.yml`` fail as ``[a.jpg, a.yaml]`` then ``[a.yml]``: images first, each with a
    sidecar while there are some, so every file moves to failed/ beside a report.
    """
    images = sorted(p for p in paths if is_image(PurePosixPath(p).name))
    others = sorted(p for p in paths if not is_image(PurePosixPath(p).name))
    ordered: list[str] = []
    while images or others:
        if images:
            ordered.append(images.pop(0))
        if others:
            ordered.append(others.pop(0))
    return [ordered[i : i + 2] for i in range(0, len(ordered), 2)]


class Intake:
    """The intake stage: inbox events become jobs (or failures), two at a time.

    The files of an event are claimed from the watcher until their job ends, so a
    drop is never taken twice.  An event whose files fail to read before a job was
    recorded is released (a rescan finds it again); once a job is recorded, a file
    error is retried from its ledger plan like any finish step.
    """

    def __init__(
        self, config: Config, store: JobStore, placement: Placement, clock: Callable[[], float]
    ) -> None:
        self.config, self.store, self.placement, self.clock = config, store, placement, clock
        self.inbox: Inbox | None = None
        self.pending = 0
        self._queue: asyncio.Queue[tuple[InboxEvent, list[str]]] = asyncio.Queue()
        self._claims: dict[str, str] = {}

    def attach(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def submit(self, event: InboxEvent, files: list[str]) -> None:
        """Queue an event unless one of its files already belongs to a job."""
        if any(path in self._claims for path in files):
            return
        self._hold(files, "?")
        self.pending += 1
        self._queue.put_nowait((event, files))

    def claim(self, job: Job) -> None:
        self._hold(job_files(job), job.job_id)

    def release(self, files: Iterable[str]) -> None:
        files = list(files)
        for path in files:
            self._claims.pop(path, None)
        if self.inbox is not None:
            self.inbox.release(files)

    def _hold(self, files: list[str], job_id: str) -> None:
        if self.inbox is not None:
            self.inbox.claim(files)
        for path in files:
            self._claims[path] = job_id

    async def worker(
        self,
        route: Callable[[Job], None],
        fail: Callable[[Job, E.JobError], Awaitable[None]],
        guard: Callable[[Job, Coroutine[Any, Any, None]], Awaitable[None]],
        idle: Callable[[], None] = lambda: None,
    ) -> None:
        while True:
            event, files = await self._queue.get()
            try:
                await self._take(event, files, route, fail, guard)
            except OSError:
                log.exception("engine.intake_error", files=files)
                if not any(self.store.get(j) for j in set(self._claims.get(f, "?") for f in files)):
                    self.release(files)
            finally:
                self.pending -= 1
                idle()

    async def _take(
        self,
        event: InboxEvent,
        files: list[str],
        route: Callable[[Job], None],
        fail: Callable[[Job, E.JobError], Awaitable[None]],
        guard: Callable[[Job, Coroutine[Any, Any, None]], Awaitable[None]],
    ) -> None:
        if isinstance(event, AmbiguousDrop) and len(files) > 2:
            # A job holds two inputs: fail the group as several jobs, one after the
            # other, so each one's names in failed/ are planned after the last moved.
            for group in job_groups(files):
                await self._take(
                    AmbiguousDrop(tuple(group), event.message), group, route, fail, guard
                )
            return
        now, cfg = self.clock(), self.config
        if isinstance(event, PairReady):
            drop = await asyncio.to_thread(
                examine_drop,
                cfg.paths.inbox,
                event.image,
                event.sidecar,
                defaults=cfg.defaults,
                default_model=cfg.gateway.model,
                now=now,
                strict_model=cfg.gateway.strict_model,
            )
            job, error = drop.job, drop.error
        else:
            job, error = bare_job(event, now), event_error(event)
        for path in files:
            self._claims[path] = job.job_id
        if self.store.get(job.job_id) is not None:
            log.info("job.already_known", job_id=job.job_id, source=job.source)
            return
        log.info("job.created", job_id=job.job_id, source=job.source)
        if error is not None:
            await fail(job, error)
            return
        if cfg.dedupe and job.content_key is not None:
            copied = await self.placement.dedupe(job)
            if copied:
                return
        self.store.put(job)
        route(job)
