"""The pure core of the inbox: when is a file complete, and which files form a job.

Nothing here reads files, sleeps or looks at a clock: the shell (``inbox.py``)
stats files and passes the results and the current time in, and these classes
return decisions.  That keeps the subtle rules unit-testable with a fake clock.

* :class:`StabilityTracker` decides when a file has stopped changing: its
  :class:`FileSig` must stay the same across ``settle_seconds`` of observation.
  All waiting files live in one heap; :meth:`StabilityTracker.next_deadline`
  tells the shell when to look again, so there is no fixed tick.
* :class:`Pairer` turns the present files (stable or not) into inbox events:
  a ready pair, an orphan past ``pair_timeout``, an unsafe symlink, or an
  ambiguous group (two sidecar spellings, two images with one stem).

Paths are inbox-relative POSIX strings (``sub/dir/beach.jpg``).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal

from seedance_watch.core import names

__all__ = [
    "AmbiguousDrop",
    "Candidate",
    "DropHint",
    "FileSig",
    "InboxEvent",
    "Orphan",
    "PairOutcome",
    "PairReady",
    "Pairer",
    "StabilityTracker",
    "ambiguity_message",
    "is_watched_path",
]


@dataclass(frozen=True, slots=True)
class FileSig:
    """What ``lstat`` says about a file; any difference means the file changed."""

    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    is_symlink: bool


# --- stability ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Watched:
    sig: FileSig
    since: float  # when the current sig was first observed
    last_seen: float  # the latest observation with this sig
    first_seen: float  # the first observation of this file at all
    gen: int  # bumped on every sig change, so stale heap items are recognised
    stable: bool = False


class StabilityTracker:
    """Decides when files are complete, from observations stamped with the time.

    A file is stable once it has been observed with the same :class:`FileSig` at
    two moments at least ``settle_seconds`` apart (the shell re-stats it when
    :meth:`due` says so).  Any change starts the wait again; a vanished file
    (``sig=None``) is dropped.

    With ``trust_file_times`` (native watching on a local file system), a file
    whose first observation shows ``max(mtime, ctime)`` already older than
    ``settle_seconds`` is stable at once, so start-up and ``--once`` do not wait
    for files that were finished long ago.  ctime is included because copy tools
    can preserve an old mtime but not ctime.  Without trust (polling, network file
    systems whose server clock may differ) only observation counts.
    """

    def __init__(self, settle_seconds: float, trust_file_times: bool) -> None:
        if settle_seconds < 0:
            raise ValueError("settle_seconds must be >= 0")
        self.settle_seconds = settle_seconds
        self.trust_file_times = trust_file_times
        self._files: dict[str, _Watched] = {}
        # (ready_at, gen, rel): one item per pending sig; stale items are skipped lazily.
        self._heap: list[tuple[float, int, str]] = []
        # Pending files whose ready_at has passed but which still need a confirming look.
        self._ripe: dict[str, int] = {}
        self._gen = 0

    def __contains__(self, rel: object) -> bool:
        return rel in self._files

    def __len__(self) -> int:
        return len(self._files)

    def observe(self, rel: str, sig: FileSig | None, now: float) -> bool:
        """Record what a stat of ``rel`` showed at ``now``; ``None`` means it is gone.

        Returns True when this observation changed what is known (new, changed or
        vanished file), False when it only confirmed the current signature.
        """
        if sig is None:
            return self.forget(rel)
        entry = self._files.get(rel)
        if entry is not None and entry.sig == sig:
            entry.last_seen = max(entry.last_seen, now)
            return False
        self._gen += 1
        since = now
        if entry is None:
            newest = max(sig.mtime_ns, sig.ctime_ns) / 1e9
            if self.trust_file_times and newest <= now - self.settle_seconds:
                since = now - self.settle_seconds
            self._files[rel] = _Watched(sig, since, now, now, self._gen)
        else:
            entry.sig, entry.since, entry.last_seen = sig, since, now
            entry.gen, entry.stable = self._gen, False
        heapq.heappush(self._heap, (since + self.settle_seconds, self._gen, rel))
        return True

    def forget(self, rel: str) -> bool:
        """Stop tracking ``rel`` (vanished, or claimed by the engine)."""
        self._ripe.pop(rel, None)
        return self._files.pop(rel, None) is not None

    def _valid(self, rel: str, gen: int) -> _Watched | None:
        entry = self._files.get(rel)
        if entry is None or entry.gen != gen or entry.stable:
            return None
        return entry

    def _ripen(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            _, gen, rel = heapq.heappop(self._heap)
            if self._valid(rel, gen) is not None:
                self._ripe[rel] = gen

    def due(self, now: float) -> list[str]:
        """Pending files whose settle time has passed and that need a fresh stat."""
        self._ripen(now)
        out = []
        for rel, gen in self._ripe.items():
            entry = self._valid(rel, gen)
            if entry is not None and entry.last_seen < entry.since + self.settle_seconds:
                out.append(rel)
        return out

    def ready(self, now: float) -> list[str]:
        """Files that became stable since the last call (each reported once per stable spell)."""
        self._ripen(now)
        out = []
        for rel, gen in list(self._ripe.items()):
            entry = self._valid(rel, gen)
            if entry is None:
                del self._ripe[rel]
            elif entry.last_seen >= entry.since + self.settle_seconds:
                entry.stable = True
                del self._ripe[rel]
                out.append(rel)
        return out

    def next_deadline(self) -> float | None:
        """When the next pending file could become stable (may be in the past), else None."""
        best: float | None = None
        for rel, gen in self._ripe.items():
            entry = self._valid(rel, gen)
            if entry is not None:
                at = entry.since + self.settle_seconds
                best = at if best is None else min(best, at)
        while self._heap and self._valid(self._heap[0][2], self._heap[0][1]) is None:
            heapq.heappop(self._heap)
        if self._heap:
            best = self._heap[0][0] if best is None else min(best, self._heap[0][0])
        return best

    def is_stable(self, rel: str) -> bool:
        entry = self._files.get(rel)
        return entry is not None and entry.stable

    def sig(self, rel: str) -> FileSig | None:
        entry = self._files.get(rel)
        return entry.sig if entry is not None else None

    def pending(self) -> list[str]:
        """Tracked files that are not stable yet."""
        return [rel for rel, entry in self._files.items() if not entry.stable]

    def first_seen(self, rel: str) -> float | None:
        entry = self._files.get(rel)
        return entry.first_seen if entry is not None else None


# --- pairing ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DropHint:
    """What a stable sidecar says about the files of its drop (SPEC §4), for pairing.

    ``alone``: the sidecar is a drop of its own (``mode: text``, or a ``mode:`` that
    is not ``image``, which then fails at once as ``invalid_sidecar`` rather than
    waiting for an image).  ``last_frame``: the bare file name of the end image, in
    the sidecar's folder, when the sidecar names a valid one.  A sidecar that cannot
    be read as YAML gives the default hint: an image drop like any other.
    """

    alone: bool = False
    last_frame: str | None = None


@dataclass(frozen=True, slots=True)
class PairReady:
    """An image and its sidecar, both complete: one job."""

    stem: str
    image: str
    sidecar: str


@dataclass(frozen=True, slots=True)
class Orphan:
    """A file whose partner did not arrive within ``pair_timeout`` of its mtime."""

    path: str
    code: Literal["missing_sidecar", "missing_image"]


@dataclass(frozen=True, slots=True)
class Unsafe:
    """A symlink in the inbox (to a file or a folder): reported, never followed.

    ``partners`` are the real files of the same drop (the image beside a linked
    sidecar): they fail with the link, under one report.
    """

    path: str
    partners: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AmbiguousDrop:
    """Files that could pair in more than one way (``a.yaml`` + ``a.yml``, or two images)."""

    paths: tuple[str, ...]
    message: str


InboxEvent = PairReady | Orphan | Unsafe | AmbiguousDrop


@dataclass(frozen=True, slots=True)
class Candidate:
    """A present file as the pairer sees it: mtime in seconds, stable or not, link or not."""

    mtime: float
    stable: bool
    is_symlink: bool = False


@dataclass(frozen=True, slots=True)
class PairOutcome:
    """What :meth:`Pairer.evaluate` decided.

    ``waiting`` lists stable files with no partner yet and when they become
    orphans; ``next_deadline`` is the earliest of those times (None if none).
    """

    events: list[InboxEvent] = field(default_factory=list)
    waiting: list[tuple[str, float]] = field(default_factory=list)
    next_deadline: float | None = None


def is_watched_path(rel: str) -> bool:
    """True unless the name is ignored or some parent folder is hidden (starts with ``.``)."""
    parts = PurePosixPath(rel).parts
    if not parts or any(part.startswith(".") for part in parts[:-1]):
        return False
    return not names.is_ignored(parts[-1])


class Pairer:
    """Groups files by :func:`names.pair_stem` (so always within one folder) and decides.

    * one image + one sidecar, both stable → :class:`PairReady`;
    * more than one image or sidecar for a stem, all stable → :class:`AmbiguousDrop`
      (a second spelling is an error for that pair, never a guess);
    * a stable file alone whose mtime is ``pair_timeout`` old → :class:`Orphan`
      (a partner that is present but still being written counts as a partner);
    * a stable symlink → :class:`Unsafe` (symlinks never pair).

    Files that are neither images nor sidecars, and ignored names, are skipped.
    The pairer keeps no state: the shell remembers what it already emitted.
    """

    def __init__(self, pair_timeout: float) -> None:
        self.pair_timeout = pair_timeout

    def evaluate(self, files: Mapping[str, Candidate], now: float) -> PairOutcome:
        events: list[InboxEvent] = []
        waiting: list[tuple[str, float]] = []
        groups: dict[str, list[str]] = {}
        links: list[str] = []
        for rel, cand in files.items():
            if not is_watched_path(rel):
                continue
            if cand.is_symlink:
                if cand.stable:
                    links.append(rel)
                continue
            name = PurePosixPath(rel).name
            if names.is_image(name) or names.is_sidecar(name):
                groups.setdefault(names.pair_stem(rel), []).append(rel)
        for rel in sorted(links):
            # One drop, one report: a link's real partners fail with it (once stable).
            partners = sorted(groups.pop(names.pair_stem(rel), []))
            if all(files[p].stable for p in partners):
                events.append(Unsafe(rel, tuple(partners)))
        for stem in sorted(groups):
            members = sorted(groups[stem])
            if not all(files[rel].stable for rel in members):
                continue
            images = [rel for rel in members if names.is_image(PurePosixPath(rel).name)]
            sidecars = [rel for rel in members if not names.is_image(PurePosixPath(rel).name)]
            if len(images) > 1 or len(sidecars) > 1:
                message = ambiguity_message(stem, images, sidecars)
                events.append(AmbiguousDrop(tuple(members), message))
            elif images and sidecars:
                events.append(PairReady(stem, images[0], sidecars[0]))
            else:
                (rel,) = members
                due = files[rel].mtime + self.pair_timeout
                if due <= now:
                    events.append(Orphan(rel, "missing_sidecar" if images else "missing_image"))
                else:
                    waiting.append((rel, due))
        next_deadline = min((due for _, due in waiting), default=None)
        if next_deadline is not None and math.isinf(next_deadline):
            next_deadline = None
        events.sort(key=_event_key)
        return PairOutcome(events, waiting, next_deadline)


def ambiguity_message(stem: str, images: list[str], sidecars: list[str]) -> str:
    """Why a group of files is not one pair (shared with ``validate``)."""
    if len(sidecars) > 1:
        return (
            f"{stem!r} has more than one sidecar ({', '.join(sidecars)}); "
            "keep exactly one of NAME.yaml or NAME.yml"
        )
    return (
        f"{stem!r} has more than one image ({', '.join(images)}); "
        "give each image its own name and sidecar"
    )


def _event_key(event: InboxEvent) -> str:
    if isinstance(event, PairReady):
        return event.image
    if isinstance(event, AmbiguousDrop):
        return event.paths[0]
    return event.path
