"""Retry requests: which failed job sent which files back to the inbox.

``seedance-watch retry`` may run while the daemon holds the store, so it cannot
write the job records itself.  It appends a request here -- the failed job and the
identity of each file it moves back (its inbox path, its size and the hash the failed
job recorded; a move keeps all three, even across file systems) -- *before* it moves
them.  When the daemon takes a drop whose files match a
request, the new job records ``retry_of`` and the failed one becomes ``RETRIED``
pointing to it (docs/design.md, "Retry").  A request whose failed job is already
``RETRIED`` is spent; spent requests are dropped when the file is rewritten.

The file is ``state/retries.jsonl``: one JSON object per line, appended with one
``write`` on an ``O_APPEND`` descriptor and fsynced (a torn last line is ignored).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from seedance_watch.files.fsutil import atomic_write_bytes, fsync_dir

__all__ = ["RETRIES_NAME", "RetryBook", "RetryFile"]

RETRIES_NAME = "retries.jsonl"


@dataclass(frozen=True, slots=True)
class RetryFile:
    """A file a retry moved back: where it is in the inbox, and which bytes it holds
    (``sha256`` empty when the failed job never hashed it)."""

    path: str
    size: int
    sha256: str = ""

    def matches(self, other: RetryFile) -> bool:
        return (self.path, self.size) == (other.path, other.size) and (
            self.sha256 == other.sha256 or not self.sha256 or not other.sha256
        )


class RetryBook:
    """The retry requests of one state folder (any process may append)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / RETRIES_NAME
        self._seen: tuple[int, int] | None = None
        self._index: dict[str, list[tuple[RetryFile, str]]] = {}

    def request(self, job_id: str, files: Iterable[RetryFile]) -> None:
        """Record that ``job_id``'s ``files`` go back to the inbox (before they move)."""
        line = json.dumps(
            {"job_id": job_id, "files": [[f.path, f.size, f.sha256] for f in files]},
            ensure_ascii=True,
            separators=(",", ":"),
        )
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (line + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.path.parent)

    def requests(self) -> list[tuple[str, list[RetryFile]]]:
        """Every request, oldest first (a torn or damaged line is skipped)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        for raw in data.splitlines():
            try:
                entry = json.loads(raw)
                files = [RetryFile(str(p), int(n), str(h)) for p, n, h in entry["files"]]
                out.append((str(entry["job_id"]), files))
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def match(
        self, files: Iterable[RetryFile], *, usable: Callable[[str], bool] = lambda _id: True
    ) -> str | None:
        """The failed job that sent back any of ``files`` (same path, size and bytes),
        the newest request first, among the jobs ``usable`` accepts (not spent ones)."""
        index = self._current()
        for item in files:
            for sent, job_id in reversed(index.get(item.path, [])):
                if sent.matches(item) and usable(job_id):
                    return job_id
        return None

    def pending(self) -> set[str]:
        """The jobs with a request (spent or not: the caller knows which are RETRIED)."""
        return {job_id for entries in self._current().values() for _, job_id in entries}

    def compact(self, spent: Mapping[str, object]) -> None:
        """Rewrite the file without the requests of jobs in ``spent`` (start-up)."""
        kept = [(job_id, files) for job_id, files in self.requests() if job_id not in spent]
        if not self.path.exists() or len(kept) == len(self.requests()):
            return
        lines = [
            json.dumps({"job_id": j, "files": [[f.path, f.size, f.sha256] for f in fs]})
            for j, fs in kept
        ]
        atomic_write_bytes(
            self.path, "".join(line + "\n" for line in lines).encode("ascii"), mode=0o600
        )
        self._seen = None

    def close(self) -> None:
        """Nothing to release (a file is opened for each request)."""

    def _current(self) -> dict[str, list[tuple[RetryFile, str]]]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        if self._seen != (st.st_size, st.st_mtime_ns):
            index: dict[str, list[tuple[RetryFile, str]]] = {}
            for job_id, files in self.requests():
                for item in files:
                    index.setdefault(item.path, []).append((item, job_id))
            self._index = index
            self._seen = (st.st_size, st.st_mtime_ns)
        return self._index
