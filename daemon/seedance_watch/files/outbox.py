"""Carrying out a job's file plans: outputs into the outbox, inputs to done/ or failed/.

The engine first makes a *plan* durable in the ledger (``PLACING``: the output name, the video's
hash and the input moves; ``FAILING``: the report and the moves), then calls the functions here to
carry it out.  Each of them is idempotent: after a crash at any point (``kill -9``) the engine
simply calls it again and it finishes the work from wherever the disk says it stopped.  None of
them ever overwrites a file it did not plan (docs/design.md, "Outputs", "The ledger and crash
guarantees").

Names: the staging file of a download is ``outbox/<subdir>/.seedance-<job_id>.mp4.part``
(hidden, same folder hence same file system as the final mp4, so placing it is a
link or rename).  Paths given as strings are POSIX and relative to their root.

All functions do blocking file I/O (hashing a video reads it whole): run them in
a worker thread from asyncio code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Container, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import structlog

from seedance_watch.errors import InputReplaced, SeedanceWatchError
from seedance_watch.files import fsutil

__all__ = [
    "OutputConflict",
    "StagingMissing",
    "cleanup_staging",
    "copy_for_duplicate",
    "error_report_rel",
    "finish_moves",
    "place_output",
    "plan_moves",
    "plan_output",
    "sha256_file",
    "staging_path",
    "write_error_report",
]

log = structlog.get_logger(__name__)

_CHUNK = 1 << 20
_STAGING_RE = re.compile(r"^\.seedance-(.+)\.mp4\.part$", re.DOTALL)
_DEST_KINDS = ("done", "failed")
_REPORT_SUFFIX = ".error.json"


class OutputConflict(SeedanceWatchError):
    """A name this job planned is held by a file that is not this job's: never overwritten.

    ``path`` is the contested path, relative to its root (``sub/beach.mp4`` or
    ``done/sub/beach.jpg``).
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class StagingMissing(SeedanceWatchError):
    """Neither the final video nor an intact staged copy exists: download again."""


# --- names ------------------------------------------------------------------------------


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p and p != ".")


def _resolve(root: Path, rel: str) -> Path:
    """``root/rel`` for a relative POSIX path that stays inside ``root``."""
    if rel in ("", "."):
        return root
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts:
        raise ValueError(f"path {rel!r} escapes its root")
    return root.joinpath(*pure.parts)


class _PlannedIn:
    """``Container`` view of ``taken`` (``done/sub/beach.jpg``): is the file name ``n``
    planned in the folder ``prefix`` (``done/sub``)?"""

    def __init__(self, taken: Container[str], prefix: str) -> None:
        self._taken = taken
        self._prefix = prefix

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _join(self._prefix, name) in self._taken


def staging_path(outbox: Path, output_rel_dir: str, job_id: str) -> Path:
    """The hidden staging file of ``job_id``'s video: ``outbox/<dir>/.seedance-<id>.mp4.part``.

    The folder may not exist yet: create it with :func:`fsutil.make_dirs`.
    """
    return _resolve(outbox, output_rel_dir) / f".seedance-{job_id}.mp4.part"


def plan_output(outbox: Path, subdir: str, stem: str, *, taken: Container[str] = ()) -> str:
    """The outbox-relative path for a new video: ``sub/beach.mp4``, else ``sub/beach-2.mp4``...

    A name is free when neither ``NAME.mp4`` nor ``NAME.json`` exists and no other
    job has planned it: ``taken`` holds other jobs' planned (not yet placed)
    outputs, in the form this function returns (``sub/beach.mp4``).
    """
    tail = fsutil.next_free_suffix(
        _resolve(outbox, subdir),
        [(stem, ".mp4"), (stem, ".json")],
        taken=_PlannedIn(taken, subdir),
    )
    return _join(subdir, f"{stem}{tail}.mp4")


def plan_moves(
    root: Path,
    subdir: str,
    files: Sequence[str],
    dest_kind: Literal["done", "failed"],
    dest_root: Path,
    *,
    taken: Container[str] = (),
) -> tuple[tuple[str, str], ...]:
    """Destinations for the files of one drop, all with one free suffix in ``dest_root/subdir``.

    ``root`` is the inbox (the files' root; not read).  ``files`` are the drop's
    distinct inbox-relative paths, all in ``subdir``, the lead first (the image,
    else the sidecar); their stems may differ (a last frame names its own file).
    Each file keeps its name, or every one of them takes the same suffix ``-N``
    (the smallest N ≥ 2 that works) before its extension when any name is taken:
    ``beach.jpg`` + ``beach-end.png`` + ``beach.yaml`` become ``beach-2.jpg`` +
    ``beach-end-2.png`` + ``beach-2.yaml``.  A name is taken when it exists in
    ``dest_root/subdir`` (a dangling link counts) or is in ``taken``, the
    destinations other jobs planned, as returned here (``done/sub/beach.jpg``);
    for ``failed`` the report, named after the lead (``beach-N.error.json``, see
    :func:`error_report_rel`), must be free as well.  Returns
    ``(src_rel, "<dest_kind>/<subdir>/<name>")`` pairs in the order of ``files``.
    """
    del root
    if dest_kind not in _DEST_KINDS:
        raise ValueError(f"dest_kind must be one of {_DEST_KINDS}, not {dest_kind!r}")
    if not files:
        raise ValueError("a drop has at least one file")
    if len(set(files)) != len(files):
        raise ValueError(f"a drop's files are distinct: {list(files)!r}")
    paths = [PurePosixPath(f) for f in files]
    for path in paths:
        if _join(str(path.parent)) != _join(subdir):
            raise ValueError(f"{str(path)!r} is not a file of a drop in {subdir!r}")
    parts = [(p.stem, p.suffix) for p in paths]
    if dest_kind == "failed":
        parts.append((paths[0].stem, _REPORT_SUFFIX))
    prefix = _join(dest_kind, subdir)
    tail = fsutil.next_free_suffix(
        _resolve(dest_root, subdir), parts, taken=_PlannedIn(taken, prefix)
    )
    return tuple(
        (f, _join(prefix, f"{stem}{tail}{suffix}"))
        for f, (stem, suffix) in zip(files, parts[: len(files)], strict=True)
    )


def error_report_rel(moves: Sequence[tuple[str, str]]) -> str:
    """The report's path relative to failed/: ``sub/beach-2.error.json``.

    Named after the planned destination of the drop's lead, its first file (the
    image, else the sidecar), whose name :func:`plan_moves` kept free for it.
    """
    if not moves:
        raise ValueError("no planned moves to name the report after")
    rest = PurePosixPath(*PurePosixPath(moves[0][1]).parts[1:])
    return _join(str(rest.parent), f"{rest.stem}{_REPORT_SUFFIX}")


# --- content ----------------------------------------------------------------------------


def sha256_file(path: Path) -> tuple[str, int]:
    """The SHA-256 (hex) and size in bytes of the file at ``path``."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _has_video(path: Path, sha256: str, size: int | None) -> bool:
    """Is ``path`` a regular file with these bytes?  The size is compared first (cheap)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or (size is not None and st.st_size != size):
        return False
    return sha256_file(path)[0] == sha256


def _same_content(a: Path, b: Path) -> bool:
    """Equal symlinks (same target text) or equal regular files (same bytes)."""
    sa, sb = os.lstat(a), os.lstat(b)
    if stat.S_ISLNK(sa.st_mode) and stat.S_ISLNK(sb.st_mode):
        return a.readlink() == b.readlink()
    if not (stat.S_ISREG(sa.st_mode) and stat.S_ISREG(sb.st_mode)) or sa.st_size != sb.st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(_CHUNK), fb.read(_CHUNK)
            if ca != cb:
                return False
            if not ca:
                return True


def _ensure_json(path: Path, obj: Any) -> bool:
    """Make ``path`` hold ``obj`` durably; rewrite only when it differs.  True if written."""
    try:
        current: bytes | None = path.read_bytes()
    except FileNotFoundError:
        current = None
    if current == fsutil.json_bytes(obj):
        # It may predate a crash that came before its folder's fsync.
        fsutil.fsync_file(path)
        fsutil.fsync_dir(path.parent)
        return False
    fsutil.make_dirs(path.parent)
    fsutil.atomic_write_json(path, obj)
    return True


def _remove(path: Path) -> None:
    path.unlink()
    fsutil.fsync_dir(path.parent)


# --- outputs ----------------------------------------------------------------------------


def place_output(
    *,
    outbox: Path,
    staging: Path,
    output_rel: str,
    video_sha256: str,
    metadata: dict[str, Any],
) -> None:
    """Make ``outbox/output_rel`` (the mp4 with ``video_sha256``) and its ``.json`` exist.

    Idempotent.  If the mp4 is already there with that hash, only the JSON is
    ensured (and a leftover staging file removed); with other bytes it raises
    :class:`OutputConflict`.  Otherwise the staged video, if intact, is placed
    after its JSON (so the mp4 never appears without it).  If there is no intact
    staged video it raises :class:`StagingMissing`, after removing a corrupt
    staging file and this job's own JSON (so the name can be planned again).
    ``metadata["video_bytes"]``, when an int, lets a wrong size fail fast.
    """
    final = _resolve(outbox, output_rel)
    meta_path = final.with_suffix(".json")
    job_id = metadata.get("job_id")
    size = metadata.get("video_bytes")
    expected_size = size if isinstance(size, int) else None

    if os.path.lexists(final):
        if not _has_video(final, video_sha256, expected_size):
            log.error("outbox.output_conflict", job_id=job_id, output=output_rel)
            raise OutputConflict(
                f"{output_rel} already exists with other content; it is not overwritten",
                path=output_rel,
            )
        _ensure_json(meta_path, metadata)
        if os.path.lexists(staging):
            _remove(staging)  # a crash came between placing and unlinking it
        fsutil.fsync_dir(final.parent)
        log.info("outbox.placed", job_id=job_id, output=output_rel, resumed=True)
        return

    if not _has_video(staging, video_sha256, expected_size):
        if os.path.lexists(staging):
            _remove(staging)
        if meta_path.is_file() and _is_own_metadata(meta_path, metadata):
            _remove(meta_path)
        log.warning("outbox.staging_missing", job_id=job_id, output=output_rel)
        raise StagingMissing(f"no intact staged video for {output_rel}; download it again")

    _ensure_json(meta_path, metadata)
    try:
        fsutil.move_file(staging, final)
    except FileExistsError as exc:
        log.error("outbox.output_conflict", job_id=job_id, output=output_rel)
        raise OutputConflict(
            f"{output_rel} appeared while placing; it is not overwritten", path=output_rel
        ) from exc
    log.info("outbox.placed", job_id=job_id, output=output_rel, resumed=False)


def _is_own_metadata(path: Path, metadata: dict[str, Any]) -> bool:
    """Was the JSON at ``path`` written for this job (same ``job_id``, or same content)?"""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    if "job_id" in metadata:
        return isinstance(data, dict) and data.get("job_id") == metadata["job_id"]
    return path.read_bytes() == fsutil.json_bytes(metadata)


def copy_for_duplicate(src_mp4: Path, staging: Path) -> tuple[str, int]:
    """Copy an earlier job's video to ``staging`` (fsynced); return its (sha256, size).

    Any previous staging file is unlinked first, never written through (it could
    be a hard link to a placed output).  On failure no staging file is left.
    """
    fsutil.make_dirs(staging.parent)
    if os.path.lexists(staging):
        _remove(staging)
    h = hashlib.sha256()
    size = 0
    try:
        with open(src_mp4, "rb") as src:
            fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    fsutil.fsync_dir(staging.parent)
    return h.hexdigest(), size


# --- inputs and reports -----------------------------------------------------------------


def finish_moves(
    *,
    roots: Mapping[str, Path],
    moves: Sequence[tuple[str, str]],
    job_id: str | None = None,
    expect: Mapping[str, fsutil.FileIdentity] | None = None,
) -> None:
    """Carry out planned input moves (inbox-relative source → ``done/...`` or ``failed/...``).

    Idempotent.  ``roots`` maps ``inbox``, ``done`` and ``failed`` to folders.
    ``expect`` maps a source to the identity the job examined: a file replaced under
    that name (another device or inode, even with the same bytes) is not this job's
    and stays in the inbox for the next drop; the examined inode touched or rewritten
    in place moves only while its bytes still hash to what the job recorded (the hash
    may confirm, never substitute: docs/design.md, "A job owns the files it
    examined").  Per
    move: source only → moved; destination only → already done; neither → the
    user removed the input (warning ``outbox.input_vanished``); both → if they are
    one file or identical (a crash in the middle of a move) the source is
    dropped, else :class:`OutputConflict` (the destination is someone else's).
    """
    inbox = roots["inbox"]
    for src_rel, dst_rel in moves:
        kind, _, rest = dst_rel.partition("/")
        if kind not in _DEST_KINDS or kind not in roots:
            raise ValueError(f"move destination {dst_rel!r} is not under done/ or failed/")
        src = _resolve(inbox, src_rel)
        dst = _resolve(roots[kind], rest)
        src_there, dst_there = os.path.lexists(src), os.path.lexists(dst)
        if src_there and not dst_there:
            examined = (expect or {}).get(src_rel)
            try:
                try:
                    fsutil.move_file(src, dst, expect=examined)
                except InputReplaced:
                    if examined is None:
                        raise
                    _move_if_still_examined(src, dst, examined)
            except FileExistsError as exc:
                raise OutputConflict(f"{dst_rel} appeared while moving", path=dst_rel) from exc
            except InputReplaced:
                log.warning("outbox.input_replaced", job_id=job_id, source=src_rel)
                continue
            log.info("outbox.input_moved", job_id=job_id, source=src_rel, to=dst_rel)
        elif dst_there and not src_there:
            fsutil.fsync_dir(dst.parent)
        elif not src_there:
            log.warning("outbox.input_vanished", job_id=job_id, source=src_rel, to=dst_rel)
        elif fsutil.same_entry(src, dst) or _same_content(src, dst):
            _remove(src)
            log.info("outbox.move_resumed", job_id=job_id, source=src_rel, to=dst_rel)
        else:
            log.error("outbox.move_conflict", job_id=job_id, source=src_rel, to=dst_rel)
            raise OutputConflict(
                f"{dst_rel} already exists with other content; {src_rel} stays in the inbox",
                path=dst_rel,
            )


def _move_if_still_examined(src: Path, dst: Path, examined: fsutil.FileIdentity) -> None:
    """``src`` is not quite the identity recorded: move it only if it is the very inode
    the job examined (same device and inode) and its bytes still hash to the recorded
    sha256 (a touched file); a new file under the name, same bytes or not, raises
    :class:`InputReplaced` and stays in the inbox: it is a drop of its own."""
    now = fsutil.identify(src)
    sha = getattr(examined, "sha256", "")
    if (now.dev, now.ino) != (examined.dev, examined.ino) or not sha:
        raise InputReplaced(f"{src.name} is another file than the one this job examined")
    if sha256_file(src)[0] != sha:
        raise InputReplaced(f"{src.name} was rewritten since this job examined it")
    fsutil.move_file(src, dst, expect=now)


def write_error_report(
    *,
    failed_root: Path,
    report_rel: str,
    report: dict[str, Any],
    job_id: str | None = None,
) -> None:
    """Write ``failed/<report_rel>`` (``sub/NAME.error.json``) atomically; idempotent.

    Another job's report under that name is never replaced (:class:`OutputConflict`).
    """
    path = _resolve(failed_root, report_rel)
    try:
        current = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        current = None
    if isinstance(current, dict) and current.get("job_id") not in (None, report.get("job_id")):
        raise OutputConflict(
            f"failed/{report_rel} is the report of job {current.get('job_id')}", path=report_rel
        )
    if _ensure_json(path, report):
        log.info(
            "outbox.error_report_written",
            job_id=job_id if job_id is not None else report.get("job_id"),
            report=report_rel,
        )


def cleanup_staging(outbox: Path, job_ids_alive: Container[str]) -> int:
    """Start-up sweep: remove dead jobs' staging files and all atomic-write temp files.

    Removes ``.seedance-<job_id>.mp4.part`` under ``outbox`` when ``job_id`` is not
    in ``job_ids_alive``, and every ``.NAME.<random>.tmp`` (no write runs yet at
    start-up).  Symlinked folders are not followed.  Returns how many files went.
    """
    removed = 0
    for folder, _dirs, files in os.walk(outbox):
        for name in files:
            match = _STAGING_RE.match(name)
            if match and match.group(1) in job_ids_alive:
                continue
            if match or fsutil.TEMP_RE.match(name):
                path = Path(folder, name)
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                removed += 1
                log.info(
                    "outbox.staging_removed",
                    job_id=match.group(1) if match else None,
                    path=str(path.relative_to(outbox)),
                )
    return removed
