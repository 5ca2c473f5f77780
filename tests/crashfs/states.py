"""The states a power cut may leave, for each cut point of a :class:`Recording`.

A cut at ``k`` means operations ``0 .. k-1`` were issued and nothing after.  The
persistence model (conservative: it allows every state below, which POSIX does,
although a given file system such as ext4 ``data=ordered`` produces fewer):

* **File data.**  The writes and truncates of one inode since its last
  ``fsync``/``fdatasync`` persist as a *prefix*: the first ``n`` of them, and the
  next one may be torn (its first half only) or have reached the disk as a size
  change without its bytes (zeros), the ALICE "garbage/zeros on append" case.
  Everything before the last fsync of the inode is kept.
* **Folder entries.**  The entry changes of one folder (create, mkdir, link,
  unlink, rename, rmdir, symlink) since its last fsync persist as a prefix, in
  order; folders are independent of one another (a file system that does not
  keep metadata operations in order across folders may keep the ``unlink`` in
  the inbox and lose the ``link`` in ``done/``).  A rename is atomic: kept in
  both its folders or in neither, and an fsync of either keeps it.  An fsync of
  a file does not make its name durable (``fsync(2)``: "an explicit fsync() on a
  file descriptor for the directory is also needed").
* Data and entries are independent: a name may survive with its data lost, and
  the reverse.

The states of one cut point are the product of one choice per folder and per
inode; :func:`states_at` enumerates them in a fixed order (everything kept,
only the forced part kept, each single folder or inode lagging behind all the
others, each one ahead of all the others) and then samples the product at
random with a seeded generator, up to a cap.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

from .recorder import DIR, FILE, ROOT_INO, SYMLINK, DataOp, DirOp, Op, Recording, SyncOp

__all__ = ["Choice", "CrashModel", "FsState", "Node"]

#: For a data dimension: (number of ops kept, how the next one landed: None, "half", "zeros").
DataChoice = tuple[int, str | None]


@dataclass(frozen=True, slots=True)
class Choice:
    """One crash state: the cut, then per folder and per inode what persisted."""

    cut: int
    dirs: tuple[tuple[int, int], ...]
    data: tuple[tuple[int, DataChoice], ...]


@dataclass(frozen=True, slots=True)
class Node:
    """One path of a materialised state: its kind, inode and bytes (or link target)."""

    kind: str
    ino: int
    content: bytes = b""


@dataclass
class FsState:
    """A crash state as a tree: relative POSIX path -> :class:`Node` (folders included)."""

    choice: Choice
    nodes: dict[str, Node]
    lost: list[Op]

    def key(self) -> str:
        """A digest of the tree (paths, kinds, bytes, which paths share an inode)."""
        h = hashlib.sha256()
        for path in sorted(self.nodes):
            node = self.nodes[path]
            h.update(f"{path}\0{node.kind}\0{node.ino}\0".encode())
            h.update(hashlib.sha256(node.content).digest())
        return h.hexdigest()

    def files_under(self, top: str) -> dict[str, Node]:
        """The regular files below folder ``top`` (``"done"``), by path."""
        prefix = top + "/"
        return {p: n for p, n in self.nodes.items() if p.startswith(prefix) and n.kind == FILE}


class CrashModel:
    """Index a recording by folder and inode, and build the crash states of each cut."""

    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        self.ops = recording.ops
        self.dir_ops: dict[int, list[int]] = {}
        self.data_ops: dict[int, list[int]] = {}
        self.syncs: dict[int, list[int]] = {}
        self.renames: list[DirOp] = []
        for op in self.ops:
            if isinstance(op, DirOp):
                for folder in op.folders():
                    self.dir_ops.setdefault(folder, []).append(op.index)
                if len(op.folders()) == 2:
                    self.renames.append(op)
            elif isinstance(op, DataOp):
                self.data_ops.setdefault(op.ino, []).append(op.index)
            elif isinstance(op, SyncOp):
                self.syncs.setdefault(op.ino, []).append(op.index)
        self._content_cache: dict[tuple[int, int, str | None], bytes] = {}

    @property
    def cuts(self) -> int:
        """Number of cut points: before the first op ... after the last."""
        return len(self.ops) + 1

    # --- bounds ---

    def _forced(self, ino: int, indices: list[int], cut: int) -> int:
        """How many of ``indices`` (< cut) precede the last sync of ``ino`` before ``cut``."""
        syncs = self.syncs.get(ino, [])
        last = bisect.bisect_left(syncs, cut) - 1
        if last < 0:
            return 0
        return bisect.bisect_left(indices, syncs[last])

    def bounds(self, cut: int) -> tuple[dict[int, tuple[int, int]], dict[int, list[DataChoice]]]:
        """Per folder (min kept, max kept) entry ops and per inode its data choices, at ``cut``."""
        dirs: dict[int, tuple[int, int]] = {}
        for folder, indices in self.dir_ops.items():
            hi = bisect.bisect_left(indices, cut)
            if hi:
                dirs[folder] = (self._forced(folder, indices, cut), hi)
        changed = True
        while changed:  # an fsync of either folder of a rename keeps it in both
            changed = False
            for op in self.renames:
                if op.index >= cut:
                    break
                a, b = op.folders()
                pa, pb = self._position(a, op.index), self._position(b, op.index)
                lo_a, hi_a = dirs[a]
                lo_b, hi_b = dirs[b]
                if lo_a > pa and lo_b <= pb:
                    dirs[b] = (pb + 1, hi_b)
                    changed = True
                elif lo_b > pb and lo_a <= pa:
                    dirs[a] = (pa + 1, hi_a)
                    changed = True
        data: dict[int, list[DataChoice]] = {}
        for ino, indices in self.data_ops.items():
            hi = bisect.bisect_left(indices, cut)
            if not hi:
                continue
            lo = self._forced(ino, indices, cut)
            options: list[DataChoice] = [(n, None) for n in range(hi, lo - 1, -1)]
            for n in range(hi - 1, lo - 1, -1):
                op = self.ops[indices[n]]
                assert isinstance(op, DataOp)
                if op.kind == "write" and len(op.data) > 1:
                    options += [(n, "half"), (n, "zeros")]
            data[ino] = options
        return dirs, data

    def _position(self, folder: int, index: int) -> int:
        return bisect.bisect_left(self.dir_ops[folder], index)

    def _consistent(self, cut: int, keep: dict[int, int]) -> None:
        """Cut back folders that keep one side of a rename whose other side is lost."""
        changed = True
        while changed:
            changed = False
            for op in self.renames:
                if op.index >= cut:
                    break
                a, b = op.folders()
                pa, pb = self._position(a, op.index), self._position(b, op.index)
                in_a, in_b = keep[a] > pa, keep[b] > pb
                if in_a and not in_b:
                    keep[a] = pa
                    changed = True
                elif in_b and not in_a:
                    keep[b] = pb
                    changed = True

    # --- enumeration ---

    def states_at(self, cut: int, cap: int, seed: int) -> list[Choice]:
        """Up to ``cap`` distinct choices at ``cut``, systematic ones first, then sampled."""
        dirs, data = self.bounds(cut)
        dims: list[tuple[str, int, list[object]]] = []
        for folder, (lo, hi) in sorted(dirs.items()):
            if hi > lo:
                dims.append(("d", folder, list(range(hi, lo - 1, -1))))
        for ino, options in sorted(data.items()):
            if len(options) > 1:
                dims.append(("i", ino, list(options)))
        top = [d[2][0] for d in dims]
        bottom = [d[2][-1] if d[0] == "d" else (d[2][len(_prefix_only(d[2])) - 1]) for d in dims]
        vectors: list[list[object]] = [top, bottom]
        lagging = [
            [*top[:i], option, *top[i + 1 :]] for i, d in enumerate(dims) for option in d[2][1:]
        ]
        ahead = [
            [*bottom[:i], option, *bottom[i + 1 :]]
            for i, d in enumerate(dims)
            for option in d[2]
            if option != bottom[i]
        ]
        rng = random.Random(seed * 1_000_003 + cut)
        vectors += lagging + ahead
        out: list[Choice] = []
        seen: set[Choice] = set()

        def add(vector: list[object]) -> None:
            choice = self._choice(cut, dirs, data, dims, vector)
            if choice not in seen:
                seen.add(choice)
                out.append(choice)

        for vector in vectors:
            if len(out) >= cap:
                return out
            add(vector)
        attempts = 0
        while len(out) < cap and dims and attempts < cap * 4:
            attempts += 1
            add([rng.choice(d[2]) for d in dims])
        return out

    def _choice(
        self,
        cut: int,
        dirs: dict[int, tuple[int, int]],
        data: dict[int, list[DataChoice]],
        dims: list[tuple[str, int, list[object]]],
        vector: list[object],
    ) -> Choice:
        keep = {folder: hi for folder, (_lo, hi) in dirs.items()}
        kept_data: dict[int, DataChoice] = {ino: options[0] for ino, options in data.items()}
        for (kind, key, _options), value in zip(dims, vector, strict=True):
            if kind == "d":
                assert isinstance(value, int)
                keep[key] = value
            else:
                assert isinstance(value, tuple)
                kept_data[key] = value
        self._consistent(cut, keep)
        return Choice(cut, tuple(sorted(keep.items())), tuple(sorted(kept_data.items())))

    def full(self, cut: int) -> Choice:
        """The state with everything issued before ``cut`` kept (what the kernel had)."""
        dirs, data = self.bounds(cut)
        return Choice(
            cut,
            tuple(sorted((f, hi) for f, (_lo, hi) in dirs.items())),
            tuple(sorted((ino, options[0]) for ino, options in data.items())),
        )

    # --- materialising ---

    def content(self, ino: int, choice: DataChoice) -> bytes:
        key = (ino, *choice)
        cached = self._content_cache.get(key)
        if cached is not None:
            return cached
        kept, torn = choice
        buf = bytearray(self.recording.inodes[ino].initial)
        indices = self.data_ops.get(ino, [])
        for n, index in enumerate(indices[: kept + (1 if torn else 0)]):
            op = self.ops[index]
            assert isinstance(op, DataOp)
            if op.kind == "truncate":
                del buf[op.offset :]
                buf.extend(bytes(max(0, op.offset - len(buf))))
                continue
            data = op.data
            if n == kept and torn == "half":
                data = data[: len(data) // 2]
            elif n == kept and torn == "zeros":
                data = bytes(len(data))
            end = op.offset + len(data)
            if len(buf) < op.offset:
                buf.extend(bytes(op.offset - len(buf)))
            buf[op.offset : end] = data
        out = bytes(buf)
        self._content_cache[key] = out
        return out

    def build(self, choice: Choice) -> FsState:
        """The tree of one crash state, and the operations it lost."""
        recording = self.recording
        keep = dict(choice.dirs)
        entries: dict[int, dict[str, int]] = {}
        lost: list[Op] = []
        for ino, inode in recording.inodes.items():
            if inode.kind != DIR:
                continue
            current = dict(recording.initial_entries.get(ino, {}))
            indices = self.dir_ops.get(ino, [])
            kept = keep.get(ino, 0)
            for index in indices[:kept]:
                op = self.ops[index]
                assert isinstance(op, DirOp)
                op.apply(ino, current)
            for index in indices[kept:]:
                if index < choice.cut:
                    lost.append(self.ops[index])
            entries[ino] = current
        data = dict(choice.data)
        for ino, (kept, torn) in data.items():
            indices = self.data_ops[ino]
            hi = bisect.bisect_left(indices, choice.cut)
            lost += [self.ops[i] for i in indices[kept + (1 if torn else 0) : hi]]
            if torn:
                lost.append(self.ops[indices[kept]])
        nodes: dict[str, Node] = {}
        seen_dirs: set[int] = set()

        def walk(ino: int, path: str) -> None:
            seen_dirs.add(ino)
            for name, child in sorted(entries[ino].items()):
                rel = f"{path}/{name}" if path else name
                kind = recording.inodes[child].kind
                if kind == DIR:
                    if child in seen_dirs:
                        continue
                    nodes[rel] = Node(DIR, child)
                    walk(child, rel)
                elif kind == SYMLINK:
                    nodes[rel] = Node(SYMLINK, child, recording.inodes[child].initial)
                else:
                    assert kind == FILE
                    persisted = data.get(child)
                    if persisted is None:
                        body = recording.inodes[child].initial
                    else:
                        body = self.content(child, persisted)
                    nodes[rel] = Node(FILE, child, body)

        walk(ROOT_INO, "")
        lost.sort(key=lambda op: op.index)
        return FsState(choice, nodes, lost)

    def iter_states(self, cap: int, seed: int) -> Iterator[FsState]:
        """Every cut point's states, in cut order."""
        for cut in range(self.cuts):
            for choice in self.states_at(cut, cap, seed):
                yield self.build(choice)


def _prefix_only(options: list[object]) -> list[object]:
    """The untorn data choices (listed first, most kept first)."""
    return [o for o in options if isinstance(o, tuple) and o[1] is None]
