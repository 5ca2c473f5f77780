"""Durable file primitives: atomic writes, no-clobber moves, free names.

Every function here leaves either the old state or the new state on disk, never
a torn one: data goes to a hidden temp file in the destination's own folder, is
fsynced, then appears under its final name in one step, and the folder is fsynced
so the new name survives a power cut.  Nothing here ever replaces an existing
file by a move (a user's file in ``done/`` or ``outbox/`` is sacred); only
:func:`atomic_write_bytes` replaces, on purpose, the file it is asked to write.

OSErrors are not swallowed: after cleaning up its own temp file a failed call
re-raises, and the caller decides whether the failure is fatal.

A job owns the exact files it examined (docs/design.md, "A job owns the files it examined"):
:func:`identify` gives a file's identity (device, inode, size, mtime) without following links,
:func:`same_file` compares it with what intake recorded, and ``move_file(..., expect=...)`` moves
only that file, raising :class:`~seedance_watch.errors.InputReplaced` otherwise.

:func:`file_system_of` reads the mount table: the inbox watcher polls on network
file systems, and the ledger warns when its lock may be local to one host there.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Container, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple, Protocol

import structlog

from seedance_watch.errors import ConfigError, DurabilityError, InputReplaced, UnsafePath

__all__ = [
    "FOLDER_FLAGS",
    "MOUNTINFO",
    "NETWORK_FS_TYPES",
    "STALE_TEMP_SECONDS",
    "TEMP_RE",
    "UNUSABLE_PATH_ERRNOS",
    "FileIdentity",
    "Identity",
    "atomic_write_bytes",
    "atomic_write_json",
    "file_system_of",
    "fsync_dir",
    "fsync_file",
    "identify",
    "is_network_fs",
    "json_bytes",
    "lstat_beneath",
    "make_dirs",
    "move_file",
    "next_free_suffix",
    "open_beneath",
    "open_folder",
    "path_error",
    "read_beneath",
    "read_nofollow",
    "read_nofollow_stat",
    "remove_stale_temps",
    "same_entry",
    "same_file",
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
#: A temp file untouched for this long belongs to no live write: sweeps that run
#: while writers may be at work (another command, another thread) remove only those.
STALE_TEMP_SECONDS = 3600.0

#: errnos that say a path cannot be used as asked (a config problem, not a failing
#: disk): no permission, read-only, a file where a folder should be, a bad link...
UNUSABLE_PATH_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EEXIST,
        errno.ENOENT,
        errno.ELOOP,
        errno.ENAMETOOLONG,
    }
)


def path_error(
    exc: OSError, key: str, *, unusable: str, failing: str
) -> ConfigError | DurabilityError:
    """What an OSError on a configured path means: the path cannot be used as asked
    (:data:`UNUSABLE_PATH_ERRNOS`) is a :class:`ConfigError` naming ``key`` with the
    message ``unusable``; anything else (EIO, ENOSPC: the disk fails) is a
    :class:`DurabilityError` with the message ``failing``."""
    if exc.errno in UNUSABLE_PATH_ERRNOS:
        return ConfigError(unusable, key=key)
    return DurabilityError(failing)


#: Where :func:`file_system_of` reads the mounts (a module attribute, for tests).
MOUNTINFO = Path("/proc/self/mountinfo")

#: File systems where inotify does not see changes made elsewhere and where flock()
#: may be local to one host (plus any ``fuse.*``).
NETWORK_FS_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb",
        "smb2",
        "smb3",
        "smbfs",
        "9p",
        "virtiofs",
        "fuse",
        "ceph",
        "glusterfs",
        "lustre",
        "afs",
        "davfs",
        "ncpfs",
        "gpfs",
        "beegfs",
    }
)


# --- identity ---------------------------------------------------------------------------


class FileIdentity(Protocol):
    """What tells one file from another under the same name (``InputFile`` has it too)."""

    @property
    def dev(self) -> int: ...
    @property
    def ino(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def mtime_ns(self) -> int: ...


class Identity(NamedTuple):
    """A file's identity as :func:`identify` reads it."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Identity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    @classmethod
    def expected(cls, other: FileIdentity) -> Identity:
        return cls(other.dev, other.ino, other.size, other.mtime_ns)


def identify(path: Path) -> Identity:
    """``path``'s (device, inode, size, mtime_ns), a symlink's own (never its target's).

    A file replaced under the same name gets another inode; one rewritten in place
    keeps its inode but changes size or mtime.  Raises FileNotFoundError.
    """
    return Identity.of(os.lstat(path))


def same_file(path: Path, expected: FileIdentity) -> bool:
    """True when ``path`` is still the very file ``expected`` describes (False if gone)."""
    try:
        return identify(path) == Identity.expected(expected)
    except FileNotFoundError:
        return False


def _replaced(path: Path, expected: FileIdentity, now: Identity | None) -> InputReplaced:
    was = Identity.expected(expected)
    seen = "gone" if now is None else f"inode {now.ino}, {now.size} bytes, mtime {now.mtime_ns}"
    return InputReplaced(
        f"{path.name} is no longer the file this job examined (inode {was.ino}, "
        f"{was.size} bytes, mtime {was.mtime_ns}; now {seen}); the new file is a new drop"
    )


# --- mounts -----------------------------------------------------------------------------


def is_network_fs(fstype: str) -> bool:
    """True for network and FUSE file system types (``nfs4``, ``fuse.sshfs``...)."""
    fstype = fstype.lower()
    return fstype in NETWORK_FS_TYPES or fstype.startswith("fuse.")


def file_system_of(path: Path, *, mountinfo: Path | None = None) -> tuple[str, str] | None:
    """The mount point and file-system type holding ``path``; None without a mount table.

    Finds the mount with the longest mount point containing the resolved path (the
    nearest existing ancestor when the path does not exist yet).
    """
    target = Path(os.path.normpath(Path(path).absolute()))
    while not target.exists() and target != target.parent:
        target = target.parent
    target = target.resolve()
    try:
        table = (mountinfo or MOUNTINFO).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return None
    best: tuple[str, str] | None = None
    for line in table.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if len(fields) <= sep + 1:
            continue
        mount_point, fstype = _unescape_mount(fields[4]), fields[sep + 1]
        if _is_within(target, mount_point) and (best is None or len(mount_point) >= len(best[0])):
            best = (mount_point, fstype)
    return best


def _unescape_mount(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _is_within(target: Path, mount_point: str) -> bool:
    return mount_point == "/" or target == Path(mount_point) or Path(mount_point) in target.parents


# --- durability -------------------------------------------------------------------------


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


def make_dirs(path: Path, *, mode: int = 0o777) -> None:
    """Create folder ``path`` and missing parents, fsyncing each new folder's parent.

    ``path`` itself, when created, gets ``mode`` (filtered by the umask, as any
    ``mkdir``); the parents the default.  A folder that exists keeps its mode.

    Without the parent fsync a freshly created folder (and everything moved into
    it) can vanish after a power cut even though the files themselves were synced.
    The deepest folder that already exists has its parent fsynced too: a kill
    between an earlier ``mkdir`` and its fsync leaves an entry the kernel has but
    the disk may not, and one fsync is cheap.  (Folders above it were synced
    before it was created, by this same rule.)
    """
    missing: list[Path] = []
    probe = path
    while not probe.is_dir():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.is_dir() and probe.parent != probe:
        fsync_dir(probe.parent)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=mode if folder == path else 0o777)
        except FileExistsError:
            if not folder.is_dir():
                raise
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


def json_bytes(obj: Any) -> bytes:
    """``obj`` as UTF-8 JSON, indent 2, trailing newline: what the daemon's JSON files hold.

    A file name that is not UTF-8 is a str with surrogate escapes (``\\udce9`` for the
    byte 0xE9); it is written as that JSON escape, which reads back to the same str,
    hence to the same bytes (docs/design.md, "File names").  Every surrogate stands
    inside a JSON string, so ``backslashreplace`` writes exactly JSON's escape.
    """
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    return text.encode("utf-8", "backslashreplace")


def atomic_write_json(path: Path, obj: Any, *, mode: int = 0o644) -> None:
    """:func:`atomic_write_bytes` of :func:`json_bytes` of ``obj``."""
    atomic_write_bytes(path, json_bytes(obj), mode=mode)


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


def _copy_entry(src: Path, tmp: Path, expect: FileIdentity | None) -> None:
    """Copy ``src`` (a symlink as a link, never its target) to the new name ``tmp``, durably.

    With ``expect``, the file opened must be that one (checked on the open
    descriptor, so a swap between the check and the copy cannot slip through).
    """
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        if expect is not None and Identity.of(st) != Identity.expected(expect):
            raise _replaced(src, expect, Identity.of(st))
        tmp.symlink_to(src.readlink())
        return
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file or symlink", str(src))
    in_fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(in_fd)
        if expect is not None and Identity.of(st) != Identity.expected(expect):
            raise _replaced(src, expect, Identity.of(st))
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


def _move_across(src: Path, dst: Path, expect: FileIdentity | None) -> None:
    """Move between file systems: copy beside ``dst``, place it, then drop ``src``.

    A crash after placement and before the unlink leaves two identical entries;
    the caller (``outbox.finish_moves``) recognises that and finishes the move.
    With ``expect``, ``src`` is unlinked only while it is still that file: a new
    file dropped under its name meanwhile stays (it is a new drop).
    """
    tmp = temp_path(dst)
    try:
        _copy_entry(src, tmp, expect)
        _link_no_clobber(tmp, dst)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _unlink_quietly(tmp)
    fsync_dir(dst.parent)
    if expect is None or same_file(src, expect):
        src.unlink()
    fsync_dir(src.parent)


def move_file(src: Path, dst: Path, *, expect: FileIdentity | None = None) -> None:
    """Move ``src`` to ``dst`` durably, never replacing an existing ``dst``.

    Creates ``dst``'s missing parent folders.  Raises FileExistsError when ``dst``
    exists and FileNotFoundError when ``src`` does not.  A symlink is moved as
    the link itself (its target is never opened).  Across file systems (EXDEV)
    the entry is copied to a hidden temp file beside ``dst``, fsynced, placed,
    and only then is ``src`` removed.

    Order matters for power cuts: ``dst``'s folder is fsynced *before* ``src`` is
    unlinked, so on a file system that reorders metadata writes the file is never
    without a durable name.

    With ``expect`` (what intake recorded), only that very file is moved: when
    ``src`` is another file (replaced under the same name, or rewritten), nothing
    moves and :class:`~seedance_watch.errors.InputReplaced` is raised.
    """
    now = identify(src)  # FileNotFoundError before any folder is created
    if expect is not None and now != Identity.expected(expect):
        raise _replaced(src, expect, now)
    make_dirs(dst.parent)
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    try:
        _link_no_clobber(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _move_across(src, dst, expect)
        return
    if expect is not None and not same_file(dst, expect):
        # src was swapped between the check and the link: dst is a name we just gave
        # the newcomer (or, without hard links, the newcomer itself): give it back.
        if not os.path.lexists(src):
            _link_no_clobber(dst, src)
        if os.path.lexists(dst) and same_entry(src, dst):
            dst.unlink()
        fsync_dir(dst.parent)
        if src.parent != dst.parent:
            fsync_dir(src.parent)
        raise _replaced(src, expect, identify(src) if os.path.lexists(src) else None)
    fsync_dir(dst.parent)
    if os.path.lexists(src) and same_entry(src, dst):
        src.unlink()
        fsync_dir(src.parent)
    elif src.parent != dst.parent:
        fsync_dir(src.parent)  # the rename fallback (no hard links) changed src's folder


# --- below a root, never through a link ---------------------------------------------

#: How a folder below a root is opened: a folder, and never through a link.
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _link_error(rel: str) -> OSError:
    return OSError(errno.ELOOP, "a symbolic link; links are not followed", rel)


def open_folder(root: Path | str, rel: str = "") -> int:
    """A descriptor of the folder ``root/rel``, opened one component at a time, each
    relative to the last with ``O_NOFOLLOW``: no link is followed at any depth below
    ``root`` (docs/design.md, "Symlinks").  ``root`` itself is opened as configured.

    Raises ``OSError``: ELOOP (``filename`` the link, relative to ``root``) when a
    component is a symbolic link, ENOTDIR when one is not a folder, ENOENT.  The
    caller closes the descriptor.
    """
    parts = PurePosixPath(rel).parts
    if ".." in parts or PurePosixPath(rel).is_absolute():
        raise ValueError(f"path {rel!r} escapes its root")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            try:
                inner = os.open(part, FOLDER_FLAGS, dir_fd=fd)
            except NotADirectoryError:
                # O_DIRECTORY | O_NOFOLLOW says ENOTDIR for a link: tell the two apart.
                if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise _link_error("/".join(parts[: i + 1])) from None
                raise
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def _split(rel: str) -> tuple[str, str]:
    path = PurePosixPath(rel)
    if not path.name:
        raise ValueError(f"{rel!r} names no file")
    parent = str(path.parent)
    return ("" if parent == "." else parent), path.name


def lstat_beneath(root: Path | str, rel: str) -> os.stat_result:
    """``lstat`` of ``root/rel`` reached through :func:`open_folder` (a link in the
    middle of the path raises ELOOP instead of being followed)."""
    folder, name = _split(rel)
    fd = open_folder(root, folder)
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)


def open_beneath(root: Path | str, rel: str) -> int:
    """Open the regular file ``root/rel`` for reading, following no link at any depth.

    A link (the file itself or a folder on the way) raises ``OSError`` ELOOP naming
    ``rel``.  The open never blocks (``O_NONBLOCK``: a FIFO swapped in under the name
    cannot hold a worker), and anything but a regular file raises
    :class:`~seedance_watch.errors.UnsafePath`.  The caller closes the descriptor.
    """
    folder, name = _split(rel)
    dir_fd = open_folder(root, folder)
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _link_error(rel) from None
        raise
    finally:
        os.close(dir_fd)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafePath(
                f"{name} is not a regular file (a FIFO, a device or a folder); not read."
            )
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_beneath(
    root: Path | str, rel: str, *, max_bytes: int | None = None
) -> tuple[bytes, os.stat_result]:
    """The bytes of ``root/rel`` (at most ``max_bytes``) opened by :func:`open_beneath`,
    and what ``fstat`` said of that descriptor."""
    with os.fdopen(open_beneath(root, rel), "rb") as f:
        st = os.fstat(f.fileno())
        return (f.read() if max_bytes is None else f.read(max_bytes)), st


def read_nofollow(path: Path, *, max_bytes: int | None = None) -> bytes:
    """Read a file without following a symlink (a link raises ``UnsafePath``)."""
    return read_nofollow_stat(path, max_bytes=max_bytes)[0]


def read_nofollow_stat(path: Path, *, max_bytes: int | None = None) -> tuple[bytes, os.stat_result]:
    """:func:`read_nofollow`, with what ``fstat`` said of the descriptor read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the last component is a symlink
            raise UnsafePath(f"{path.name} is a symbolic link; links are not followed.") from exc
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        return (f.read() if max_bytes is None else f.read(max_bytes)), st


def next_free_suffix(
    folder: Path, parts: Sequence[tuple[str, str]], *, taken: Container[str] = ()
) -> str:
    """The first of ``""``, ``"-2"``, ``"-3"``... free for every ``(stem, suffix)`` of ``parts``.

    The tail goes between each stem and its suffix: ``[("beach", ".jpg"),
    ("beach-end", ".png")]`` with ``"-2"`` is ``beach-2.jpg`` + ``beach-end-2.png``
    (one tail for all the files of one drop).  A tail is free when the names are
    distinct, none exists in ``folder`` (a dangling symlink counts as existing) and
    none is in ``taken``, the file names other jobs planned in that folder but did
    not create yet.  Case-sensitive names assumed.
    """
    n = 1
    while True:
        tail = "" if n == 1 else f"-{n}"
        names = [f"{stem}{tail}{suffix}" for stem, suffix in parts]
        if len(set(names)) == len(names) and not any(
            name in taken or os.path.lexists(folder / name) for name in names
        ):
            return tail
        n += 1


def remove_stale_temps(root: Path, *, older_than: float = 0.0) -> int:
    """Remove, under ``root``, the ``.NAME.<random>.tmp`` files this module leaves after a crash.

    With ``older_than=0`` (the default) every one goes: call it so only where no
    write can be running (at start-up, under the ledger's lock).  Elsewhere pass
    ``older_than`` (:data:`STALE_TEMP_SECONDS`): only temp files not modified for
    that many seconds are removed, and a live write's temp file is never that old.
    Symlinked folders are not followed.  Returns how many were removed.
    """
    removed = 0
    cutoff = time.time() - older_than
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if not TEMP_RE.match(name):
                continue
            path = Path(folder, name)
            try:
                if older_than > 0 and os.lstat(path).st_mtime >= cutoff:
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            log.info("fs.temp_removed", path=str(path.relative_to(root)))
            removed += 1
    return removed
