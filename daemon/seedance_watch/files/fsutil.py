"""Durable file primitives: atomic writes, no-clobber moves, free names.

Every function here leaves either the old state or the new state on disk, never
a torn one: data goes to a hidden temp file in the destination's own folder, is
fsynced, then appears under its final name in one step, and the folder is fsynced
so the new name survives a power cut.  Nothing here ever replaces an existing
file by a move (a user's file in ``done/`` or ``outbox/`` is sacred); only
:func:`atomic_write_bytes` replaces, on purpose, the file it is asked to write.

OSErrors are not swallowed: after cleaning up its own temp file a failed call
re-raises, and the caller decides whether the failure is fatal.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import stat
from collections.abc import Container, Sequence
from pathlib import Path
from typing import Any

import structlog

__all__ = [
    "TEMP_RE",
    "atomic_write_bytes",
    "atomic_write_json",
    "fsync_dir",
    "fsync_file",
    "make_dirs",
    "move_file",
    "next_free_name",
    "remove_stale_temps",
    "same_entry",
    "temp_path",
]

log = structlog.get_logger(__name__)

_CHUNK = 1 << 20
# Longest file name most file systems accept, in bytes.
_NAME_MAX = 255
# ``.NAME.<12 hex>.tmp``: the temp names this module creates (and may clean up).
TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$", re.DOTALL)
# link() refusals that mean "this file system (or policy) has no hard links for us".
_NO_LINK_ERRNOS = frozenset(
    {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}
)


def fsync_dir(path: Path) -> None:
    """Make the entries of folder ``path`` (creations, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush the data of an existing regular file to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(final: Path) -> Path:
    """A fresh hidden temp name beside ``final``: ``.NAME.<random>.tmp``.

    Hidden and ending in ``.tmp`` so the inbox watcher and users ignore it; the
    NAME part is shortened when needed to stay within the 255-byte name limit.
    """
    name = final.name
    suffix = f".{secrets.token_hex(6)}.tmp"
    budget = _NAME_MAX - 1 - len(suffix)
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) > budget:
        name = encoded[:budget].decode("utf-8", "ignore")
    return final.with_name(f".{name}{suffix}")


def make_dirs(path: Path) -> None:
    """Create folder ``path`` and missing parents, fsyncing each new folder's parent.

    Without the parent fsync a freshly created folder (and everything moved into
    it) can vanish after a power cut even though the files themselves were synced.
    """
    missing: list[Path] = []
    probe = path
    while not probe.is_dir():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue
        fsync_dir(folder.parent)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write less)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _unlink_quietly(path: Path) -> None:
    path.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` all at once, durably.

    Temp file beside ``path``, write, fsync, rename over ``path``, fsync the folder.
    On any failure (ENOSPC included) the temp file is removed and the error
    re-raised: ``path`` is left absent or with its previous content, never partial.
    ``mode`` is filtered by the process umask, like any ``open()``.
    """
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any, *, mode: int = 0o644) -> None:
    """:func:`atomic_write_bytes` of ``obj`` as UTF-8 JSON, indent 2, trailing newline."""
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def same_entry(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` are one file system object (hard links); links not followed."""
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except FileNotFoundError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _link_no_clobber(src: Path, dst: Path) -> None:
    """Give ``src``'s object the name ``dst`` too, unless ``dst`` exists (FileExistsError).

    Falls back to check-then-rename where hard links are refused (FAT, some SMB
    shares, ``protected_hardlinks``); that fallback has a tiny race window, the
    best a portable program can do.  EXDEV propagates.  Afterwards ``src`` may
    still exist (link path); callers unlink it.
    """
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in _NO_LINK_ERRNOS:
            raise
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from exc
        src.rename(dst)


def _copy_entry(src: Path, tmp: Path) -> None:
    """Copy ``src`` (a symlink as a link, never its target) to the new name ``tmp``, durably."""
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        tmp.symlink_to(src.readlink())
        return
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file or symlink", str(src))
    in_fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        out_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            while chunk := os.read(in_fd, _CHUNK):
                write_all(out_fd, chunk)
            os.fchmod(out_fd, stat.S_IMODE(st.st_mode))
            os.fsync(out_fd)
        finally:
            os.close(out_fd)
    finally:
        os.close(in_fd)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))


def _move_across(src: Path, dst: Path) -> None:
    """Move between file systems: copy beside ``dst``, place it, then drop ``src``.

    A crash after placement and before the unlink leaves two identical entries;
    the caller (``outbox.finish_moves``) recognises that and finishes the move.
    """
    tmp = temp_path(dst)
    try:
        _copy_entry(src, tmp)
        _link_no_clobber(tmp, dst)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _unlink_quietly(tmp)
    fsync_dir(dst.parent)
    src.unlink()
    fsync_dir(src.parent)


def move_file(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` durably, never replacing an existing ``dst``.

    Creates ``dst``'s missing parent folders.  Raises FileExistsError when ``dst``
    exists and FileNotFoundError when ``src`` does not.  A symlink is moved as
    the link itself (its target is never opened).  Across file systems (EXDEV)
    the entry is copied to a hidden temp file beside ``dst``, fsynced, placed,
    and only then is ``src`` removed.
    """
    os.lstat(src)  # FileNotFoundError before any folder is created
    make_dirs(dst.parent)
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    try:
        _link_no_clobber(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _move_across(src, dst)
        return
    if os.path.lexists(src) and same_entry(src, dst):
        src.unlink()
    fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsync_dir(src.parent)


def next_free_name(
    folder: Path, stem: str, suffixes: Sequence[str], *, taken: Container[str] = ()
) -> str:
    """The first of ``stem``, ``stem-2``, ``stem-3``... free for every suffix.

    A candidate is free when no ``folder/(candidate + suffix)`` exists (a dangling
    symlink counts as existing) and ``candidate`` is not in ``taken``, the names
    planned by other jobs but not created yet.  Case-sensitive names assumed.
    """
    n = 1
    while True:
        candidate = stem if n == 1 else f"{stem}-{n}"
        if candidate not in taken and not any(
            os.path.lexists(folder / f"{candidate}{suffix}") for suffix in suffixes
        ):
            return candidate
        n += 1


def remove_stale_temps(root: Path) -> int:
    """Remove, under ``root``, the ``.NAME.<random>.tmp`` files this module leaves after a crash.

    Call it at start-up only, before any write starts (a live write's temp file
    matches too).  Symlinked folders are not followed.  Returns how many were removed.
    """
    removed = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if TEMP_RE.match(name):
                path = Path(folder, name)
                _unlink_quietly(path)
                log.info("fs.temp_removed", path=str(path.relative_to(root)))
                removed += 1
    return removed
