"""Watching the inbox: the I/O shell around :mod:`seedance_watch.core.stability`.

The shell stats files and feeds the pure :class:`StabilityTracker` and
:class:`Pairer`; it never decides anything itself.  File-system events come
from watchdog (inotify, or its polling observer on network and FUSE file
systems, where inotify is silent) and are bridged into asyncio with
``call_soon_threadsafe``: the observer thread never touches anything else.

The loop sleeps until the earliest of: a file event, the tracker's next
deadline, the next orphan deadline, the next full rescan.  There is no fixed
tick and no coroutine per file, so an idle daemon does nothing between
rescans, and a rescan stats each unclaimed input file once.  The rescan is the
safety net for everything events can miss (queue overflow, a watch added
after files landed in a new folder, a watch limit, a silent network mount).

The engine calls :meth:`Inbox.claim` for inputs it already owns (jobs in the
ledger) before :meth:`Inbox.run`, and :meth:`Inbox.release` once it has moved
inputs away.  Every emitted event holds its paths as if claimed: nothing is
emitted twice until released.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import heapq
import os
import stat
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Literal

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

from seedance_watch.aio import wait_event
from seedance_watch.core import names
from seedance_watch.core.stability import (
    AmbiguousDrop,
    Candidate,
    DropHint,
    FileSig,
    InboxEvent,
    Orphan,
    Pairer,
    PairReady,
    StabilityTracker,
    Unsafe,
    claimed_files,
    is_watched_path,
)
from seedance_watch.errors import UnsafePath
from seedance_watch.files import fsutil
from seedance_watch.files.sidecar import SIDECAR_MAX_BYTES, sidecar_hint

__all__ = [
    "AmbiguousDrop",
    "Inbox",
    "InboxEvent",
    "Orphan",
    "PairReady",
    "Unsafe",
    "detect_mode",
]

log = structlog.get_logger(__name__)

Mode = Literal["native", "polling"]

_EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileClosedEvent,
    FileAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]


def detect_mode(path: Path, *, mountinfo: Path | None = None) -> tuple[Mode, str]:
    """Choose native or polling watching for ``path`` from its mount's file-system type.

    Uses the mount with the longest mount point containing the resolved path (the
    nearest existing ancestor when the path does not exist yet).  Returns the mode
    and a reason for the log.
    """
    found = fsutil.file_system_of(path, mountinfo=mountinfo)
    if found is None:
        return "native", "inbox mount not found in the mount table; assuming local"
    mount_point, fstype = found
    if fsutil.is_network_fs(fstype):
        return "polling", f"{fstype} at {mount_point} is a network/FUSE file system"
    return "native", f"{fstype} at {mount_point} is a local file system"


def _sig(st: os.stat_result) -> FileSig:
    return FileSig(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, stat.S_ISLNK(st.st_mode))


def _is_input_name(name: str) -> bool:
    return names.is_image(name) or names.is_sidecar(name)


def _is_watched_dir(rel: str) -> bool:
    return not any(part.startswith(".") for part in PurePosixPath(rel).parts)


def _within(rel: str, folder: str) -> bool:
    return folder == "" or rel == folder or rel.startswith(folder + "/")


def _paths_of(event: InboxEvent) -> tuple[str, ...]:
    if isinstance(event, PairReady):
        return event.paths
    if isinstance(event, AmbiguousDrop):
        return event.paths
    return (event.path, *event.partners)


class _EventBridge(FileSystemEventHandler):
    """Runs on the observer thread: hands raw paths to the loop, nothing else."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, deliver: Callable[[str, bool], None]
    ) -> None:
        self._loop = loop
        self._deliver = deliver

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.is_directory and event.event_type not in ("created", "deleted", "moved"):
            return
        for raw in (event.src_path, event.dest_path):
            if raw:
                # The loop may already be closed while the observer is stopping.
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(
                        self._deliver, os.fsdecode(raw), event.is_directory
                    )


class Inbox:
    """Finds complete inputs in ``root`` and emits :data:`InboxEvent` s, each once.

    ``mode`` is ``native`` (inotify), ``polling`` (watchdog's polling observer every
    ``polling_interval`` seconds) or ``auto`` (:func:`detect_mode`).  ``clock``
    must agree with file mtimes (epoch seconds), since pair timeouts count from them.
    """

    def __init__(
        self,
        root: Path,
        *,
        settle_seconds: float,
        rescan_seconds: float,
        pair_timeout: float,
        mode: Literal["auto", "native", "polling"] = "auto",
        clock: Callable[[], float] = time.time,
        polling_interval: float = 1.0,
    ) -> None:
        self.root = Path(os.path.normpath(Path(root).absolute()))
        self._root = str(self.root)
        self._settle = settle_seconds
        self._rescan_seconds = rescan_seconds
        self._requested_mode = mode
        self._clock = clock
        self._polling_interval = polling_interval
        self._tracker = StabilityTracker(settle_seconds, trust_file_times=True)
        self._pairer = Pairer(pair_timeout)
        self._present: dict[str, FileSig] = {}
        self._by_stem: dict[str, set[str]] = {}
        # What each stable sidecar says about its drop (kept while it is rewritten),
        # and which sidecars claim each path (a last frame, a reference image).
        self._hints: dict[str, DropHint] = {}
        self._claims: dict[str, set[str]] = {}
        self._dirty: set[str] = set()
        # Stable files waiting for a partner: stem -> (orphan time, path), and a heap of times.
        self._waiting: dict[str, tuple[float, str]] = {}
        self._orphan_heap: list[tuple[float, str]] = []
        self._held: set[str] = set()
        self._pending_paths: set[str] = set()
        self._pending_dirs: set[str] = set()
        self._rescan_due = True
        self._root_missing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._mode: Mode | None = None
        self._mode_reason = ""
        self._observer: BaseObserver | None = None
        self._observed_root: tuple[int, int] | None = None
        #: Set once :meth:`run` has started the observer and scanned (sd_notify READY).
        self.watching = asyncio.Event()

    # --- public API -----------------------------------------------------------------------

    @property
    def mode_in_use(self) -> Mode:
        """``native`` or ``polling``: what :meth:`run` uses (after a fallback, ``polling``)."""
        if self._mode is None:
            self._mode, self._mode_reason = self._choose_mode()
        return self._mode

    async def run(self, emit: Callable[[InboxEvent], Awaitable[None]]) -> None:
        """Watch until cancelled, awaiting ``emit`` for each event (start-up files included)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._set_mode(self.mode_in_use)
        log.info("inbox.watching", path=self._root, mode=self._mode, reason=self._mode_reason)
        next_rescan = self._clock()
        try:
            while True:
                now = self._clock()
                if self._rescan_due or now >= next_rescan:
                    self._rescan_due = False
                    self._ensure_observer()
                    self._scan("", now)
                    next_rescan = now + self._rescan_seconds
                    self.watching.set()
                for event in self._step(now):
                    await emit(event)
                wake_at = min(
                    t
                    for t in (self._tracker.next_deadline(), self._next_orphan(), next_rescan)
                    if t is not None
                )
                timeout = wake_at - self._clock()
                if timeout > 0 and not self._has_pending():
                    await wait_event(self._wake, timeout)
                self._wake.clear()
        finally:
            self._stop_observer()
            self._loop = None
            self._wake = None

    async def scan_once(self) -> list[InboxEvent]:
        """Scan, wait until present files are stable, and return the events due now.

        Files still changing after ``10 * settle_seconds`` are given up on (logged as
        ``inbox.still_changing``).  Files whose partner may still come (younger than
        ``pair_timeout``) are not returned; they are logged as
        ``inbox.waiting_for_partner`` and stay in the inbox.
        """
        self._set_mode(self.mode_in_use)
        log.info("inbox.scanning", path=self._root, mode=self._mode, reason=self._mode_reason)
        start = self._clock()
        give_up_at = start + 10 * self._settle
        self._scan("", start)
        events: list[InboxEvent] = []
        while True:
            now = self._clock()
            events.extend(self._step(now))
            pending = self._tracker.pending()
            if not pending:
                break
            if now >= give_up_at:
                for rel in sorted(pending):
                    log.warning("inbox.still_changing", path=rel, waited=now - start)
                break
            deadline = self._tracker.next_deadline()
            delay = (deadline if deadline is not None else now) - now
            await asyncio.sleep(min(max(delay, 0.005), give_up_at - now))
        for stem in sorted(self._waiting):
            orphan_at, rel = self._waiting[stem]
            log.info("inbox.waiting_for_partner", path=rel, orphan_in=round(orphan_at - now, 1))
        return events

    def claim(self, paths: Iterable[str]) -> None:
        """The engine owns these paths now: never emit them again (until released)."""
        for rel in paths:
            self._hold(rel)

    def release(self, paths: Iterable[str]) -> None:
        """The engine is done with these paths; a file found there later is a new drop."""
        for rel in paths:
            self._held.discard(rel)
            self._pending_paths.add(rel)
        if self._wake is not None:
            self._wake.set()

    def rescan_now(self) -> None:
        """Ask for a full rescan soon.  Safe to call from any thread."""
        loop = self._loop
        if loop is None:
            self._rescan_due = True
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._request_rescan)

    # --- mode and observer ----------------------------------------------------------------

    def _choose_mode(self) -> tuple[Mode, str]:
        if self._requested_mode == "auto":
            return detect_mode(self.root)
        return self._requested_mode, "set by watch.mode"

    def _set_mode(self, mode: Mode) -> None:
        self._mode = mode
        # Only inotify on a local file system makes file times comparable with our clock.
        self._tracker.trust_file_times = mode == "native"

    def _ensure_observer(self) -> None:
        """Start the observer if the root exists; restart it if the root was replaced."""
        try:
            st = self.root.stat()
        except OSError:
            self._stop_observer()
            return
        key = (st.st_dev, st.st_ino)
        if self._observer is not None and self._observer.is_alive() and self._observed_root == key:
            return
        self._stop_observer()
        try:
            self._observer = self._start_observer(self.mode_in_use)
        except OSError as exc:
            if self._mode != "native":
                log.warning("inbox.observer_failed", mode=self._mode, error=str(exc))
                return
            log.warning(
                "inbox.native_failed",
                reason=exc.strerror or str(exc),
                errno=exc.errno,
                fallback="polling",
            )
            self._set_mode("polling")
            self._mode_reason = f"native watching failed: {exc.strerror or exc}"
            log.info("inbox.watching", path=self._root, mode="polling", reason=self._mode_reason)
            try:
                self._observer = self._start_observer("polling")
            except OSError as exc2:
                log.warning("inbox.observer_failed", mode="polling", error=str(exc2))
                return
        self._observed_root = key

    def _start_observer(self, mode: Mode) -> BaseObserver:
        assert self._loop is not None
        # The polling observer walks with the stat it is given: lstat, so it reports a
        # linked folder as the link it is and never walks through it.
        observer: BaseObserver = (
            Observer()
            if mode == "native"
            else PollingObserverVFS(os.lstat, os.scandir, polling_interval=self._polling_interval)
        )
        observer.daemon = True
        observer.schedule(
            _EventBridge(self._loop, self._on_fs_event),
            self._root,
            recursive=True,
            event_filter=_EVENT_FILTER,
        )
        observer.start()
        return observer

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        self._observed_root = None
        if observer is not None:
            observer.stop()
            with contextlib.suppress(RuntimeError):
                observer.join(timeout=5)

    # --- events from the observer (on the loop thread) ------------------------------------

    def _on_fs_event(self, path: str, is_dir: bool) -> None:
        rel = self._relative(path)
        if rel is None:
            return
        if rel == "":
            self._rescan_due = True
        elif is_dir:
            if _is_watched_dir(rel):
                self._pending_dirs.add(rel)
        elif is_watched_path(rel):
            self._pending_paths.add(rel)
        else:
            return
        if self._wake is not None:
            self._wake.set()

    def _request_rescan(self) -> None:
        self._rescan_due = True
        if self._wake is not None:
            self._wake.set()

    def _relative(self, path: str) -> str | None:
        if path == self._root:
            return ""
        if path.startswith(self._root + os.sep):
            return path[len(self._root) + 1 :].replace(os.sep, "/")
        return None

    def _has_pending(self) -> bool:
        return bool(self._pending_paths or self._pending_dirs or self._rescan_due)

    # --- one round of decisions -----------------------------------------------------------

    def _step(self, now: float) -> list[InboxEvent]:
        self._drain_pending(now)
        for rel in self._tracker.due(now):
            self._refresh(rel, now)
        for rel in self._tracker.ready(now):
            if names.is_sidecar(PurePosixPath(rel).name) and not self._present[rel].is_symlink:
                self._read_hint(rel)
            self._dirty.add(names.pair_stem(rel))
        while self._orphan_heap and self._orphan_heap[0][0] <= now:
            due, stem = heapq.heappop(self._orphan_heap)
            if self._waiting.get(stem, (None,))[0] == due:
                self._dirty.add(stem)
        return self._evaluate(now)

    def _linked_stems(self, dirty: set[str]) -> set[str]:
        """``dirty`` and every stem a claimed file links to it, both ways."""
        stems, todo = set(dirty), list(dirty)
        while todo:
            for rel in self._by_stem.get(todo.pop(), ()):
                linked = {names.pair_stem(s) for s in self._claims.get(rel, ())}
                linked.update(names.pair_stem(p) for p in claimed_files(rel, self._hints.get(rel)))
                for stem in linked - stems:
                    stems.add(stem)
                    todo.append(stem)
        return stems

    def _evaluate(self, now: float) -> list[InboxEvent]:
        if not self._dirty:
            return []
        files: dict[str, Candidate] = {}
        before: dict[str, tuple[float, str]] = {}
        for stem in self._linked_stems(self._dirty):
            if (was := self._waiting.pop(stem, None)) is not None:
                before[stem] = was
            for rel in self._by_stem.get(stem, ()):
                sig = self._present[rel]
                files[rel] = Candidate(
                    sig.mtime_ns / 1e9,
                    self._tracker.is_stable(rel),
                    sig.is_symlink,
                    self._hints.get(rel),
                )
        self._dirty.clear()
        outcome = self._pairer.evaluate(files, now)
        for rel, due in outcome.waiting:
            stem = names.pair_stem(rel)
            self._waiting[stem] = (due, rel)
            heapq.heappush(self._orphan_heap, (due, stem))
            if before.get(stem) != (due, rel):
                # Once per waiting spell: a drop that is complete but for a partner.
                log.info("inbox.waiting", path=rel, fails_in=round(due - now, 1))
        for event in outcome.events:
            for rel in _paths_of(event):
                self._hold(rel)
            log.info("inbox.event", kind=type(event).__name__, paths=list(_paths_of(event)))
        return outcome.events

    def _next_orphan(self) -> float | None:
        while self._orphan_heap:
            due, stem = self._orphan_heap[0]
            if self._waiting.get(stem, (None,))[0] == due:
                return due
            heapq.heappop(self._orphan_heap)
        return None

    # --- bookkeeping of present files -----------------------------------------------------

    def _observe(self, rel: str, sig: FileSig | None, now: float) -> None:
        if rel in self._held:
            return
        changed = self._tracker.observe(rel, sig, now)
        stem = names.pair_stem(rel)
        if sig is None:
            self._forget_hint(rel)
            if self._present.pop(rel, None) is not None:
                self._unindex(rel, stem)
        elif changed:
            if rel not in self._present:
                self._by_stem.setdefault(stem, set()).add(rel)
            self._present[rel] = sig
            self._dirty.add(stem)

    def _unindex(self, rel: str, stem: str) -> None:
        members = self._by_stem.get(stem)
        if members is not None:
            members.discard(rel)
            if not members:
                del self._by_stem[stem]
        self._dirty.add(stem)

    def _hold(self, rel: str) -> None:
        self._held.add(rel)
        self._tracker.forget(rel)
        self._forget_hint(rel)
        if self._present.pop(rel, None) is not None:
            self._unindex(rel, names.pair_stem(rel))

    def _read_hint(self, rel: str) -> None:
        """Read what a sidecar that just became stable says about its drop's files."""
        try:
            data, _ = fsutil.read_beneath(self._root, rel, max_bytes=SIDECAR_MAX_BYTES + 1)
        except (OSError, UnsafePath) as exc:  # gone, unreadable, or a link by now
            log.warning("inbox.read_failed", path=rel, error=str(exc))
            return  # the last hint stands; intake reads the sidecar again anyway
        self._forget_hint(rel)
        hint = sidecar_hint(data, PurePosixPath(rel).name)
        if hint == DropHint():
            return
        self._hints[rel] = hint
        for path in claimed_files(rel, hint):
            self._claims.setdefault(path, set()).add(rel)
            self._dirty.add(names.pair_stem(path))

    def _forget_hint(self, rel: str) -> None:
        for path in claimed_files(rel, self._hints.pop(rel, None)):
            claimers = self._claims.get(path)
            if claimers is not None:
                claimers.discard(rel)
                if not claimers:
                    del self._claims[path]
            self._dirty.add(names.pair_stem(path))

    def _lstat(self, rel: str) -> os.stat_result | None:
        """``rel``'s own stat, reached through folders opened without following links:
        a path that runs through a link is not in the inbox (None); the link itself is
        found under its own name."""
        try:
            return fsutil.lstat_beneath(self._root, rel)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                log.warning("inbox.stat_failed", path=rel, error=str(exc))
            return None

    def _refresh(self, rel: str, now: float) -> None:
        """Stat one path (from an event, a release or a due deadline) and record it."""
        st = self._lstat(rel)
        if st is not None and stat.S_ISDIR(st.st_mode):
            self._observe(rel, None, now)
            if _is_watched_dir(rel):
                self._scan(rel, now)
        elif st is not None and self._accepts(rel, st.st_mode):
            self._observe(rel, _sig(st), now)
        else:
            self._observe(rel, None, now)

    @staticmethod
    def _accepts(rel: str, mode: int) -> bool:
        if not is_watched_path(rel):
            return False
        if stat.S_ISLNK(mode):
            return True
        return stat.S_ISREG(mode) and _is_input_name(PurePosixPath(rel).name)

    def _drain_pending(self, now: float) -> None:
        dirs, self._pending_dirs = self._pending_dirs, set()
        paths, self._pending_paths = self._pending_paths, set()
        scanned: list[str] = []
        for folder in sorted(dirs, key=len):
            if not any(_within(folder, done) for done in scanned):
                self._scan(folder, now)
                scanned.append(folder)
        for rel in paths:
            if rel not in self._held and not any(_within(rel, done) for done in scanned):
                self._refresh(rel, now)

    # --- walking --------------------------------------------------------------------------

    def _scan(self, folder: str, now: float) -> None:
        """Walk ``folder`` (``""`` = the whole inbox) and reconcile what is there."""
        found: dict[str, FileSig] = {}
        if not self._walk(folder, found) and folder == "":
            if not self._root_missing:
                log.warning("inbox.missing", path=self._root)
                self._root_missing = True
        elif folder == "" and self._root_missing:
            log.info("inbox.found", path=self._root)
            self._root_missing = False
        for rel, sig in found.items():
            self._observe(rel, sig, now)
        for rel in [r for r in self._present if _within(r, folder) and r not in found]:
            self._observe(rel, None, now)

    def _walk(self, folder: str, found: dict[str, FileSig]) -> bool:
        """Collect input files and symlinks under ``folder``; False if the root is missing.

        Every folder is opened relative to its parent without following a link
        (:func:`fsutil.open_folder`), whatever the observer said about it: a linked
        folder is found as the link it is, never walked (docs/design.md, "Symlinks").
        At most one descriptor per level of the walk is open.
        """
        try:
            top = fsutil.open_folder(self._root, folder)
        except (FileNotFoundError, NotADirectoryError) as exc:
            if folder == "":
                return False
            if isinstance(exc, NotADirectoryError):
                self._found_link(folder, found)  # replaced by a link, or by a file
            return True  # the folder went away: its files count as vanished
        except OSError as exc:
            if exc.errno == errno.ELOOP and folder != "":
                self._found_link(folder, found)
            else:
                log.warning("inbox.unreadable", folder=folder or ".", error=str(exc))
            return True
        stack: list[tuple[str, int, Iterator[os.DirEntry[str]]]] = []
        self._enter(stack, folder, top)
        try:
            while stack:
                rel_dir, fd, entries = stack[-1]
                entry = next(entries, None)
                if entry is None:
                    stack.pop()
                    os.close(fd)
                    continue
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                try:
                    if entry.is_symlink():
                        # Reported, never followed (not even a link to a folder).
                        if not names.is_ignored(entry.name) and rel not in self._held:
                            found[rel] = _sig(entry.stat(follow_symlinks=False))
                    elif entry.is_dir(follow_symlinks=False):
                        if not entry.name.startswith("."):
                            self._descend(stack, rel, fd, entry.name, found)
                    elif (
                        _is_input_name(entry.name)
                        and rel not in self._held
                        and entry.is_file(follow_symlinks=False)
                    ):
                        found[rel] = _sig(entry.stat(follow_symlinks=False))
                except FileNotFoundError:
                    continue
        finally:
            for _, fd, _ in stack:
                os.close(fd)
        return True

    @staticmethod
    def _enter(stack: list[tuple[str, int, Iterator[os.DirEntry[str]]]], rel: str, fd: int) -> None:
        try:
            with os.scandir(fd) as it:
                entries = list(it)
        except OSError as exc:
            log.warning("inbox.unreadable", folder=rel or ".", error=str(exc))
            entries = []
        stack.append((rel, fd, iter(entries)))

    def _descend(
        self,
        stack: list[tuple[str, int, Iterator[os.DirEntry[str]]]],
        rel: str,
        parent_fd: int,
        name: str,
        found: dict[str, FileSig],
    ) -> None:
        """Open the subfolder ``name`` of ``parent_fd`` (never through a link) and walk it."""
        try:
            fd = os.open(name, fsutil.FOLDER_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            return
        except NotADirectoryError:
            self._found_link(rel, found)  # swapped for a link since it was listed
            return
        except OSError as exc:
            log.warning("inbox.unreadable", folder=rel, error=str(exc))
            return
        self._enter(stack, rel, fd)

    def _found_link(self, rel: str, found: dict[str, FileSig]) -> None:
        """``rel`` was to be a folder: if it is a link, report the link itself."""
        st = self._lstat(rel)
        if st is None or rel in self._held:
            return
        if stat.S_ISLNK(st.st_mode) and self._accepts(rel, st.st_mode):
            found[rel] = _sig(st)
