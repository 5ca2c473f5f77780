# ruff: noqa: PTH100, PTH112, PTH114, PTH115, PTH117, PTH118, PTH206, PTH208
# This module stands in for ``os`` itself: it speaks in os-level calls on purpose.
"""Record the file-system operations a process makes under one folder tree.

:class:`Recorder` replaces, for the duration of a ``with`` block, the ``os``
functions that change files or folders (and ``io.open``/``open``, to notice a
write through a file object, which it does not model) with wrappers that call
the real function and, when the path or descriptor is under the recorded root,
append a logical operation to :attr:`Recording.ops`.  The daemon makes all its
changes through these calls (``files/fsutil.py``, ``files/outbox.py``,
``ledger/jsonl.py``, ``ledger/lock.py``, ``providers/download.py``); ``pathlib``
reaches them too.

The logical model: every file, folder and symlink is an inode with a number of
our own; a folder's entries map names to inodes.  The tree as it was when
recording began is the durable starting point (:attr:`Recording.initial_entries`
and :attr:`Inode.initial`).  Then:

* :class:`DirOp`: an entry change in one folder (``create``, ``mkdir``,
  ``symlink``, ``link``, ``unlink``, ``rmdir``) or in two (``rename``);
* :class:`DataOp`: a ``write`` at an offset, or a ``truncate``, of one inode;
* :class:`SyncOp`: an ``fsync``/``fdatasync`` of a file or a folder;
* :class:`Marker`: a side effect the outside world saw (a poll sent for a task),
  placed in the same order as the file operations.

A wrapper holds one lock around the real call and its record, so the order of
the list is the order the kernel saw, across threads.  Anything the model does
not cover (a write through a file object, a rename into or out of the tree, a
file that appeared from elsewhere) goes to :attr:`Recording.unmodelled`; a
recording with entries there must not be trusted.
"""

from __future__ import annotations

import builtins
import io
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "DIR",
    "FILE",
    "SYMLINK",
    "DataOp",
    "DirOp",
    "Inode",
    "Marker",
    "Op",
    "Recorder",
    "Recording",
    "SyncOp",
]

FILE, DIR, SYMLINK = "file", "dir", "symlink"
ROOT_INO = 0
_WRITE_MODES = frozenset("wax+")
_PATCHED = (
    "open",
    "write",
    "pwrite",
    "ftruncate",
    "truncate",
    "fsync",
    "fdatasync",
    "close",
    "rename",
    "replace",
    "link",
    "unlink",
    "remove",
    "mkdir",
    "rmdir",
    "symlink",
)


@dataclass(slots=True)
class Inode:
    """A file, folder or symlink.  ``initial``: the durable bytes (or link target) at the start."""

    ino: int
    kind: str
    initial: bytes = b""
    created_by: int | None = None  # index of the op that made it; None: there at the start


@dataclass(frozen=True, slots=True)
class DirOp:
    """One change of folder entries.  ``rename`` removes ``name`` from ``dir`` and adds
    ``new_name`` in ``new_dir`` atomically; every other kind touches ``dir`` only."""

    index: int
    kind: str
    dir: int
    name: str
    ino: int
    path: str
    new_dir: int | None = None
    new_name: str | None = None
    new_path: str | None = None
    where: str = ""
    at: float = 0.0

    def folders(self) -> tuple[int, ...]:
        if self.new_dir is not None and self.new_dir != self.dir:
            return (self.dir, self.new_dir)
        return (self.dir,)

    def apply(self, folder: int, entries: dict[str, int]) -> None:
        """Apply this change to ``entries``, the entries of ``folder``."""
        if self.kind == "rename":
            if folder == self.dir and entries.get(self.name) == self.ino:
                del entries[self.name]
            if folder == self.new_dir:
                assert self.new_name is not None
                entries[self.new_name] = self.ino
        elif self.kind in ("unlink", "rmdir"):
            if entries.get(self.name) == self.ino:
                del entries[self.name]
        else:
            entries[self.name] = self.ino

    def describe(self) -> str:
        target = f" -> {self.new_path}" if self.new_path is not None else ""
        return f"#{self.index} {self.kind} {self.path}{target}  [{self.where}]"


@dataclass(frozen=True, slots=True)
class DataOp:
    """A ``write`` of ``data`` at ``offset``, or a ``truncate`` to ``offset`` bytes."""

    index: int
    kind: str
    ino: int
    offset: int
    data: bytes
    path: str
    where: str = ""
    at: float = 0.0

    def describe(self) -> str:
        what = f"{len(self.data)} bytes at {self.offset}" if self.kind == "write" else self.offset
        return f"#{self.index} {self.kind} {self.path} {what}  [{self.where}]"


@dataclass(frozen=True, slots=True)
class SyncOp:
    """``fsync``/``fdatasync`` of inode ``ino`` (a file: its data; a folder: its entries)."""

    index: int
    kind: str
    ino: int
    path: str
    where: str = ""
    at: float = 0.0

    def describe(self) -> str:
        return f"#{self.index} {self.kind} {self.path or '.'}  [{self.where}]"


@dataclass(frozen=True, slots=True)
class Marker:
    """A side effect outside the tree (``poll`` of task ``detail``), in op order."""

    index: int
    kind: str
    detail: str
    where: str = ""
    at: float = 0.0

    def describe(self) -> str:
        return f"#{self.index} {self.kind} {self.detail}  [{self.where}]"


Op = DirOp | DataOp | SyncOp | Marker


@dataclass
class Recording:
    """What a :class:`Recorder` saw: the starting tree and the operations after it."""

    root: Path
    inodes: dict[int, Inode] = field(default_factory=dict)
    initial_entries: dict[int, dict[str, int]] = field(default_factory=dict)
    #: A hard link to each file there at the start, kept outside the root: a state's
    #: tree gives such a file its very inode again (a power cut keeps inode numbers,
    #: and a job moves only the inode it examined), where a copy would be another file.
    originals: dict[int, Path] = field(default_factory=dict)
    ops: list[Op] = field(default_factory=list)
    unmodelled: list[str] = field(default_factory=list)

    def markers(self, kind: str) -> list[Marker]:
        return [op for op in self.ops if isinstance(op, Marker) and op.kind == kind]


@dataclass(slots=True)
class _Fd:
    ino: int
    real: tuple[int, int]
    path: str


def _where() -> str:
    """The innermost daemon functions on the stack: ``fsutil.move_file < outbox.finish_moves``."""
    frame = sys._getframe(2)
    names: list[str] = []
    while frame is not None and len(names) < 3:
        module = frame.f_globals.get("__name__", "")
        if module.startswith("seedance_watch."):
            names.append(f"{module.rsplit('.', 1)[-1]}.{frame.f_code.co_name}")
        frame = frame.f_back
    return " < ".join(names) or "-"


class Recorder:
    """``with Recorder(root) as rec: ...`` records changes under ``root`` into ``rec.recording``.

    The tree under ``root`` is snapshotted on entry as the durable starting state.
    """

    def __init__(self, root: Path) -> None:
        self.recording = Recording(Path(root))
        self._prefixes = sorted({os.path.abspath(root), os.path.realpath(root)})
        self._lock = threading.RLock()
        self._entries: dict[int, dict[str, int]] = {}
        self._fds: dict[int, _Fd] = {}
        self._next_ino = ROOT_INO
        self._saved: dict[tuple[Any, str], Any] = {}
        self._os: Any = None

    # --- the model ---

    def _new_inode(self, kind: str, initial: bytes = b"", created_by: int | None = None) -> int:
        ino = self._next_ino
        self._next_ino += 1
        self.recording.inodes[ino] = Inode(ino, kind, initial, created_by)
        if kind == DIR:
            self._entries[ino] = {}
        return ino

    def _snapshot(self) -> None:
        by_real: dict[tuple[int, int], int] = {}

        def visit(path: str) -> int:
            st = os.lstat(path)
            known = by_real.get((st.st_dev, st.st_ino))
            if known is not None:
                return known
            if os.path.isdir(path) and not os.path.islink(path):
                ino = self._new_inode(DIR)
                for name in sorted(os.listdir(path)):
                    self._entries[ino][name] = visit(os.path.join(path, name))
            elif os.path.islink(path):
                ino = self._new_inode(SYMLINK, os.fsencode(os.readlink(path)))
            else:
                with self._real_open(path, "rb") as f:
                    ino = self._new_inode(FILE, f.read())
                original = keep / str(ino)
                os.link(path, original)
                self.recording.originals[ino] = original
            by_real[(st.st_dev, st.st_ino)] = ino
            return ino

        root = self.recording.root
        keep = root.parent / f".{root.name}-originals"
        keep.mkdir(exist_ok=True)
        visit(str(root))
        self.recording.initial_entries = {k: dict(v) for k, v in self._entries.items()}

    def _rel(self, path: Any, dir_fd: int | None = None) -> str | None:
        """``path`` relative to the root (``""`` for the root), or None when outside it."""
        if isinstance(path, int) or (dir_fd is not None and not os.path.isabs(path)):
            return None
        full = os.path.abspath(os.fsdecode(path))
        for prefix in self._prefixes:
            if full == prefix:
                return ""
            if full.startswith(prefix + os.sep):
                return full[len(prefix) + 1 :]
        return None

    def _lookup(self, rel: str) -> int | None:
        ino = ROOT_INO
        for part in rel.split(os.sep) if rel else ():
            entries = self._entries.get(ino)
            if entries is None or part not in entries:
                return None
            ino = entries[part]
        return ino

    def _parent(self, rel: str) -> tuple[int, str]:
        head, _, name = rel.rpartition(os.sep)
        parent = self._lookup(head)
        if parent is None or parent not in self._entries:
            raise LookupError(rel)
        return parent, name

    def _append(self, make: Callable[[int, str, float], Op]) -> Op:
        ops = self.recording.ops
        op = make(len(ops), _where(), time.time())
        ops.append(op)
        return op

    def _dir_op(self, kind: str, rel: str, ino: int, new_rel: str | None = None) -> None:
        folder, name = self._parent(rel)
        new_dir = new_name = None
        if new_rel is not None:
            new_dir, new_name = self._parent(new_rel)
        op = self._append(
            lambda i, where, at: DirOp(
                i, kind, folder, name, ino, rel, new_dir, new_name, new_rel, where, at
            )
        )
        assert isinstance(op, DirOp)
        for f in op.folders():
            op.apply(f, self._entries[f])

    def _unmodelled(self, what: str) -> None:
        self.recording.unmodelled.append(f"{what}  [{_where()}]")

    def mark(self, kind: str, detail: str) -> None:
        """Record a side effect outside the tree, in order with the file operations."""
        with self._lock:
            self._append(lambda i, where, at: Marker(i, kind, detail, where, at))

    def _fd_ino(self, fd: int) -> _Fd | None:
        info = self._fds.get(fd)
        if info is None:
            return None
        try:
            st = os.fstat(fd)
        except OSError:
            return None
        if (st.st_dev, st.st_ino) != info.real:
            del self._fds[fd]  # closed behind our back (a file object) and reused
            return None
        return info

    # --- the wrappers ---

    def _open(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        rel = self._rel(path, dir_fd)
        if rel is None:
            return int(self._os.open(path, flags, mode, dir_fd=dir_fd))
        with self._lock:
            existed = os.path.lexists(path)
            ino = self._lookup(rel)
            fd = int(self._os.open(path, flags, mode, dir_fd=dir_fd))
            st = os.fstat(fd)
            if not existed:
                ino = self._new_inode(FILE, created_by=len(self.recording.ops))
                self._dir_op("create", rel, ino)
            elif ino is None:
                self._unmodelled(f"open of {rel}, a file the model does not know")
                return fd
            elif (
                flags & os.O_TRUNC
                and flags & os.O_ACCMODE != os.O_RDONLY
                and self.recording.inodes[ino].kind == FILE
            ):
                self._data(ino, rel, "truncate", 0, b"")
            self._fds[fd] = _Fd(ino, (st.st_dev, st.st_ino), rel)
            return fd

    def _data(self, ino: int, rel: str, kind: str, offset: int, data: bytes) -> None:
        self._append(lambda i, where, at: DataOp(i, kind, ino, offset, data, rel, where, at))

    def _write(self, fd: int, data: Any) -> int:
        if fd not in self._fds:
            return int(self._os.write(fd, data))
        with self._lock:
            info = self._fd_ino(fd)
            n = int(self._os.write(fd, data))
            if info is not None:
                end = os.lseek(fd, 0, os.SEEK_CUR)
                self._data(info.ino, info.path, "write", end - n, bytes(memoryview(data)[:n]))
            return n

    def _pwrite(self, fd: int, data: Any, offset: int) -> int:
        if fd not in self._fds:
            return int(self._os.pwrite(fd, data, offset))
        with self._lock:
            info = self._fd_ino(fd)
            n = int(self._os.pwrite(fd, data, offset))
            if info is not None:
                self._data(info.ino, info.path, "write", offset, bytes(memoryview(data)[:n]))
            return n

    def _ftruncate(self, fd: int, length: int) -> None:
        if fd not in self._fds:
            return self._os.ftruncate(fd, length)  # type: ignore[no-any-return]
        with self._lock:
            info = self._fd_ino(fd)
            self._os.ftruncate(fd, length)
            if info is not None:
                self._data(info.ino, info.path, "truncate", length, b"")
            return None

    def _truncate(self, path: Any, length: int) -> None:
        rel = self._rel(path)
        if rel is None:
            return self._os.truncate(path, length)  # type: ignore[no-any-return]
        with self._lock:
            ino = self._lookup(rel)
            self._os.truncate(path, length)
            if ino is None:
                self._unmodelled(f"truncate of unknown {rel}")
            else:
                self._data(ino, rel, "truncate", length, b"")
            return None

    def _sync(self, kind: str) -> Callable[[int], None]:
        real = getattr(self._os, kind)

        def sync(fd: int) -> None:
            if fd not in self._fds:
                return real(fd)  # type: ignore[no-any-return]
            with self._lock:
                info = self._fd_ino(fd)
                real(fd)
                if info is not None:
                    self._append(
                        lambda i, where, at: SyncOp(i, kind, info.ino, info.path, where, at)
                    )
                return None

        return sync

    def _close(self, fd: int) -> None:
        if fd not in self._fds:
            return self._os.close(fd)  # type: ignore[no-any-return]
        with self._lock:
            self._fds.pop(fd, None)
            self._os.close(fd)
            return None

    def _move(self, kind: str) -> Callable[..., None]:
        real = getattr(self._os, kind)

        def move(src: Any, dst: Any, **kwargs: Any) -> None:
            rs, rd = (
                self._rel(src, kwargs.get("src_dir_fd")),
                self._rel(dst, kwargs.get("dst_dir_fd")),
            )
            if rs is None and rd is None:
                return real(src, dst, **kwargs)  # type: ignore[no-any-return]
            with self._lock:
                ino = None if rs is None else self._lookup(rs)
                replaced = None if rd is None else self._lookup(rd)
                real(src, dst, **kwargs)
                if rs is None or rd is None or ino is None:
                    self._unmodelled(f"{kind} {src} -> {dst} (into, out of or unknown in the tree)")
                elif replaced != ino:  # two links of one file: rename does nothing
                    self._dir_op("rename", rs, ino, rd)
                return None

        return move

    def _link(self, src: Any, dst: Any, **kwargs: Any) -> None:
        rs, rd = self._rel(src, kwargs.get("src_dir_fd")), self._rel(dst, kwargs.get("dst_dir_fd"))
        if rs is None and rd is None:
            return self._os.link(src, dst, **kwargs)  # type: ignore[no-any-return]
        with self._lock:
            ino = None if rs is None else self._lookup(rs)
            self._os.link(src, dst, **kwargs)
            if rd is None or ino is None:
                self._unmodelled(f"link {src} -> {dst} (into, out of or unknown in the tree)")
            else:
                self._dir_op("link", rd, ino)
            return None

    def _remove(self, kind: str) -> Callable[..., None]:
        real = getattr(self._os, kind)
        op_kind = "rmdir" if kind == "rmdir" else "unlink"

        def remove(path: Any, *, dir_fd: int | None = None) -> None:
            rel = self._rel(path, dir_fd)
            if rel is None:
                return real(path, dir_fd=dir_fd)  # type: ignore[no-any-return]
            with self._lock:
                ino = self._lookup(rel)
                real(path, dir_fd=dir_fd)
                if ino is None:
                    self._unmodelled(f"{kind} of unknown {rel}")
                else:
                    self._dir_op(op_kind, rel, ino)
                return None

        return remove

    def _mkdir(self, path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        rel = self._rel(path, dir_fd)
        if rel is None:
            return self._os.mkdir(path, mode, dir_fd=dir_fd)  # type: ignore[no-any-return]
        with self._lock:
            self._os.mkdir(path, mode, dir_fd=dir_fd)
            ino = self._new_inode(DIR, created_by=len(self.recording.ops))
            self._dir_op("mkdir", rel, ino)
            return None

    def _symlink(
        self, src: Any, dst: Any, target_is_directory: bool = False, **kwargs: Any
    ) -> None:
        rel = self._rel(dst, kwargs.get("dir_fd"))
        if rel is None:
            return self._os.symlink(src, dst, target_is_directory, **kwargs)  # type: ignore[no-any-return]
        with self._lock:
            self._os.symlink(src, dst, target_is_directory, **kwargs)
            ino = self._new_inode(SYMLINK, os.fsencode(src), created_by=len(self.recording.ops))
            self._dir_op("symlink", rel, ino)
            return None

    def _io_open(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if _WRITE_MODES.intersection(mode):
            tracked = file in self._fds if isinstance(file, int) else self._rel(file) is not None
            if tracked:
                self._unmodelled(f"open({file!r}, {mode!r}): a write through a file object")
        return self._real_open(file, mode, *args, **kwargs)

    # --- installing ---

    _real_open: Callable[..., Any] = staticmethod(io.open)

    def __enter__(self) -> Recorder:
        self._snapshot()

        class _Real:
            pass

        real: Any = _Real()
        for name in _PATCHED:
            setattr(real, name, getattr(os, name))
        self._os = real
        patches: dict[str, Any] = {
            "open": self._open,
            "write": self._write,
            "pwrite": self._pwrite,
            "ftruncate": self._ftruncate,
            "truncate": self._truncate,
            "fsync": self._sync("fsync"),
            "fdatasync": self._sync("fdatasync"),
            "close": self._close,
            "rename": self._move("rename"),
            "replace": self._move("replace"),
            "link": self._link,
            "unlink": self._remove("unlink"),
            "remove": self._remove("remove"),
            "mkdir": self._mkdir,
            "rmdir": self._remove("rmdir"),
            "symlink": self._symlink,
        }
        assert set(patches) == set(_PATCHED)
        for name, wrapper in patches.items():
            self._saved[(os, name)] = getattr(os, name)
            setattr(os, name, wrapper)
        for module in (io, builtins):
            self._saved[(module, "open")] = module.open
            setattr(module, "open", self._io_open)  # noqa: B010
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for (module, name), value in self._saved.items():
            setattr(module, name, value)
        self._saved.clear()
