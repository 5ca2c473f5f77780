"""The JSON-lines store: the durable ledger (:class:`Ledger`) and its lock-free reader.

The state folder (``paths.state``) holds::

    LOCK                      flock()ed for the daemon's life (:mod:`.lock`)
    snapshot-<N>.jsonl        every live record as of the end of segment N
    ledger-<N+1>.jsonl ...    records appended since, one per state change
    daemon.json               the daemon's pauses (:mod:`.daemonfile`)

Each line is one checksummed record (:mod:`.record`).  The folder is created
``0700`` and every file in it ``0600`` (``0640`` in a group folder): :mod:`.modes`.

Why this shape: one ``put()`` is one ``os.write`` on an ``O_APPEND`` descriptor and
one ``fsync`` -- its cost does not depend on the number of jobs.  The log is kept
short by compaction: when the segments since the last snapshot hold more than
``max(10_000, live jobs)`` lines, appends move to a fresh segment and a
background thread writes the next snapshot (temp file, fsync, rename, directory
fsync) from a shallow copy of the in-memory records (they are immutable), then
deletes what it covers.  The amortised cost of compaction per change is O(1), and
start-up replays at most about one record per live job beyond the snapshot.

Recovery reads the newest snapshot and replays the later segments.  A torn last
record (a crash in the middle of an append) is dropped and the file truncated;
damage anywhere else raises :class:`LedgerCorrupt` -- it is never guessed around.
Recovery changes nothing on disk until every record has been read and decoded:
files a snapshot covers are deleted only then, so a damaged newest snapshot is
refused with the older snapshot and segments still there for a person to use.
A failed write or fsync raises :class:`DurabilityError` and the ledger refuses
further writes: after a failed fsync the kernel may have dropped the data, so
retrying could report a record durable that is not.

:class:`JsonlReader` reads the same files without the lock and without writing,
so ``status``, ``costs`` and ``retry`` work while the daemon runs
(docs/design.md, "Writers and readers").
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

import structlog

from seedance_watch.core.budget import BudgetPrices, BudgetTally
from seedance_watch.core.jobs import Job, State
from seedance_watch.errors import DurabilityError, LedgerCorrupt, StateError
from seedance_watch.files import fsutil
from seedance_watch.files.fsutil import fsync_dir
from seedance_watch.ledger.base import HostLease, OneHost, StoreHolder, status_order
from seedance_watch.ledger.daemonfile import DAEMON_STATUS_NAME, read_daemon_file
from seedance_watch.ledger.index import JobIndex
from seedance_watch.ledger.lock import (
    LOCK_NAME,
    acquire_lock,
    folder_error,
    held_by,
    warn_if_network_fs,
)
from seedance_watch.ledger.modes import STATE_FOLDER_MODE, file_mode, tighten
from seedance_watch.ledger.record import (
    WHAT_TO_DO,
    Latest,
    decode_latest,
    encode_record,
    scan,
)

__all__ = ["JsonlReader", "Ledger", "read_jobs"]

log = structlog.get_logger(__name__)

_SEGMENT_RE = re.compile(r"ledger-(\d{8})\.jsonl")
_SNAPSHOT_RE = re.compile(r"snapshot-(\d{8})\.jsonl")
_SNAPSHOT_TMP_RE = re.compile(r"snapshot-\d{8}\.jsonl\.tmp")
_PROBE_NAME = ".writable-probe"
_DEFAULT_COMPACT = 10_000
_SNAPSHOT_BATCH = 32
_SNAPSHOT_SYNC_BYTES = 4 << 20
_READ_ATTEMPTS = 5


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while loading: bulk allocation of objects that all stay
    alive makes it rescan the growing heap again and again (a third of start-up)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# --- the folder layout ------------------------------------------------------------------


def _segment_path(state_dir: Path, number: int) -> Path:
    return state_dir / f"ledger-{number:08d}.jsonl"


def _snapshot_path(state_dir: Path, number: int) -> Path:
    return state_dir / f"snapshot-{number:08d}.jsonl"


@dataclass(slots=True)
class _Layout:
    """What a directory listing says: the newest snapshot, the segments after it."""

    snapshot: int | None
    segments: list[int]
    leftovers: list[Path] = field(default_factory=list)  # covered, superseded or temp files
    gap: str | None = None


def _layout(state_dir: Path) -> _Layout:
    snapshots: list[int] = []
    segments: list[int] = []
    temps: list[Path] = []
    for entry in state_dir.iterdir():
        name = entry.name
        if m := _SEGMENT_RE.fullmatch(name):
            segments.append(int(m[1]))
        elif m := _SNAPSHOT_RE.fullmatch(name):
            snapshots.append(int(m[1]))
        elif _SNAPSHOT_TMP_RE.fullmatch(name):
            temps.append(state_dir / name)
    snapshot = max(snapshots, default=None)
    floor = 0 if snapshot is None else snapshot
    live = sorted(n for n in segments if n > floor)
    out = _Layout(snapshot, live, temps)
    out.leftovers += [_snapshot_path(state_dir, n) for n in snapshots if n != snapshot]
    out.leftovers += [_segment_path(state_dir, n) for n in segments if n <= floor]
    expected = list(range(floor + 1, floor + 1 + len(live)))
    if live != expected:
        missing = sorted(set(range(floor + 1, live[-1] + 1)) - set(live))
        out.gap = (
            f"ledger damaged: {state_dir}: segment "
            f"{_segment_path(state_dir, missing[0]).name} is missing "
            f"(after {'no snapshot' if snapshot is None else f'snapshot {snapshot:08d}'}). "
            f"Refusing to guess; {WHAT_TO_DO}."
        )
    return out


def _scan_all(state_dir: Path, layout: _Layout) -> tuple[Latest, int, int | None]:
    """Scan the snapshot and the segments after it, in order.

    Returns the latest record of each job, the number of lines in the segments, and
    where the newest segment's torn last line starts (None when it is whole).
    """
    latest: Latest = {}
    if layout.snapshot is not None:
        path = _snapshot_path(state_dir, layout.snapshot)
        scan(path.read_bytes(), path, latest, tail_ok=False)
    lines, torn_at = 0, None
    for number in layout.segments:
        path = _segment_path(state_dir, number)
        last = number == layout.segments[-1]
        count, torn_at = scan(path.read_bytes(), path, latest, tail_ok=last)
        lines += count
    return latest, lines, torn_at


def _write_once(fd: int, data: bytes) -> None:
    """One ``os.write``; a short write is an error (on a regular file it means ENOSPC)."""
    written = os.write(fd, data)
    if written != len(data):
        raise OSError(errno.ENOSPC, f"short write: {written} of {len(data)} bytes")


# --- the ledger -------------------------------------------------------------------------


class Ledger(OneHost):
    """The latest record of every job, durable on disk, indexed in memory.

    Open it with :meth:`Ledger.open`.  ``put`` may be called from any one thread
    at a time (it takes an internal lock); reads return the in-memory state.
    """

    def __init__(self, state_dir: Path, lock_fd: int, compact_threshold: int | None) -> None:
        self._dir = state_dir
        self._lock_fd: int | None = lock_fd
        self._mode = file_mode(state_dir)  # of every file it creates (docs: .modes)
        self._min_compact = compact_threshold or _DEFAULT_COMPACT
        self._mutex = threading.Lock()
        self._records = JobIndex()
        self._segment = 0
        self._fd: int | None = None
        self._lines = 0  # records appended since the last rotation (or in the replayed log)
        self._compactor: threading.Thread | None = None
        self._fatal: BaseException | None = None

    # --- opening and recovery ---

    @classmethod
    def open(cls, state_dir: Path, *, compact_threshold: int | None = None) -> Ledger:
        """Create the folder if needed, take its lock, recover the records.

        Raises :class:`LedgerLocked`, :class:`LedgerCorrupt` or :class:`DurabilityError`,
        and :class:`ConfigError` (key ``paths.state``) when the folder cannot be
        created or opened at all (EACCES, ENOTDIR, EROFS...); a failing disk there
        (EIO, ENOSPC) is a :class:`DurabilityError`.  Logs
        ``ledger.network_fs`` when the folder is on a network file system.
        ``compact_threshold`` replaces the 10,000-line floor of the compaction rule.
        """
        try:
            fsutil.make_dirs(state_dir, mode=STATE_FOLDER_MODE)
        except OSError as exc:
            raise folder_error(state_dir, exc) from exc
        warn_if_network_fs(state_dir)
        ledger = cls(state_dir, acquire_lock(state_dir, file_mode(state_dir)), compact_threshold)
        try:
            ledger._recover()
        except BaseException:
            ledger._release()
            raise
        return ledger

    def _recover(self) -> None:
        started = time.perf_counter()
        try:
            layout = _layout(self._dir)
        except OSError as exc:
            raise folder_error(self._dir, exc) from exc
        if layout.gap is not None:
            raise LedgerCorrupt(layout.gap)
        with _gc_paused():
            latest, self._lines, torn_at = _scan_all(self._dir, layout)
            for job in decode_latest(latest):
                self._records.add(job)
            del latest
        # Only now, with every record read and decoded, does recovery touch the disk:
        # a refusal above leaves all the files a person could recover from.
        if torn_at is not None:
            self._truncate(_segment_path(self._dir, layout.segments[-1]), torn_at)
        for path in layout.leftovers:
            path.unlink(missing_ok=True)
        # Under the lock nothing else writes here, so every temp file is a crash's.
        fsutil.remove_stale_temps(self._dir)
        # Files an older version made readable by all are made as private as new ones.
        for number in layout.segments:
            tighten(_segment_path(self._dir, number), self._mode)
        if layout.snapshot is not None:
            tighten(_snapshot_path(self._dir, layout.snapshot), self._mode)
        for name in (LOCK_NAME, DAEMON_STATUS_NAME):
            tighten(self._dir / name, self._mode)
        if layout.segments:
            self._segment = layout.segments[-1]
            self._fd = self._open_segment(self._segment, create=False)
        else:
            self._segment = (layout.snapshot or 0) + 1
            self._fd = self._open_segment(self._segment, create=True)
        if self._lines > self._threshold():
            # Left long by a crash during a compaction: compact now, in the background
            # like any other time, so that start-up stays fast.
            self._rotate_and_compact(background=True)
        log.info(
            "ledger.opened",
            state=str(self._dir),
            jobs=len(self._records.jobs),
            seconds=round(time.perf_counter() - started, 3),
            segments=len(layout.segments),
        )

    def _truncate(self, path: Path, offset: int) -> None:
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.ftruncate(fd, offset)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise DurabilityError(f"cannot drop the torn tail of {path}: {exc}") from exc
        log.warning("ledger.torn_tail_dropped", file=str(path), offset=offset)

    def _open_segment(self, number: int, *, create: bool) -> int:
        path = _segment_path(self._dir, number)
        flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT | os.O_EXCL if create else 0)
        try:
            fd = os.open(path, flags, self._mode)
            if create:
                # The new name must survive a crash before the records appended to it.
                fsync_dir(self._dir)
        except OSError as exc:
            raise DurabilityError(f"cannot open ledger segment {path}: {exc}") from exc
        return fd

    # --- reads ---

    def get(self, job_id: str) -> Job | None:
        """The latest record of ``job_id``, or None."""
        return self._records.jobs.get(job_id)

    def jobs(self) -> Mapping[str, Job]:
        """A live read-only view of the latest record of every job."""
        return MappingProxyType(self._records.jobs)

    def snapshot(self) -> list[Job]:
        """A copy of every record, safe to take from another thread.

        ``dict.copy`` runs without releasing the GIL, so a concurrent ``put`` cannot
        change the mapping under it (records themselves are immutable).
        """
        return list(self._records.jobs.copy().values())

    def active(self) -> list[Job]:
        """The jobs not yet DONE or FAILED (from an index, not a scan)."""
        return list(self._records.active.values())

    def find_done_by_content_key(self, content_key: str) -> Job | None:
        """The DONE job with this ``content_key`` updated last, or None."""
        return self._records.done_by_key.get(content_key)

    def counts(self) -> dict[str, int]:
        """Jobs by state value, every state present (zeros included)."""
        return self._records.counts()

    def counts_by_kind(self) -> dict[tuple[str, str], int]:
        """Jobs by (kind, state value): every state of each kind in the ledger."""
        # Another thread (/metrics) may ask: the index copies the counts first.
        return self._records.counts_by_kind()

    @property
    def compacting(self) -> bool:
        """True while a background compaction runs."""
        return self._compactor is not None and self._compactor.is_alive()

    def writable(self) -> bool:
        """For /healthz: no write has failed and the folder accepts a small write now."""
        if self._fatal is not None or self._fd is None:
            return False
        probe = self._dir / _PROBE_NAME
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_once(fd, b"ok")
            finally:
                os.close(fd)
            probe.unlink()
        except OSError:
            return False
        return True

    # --- writes ---

    def put(self, job: Job) -> None:
        """Append ``job`` as its latest record; durable (fsynced) when this returns.

        Raises :class:`DurabilityError` when the write or fsync fails (or failed
        before): the daemon must stop.
        """
        line = encode_record(job)
        with self._mutex:
            if self._fd is None:
                raise StateError("the ledger is closed")
            if self._fatal is not None:
                raise DurabilityError(
                    "the ledger refuses writes after an earlier write or fsync failure "
                    f"({self._fatal}); restart the daemon once the disk is healthy"
                ) from self._fatal
            try:
                _write_once(self._fd, line)
                os.fsync(self._fd)
            except OSError as exc:
                self._fatal = exc
                path = _segment_path(self._dir, self._segment)
                log.error("ledger.write_failed", file=str(path), job_id=job.job_id, error=str(exc))
                raise DurabilityError(
                    f"cannot make the record of job {job.job_id} durable in {path}: {exc}; "
                    "the kernel may have dropped data, so the daemon stops"
                ) from exc
            self._records.add(job)
            self._lines += 1
            if self._lines > self._threshold() and not self.compacting:
                self._rotate_and_compact(background=True)

    def compact(self, *, wait: bool = False) -> None:
        """Start a compaction now (unless one runs); with ``wait``, return when it ended."""
        with self._mutex:
            if self._fd is not None and self._fatal is None and not self.compacting:
                self._rotate_and_compact(background=True)
            compactor = self._compactor
        if wait and compactor is not None:
            compactor.join()

    def close(self) -> None:
        """Wait for a running compaction, close the files, release the lock."""
        compactor = self._compactor
        if compactor is not None:
            compactor.join()
        with self._mutex:
            self._release()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- internals ---

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _threshold(self) -> int:
        return max(self._min_compact, len(self._records.jobs))

    def _rotate_and_compact(self, *, background: bool) -> None:
        """Move appends to a new segment, then snapshot everything before it.

        Called with the mutex held (or during recovery).  A failure to create the new
        segment leaves appends where they were; a failed fsync is fatal.
        """
        assert self._fd is not None
        path = _segment_path(self._dir, self._segment + 1)
        try:
            new_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, self._mode)
        except OSError as exc:
            log.error("ledger.compaction_failed", stage="rotate", file=str(path), error=str(exc))
            self._lines = 0  # try again after another threshold's worth of changes
            return
        try:
            fsync_dir(self._dir)
        except OSError as exc:
            os.close(new_fd)
            self._fatal = exc
            log.error("ledger.compaction_failed", stage="fsync", file=str(path), error=str(exc))
            return
        os.close(self._fd)
        self._fd = new_fd
        self._segment += 1
        self._lines = 0
        covered, records = self._segment - 1, dict(self._records.jobs)
        if background:
            self._compactor = threading.Thread(
                target=self._write_snapshot, args=(covered, records), name="ledger-compactor"
            )
            self._compactor.start()
        else:
            self._write_snapshot(covered, records)

    def _write_snapshot(self, number: int, records: dict[str, Job]) -> None:
        """Write snapshot ``number`` (all ``records``), then delete what it covers."""
        started = time.perf_counter()
        final = _snapshot_path(self._dir, number)
        tmp = final.with_name(final.name + ".tmp")
        stage = "write"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, self._mode)
            try:
                batch: list[bytes] = []
                unsynced = 0
                for job in records.values():
                    batch.append(encode_record(job))
                    # Small batches: each os.write releases the GIL, so put() never waits long.
                    if len(batch) == _SNAPSHOT_BATCH:
                        chunk = b"".join(batch)
                        batch.clear()
                        _write_once(fd, chunk)
                        unsynced += len(chunk)
                        if unsynced >= _SNAPSHOT_SYNC_BYTES:
                            # Flushing as we go keeps put()'s own fsync from queueing
                            # behind one huge flush of the whole snapshot.
                            stage, unsynced = "fsync", 0
                            os.fsync(fd)
                            stage = "write"
                _write_once(fd, b"".join(batch))
                stage = "fsync"
                os.fsync(fd)
            finally:
                os.close(fd)
            stage = "rename"
            tmp.rename(final)
            stage = "fsync"
            fsync_dir(self._dir)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.error("ledger.compaction_failed", stage=stage, file=str(final), error=str(exc))
            if stage == "fsync":
                self._fatal = exc  # one attribute store: atomic, put() reads it under the mutex
            return
        try:
            for path in _layout(self._dir).leftovers:
                path.unlink(missing_ok=True)
            # daemon.json may be mid-write in another thread: only old temp files go.
            fsutil.remove_stale_temps(self._dir, older_than=fsutil.STALE_TEMP_SECONDS)
        except OSError as exc:
            # Harmless: the next open (or compaction) deletes what the snapshot covers.
            log.warning("ledger.cleanup_failed", error=str(exc))
        log.info(
            "ledger.compacted",
            jobs=len(records),
            snapshot=final.name,
            seconds=round(time.perf_counter() - started, 3),
        )


# --- reading without the lock -----------------------------------------------------------


def read_jobs(state_dir: Path) -> dict[str, Job]:
    """The latest record of every job, read without the lock and without writing.

    For ``seedance-watch status`` while the daemon runs: a torn last record (an
    append in progress) is ignored, and a file that vanishes mid-read (a
    compaction) restarts the read.  Damage elsewhere raises :class:`LedgerCorrupt`;
    a folder that cannot be read raises :class:`ConfigError` (key ``paths.state``).
    """
    if not state_dir.is_dir():
        return {}
    reason = ""
    for _ in range(_READ_ATTEMPTS):
        try:
            layout = _layout(state_dir)
            if layout.gap is not None:
                reason = layout.gap  # may be a listing that raced a compaction
                continue
            with _gc_paused():
                latest = _scan_all(state_dir, layout)[0]
                return {job.job_id: job for job in decode_latest(latest)}
        except FileNotFoundError as exc:
            reason = f"{exc.filename} vanished while reading"
        except OSError as exc:
            raise folder_error(state_dir, exc) from exc
    raise LedgerCorrupt(
        f"cannot read a consistent ledger in {state_dir} after {_READ_ATTEMPTS} attempts: {reason}"
    )


class JsonlReader:
    """A :class:`~seedance_watch.ledger.base.JobReader` of one state folder.

    Takes no lock and writes nothing, so it works while a daemon holds the folder:
    each call reads the files anew (:func:`read_jobs`), the holder is told by testing
    the lock (:func:`~seedance_watch.ledger.lock.held_by`), the pauses come from
    ``daemon.json``.  A folder that does not exist reads as an empty store.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def __repr__(self) -> str:
        return f"JsonlReader({str(self.state_dir)!r})"

    @property
    def where(self) -> str:
        return str(self.state_dir)

    def exists(self) -> bool:
        """Whether the folder holds a ledger: a segment or a snapshot (a daemon that
        opened it once left at least its first, empty, segment)."""
        if not self.state_dir.is_dir():
            return False
        try:
            layout = _layout(self.state_dir)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise folder_error(self.state_dir, exc) from exc
        return layout.snapshot is not None or bool(layout.segments)

    def snapshot(self) -> list[Job]:
        return sorted(read_jobs(self.state_dir).values(), key=status_order)

    def counts(self) -> dict[str, int]:
        found = Counter(job.state.value for job in read_jobs(self.state_dir).values())
        return {state.value: found[state.value] for state in State}

    def tally(self, prices: BudgetPrices) -> BudgetTally:
        return BudgetTally.from_jobs(prices, read_jobs(self.state_dir).values())

    def holder(self) -> StoreHolder | None:
        return held_by(self.state_dir)

    def daemon_record(self) -> dict[str, Any] | None:
        return read_daemon_file(self.state_dir)

    def hosts(self) -> list[HostLease] | None:
        """None: one host's ledger names no hosts."""
        return None

    def owners(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        """Nothing to release: every call opens and closes what it reads."""
