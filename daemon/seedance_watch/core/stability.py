"""The pure core of the inbox: when is a file complete, and which files form a job.

Nothing here reads files, sleeps or looks at a clock: the shell (``inbox.py``)
stats files and passes the results and the current time in, and these classes
return decisions.  That keeps the subtle rules unit-testable with a fake clock.

* :class:`StabilityTracker` decides when a file has stopped changing: its
  :class:`FileSig` must stay the same across ``settle_seconds`` of observation.
  All waiting files live in one heap; :meth:`StabilityTracker.next_deadline`
  tells the shell when to look again, so there is no fixed tick.
* :class:`Pairer` turns the present files (stable or not) into inbox events:
  a ready drop, an orphan past ``pair_timeout``, an unsafe symlink, or an
  ambiguous group (two sidecar spellings, two images with one stem, one image
  claimed by two sidecars).

A sidecar may claim other files of its folder (its last frame, or its reference
images): :func:`claimed_files` is the one rule for which, and a claimed file is
part of the claiming drop, never a drop of its own.

Paths are inbox-relative POSIX strings (``sub/dir/beach.jpg``).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal, get_args

from seedance_watch.core import names

#: The role of a file a sidecar claims: its end image, or one of its reference images.
ClaimRole = Literal["last_frame", "reference"]
CLAIM_ROLES: tuple[ClaimRole, ...] = get_args(ClaimRole)

__all__ = [
    "CLAIM_ROLES",
    "AmbiguousDrop",
    "Candidate",
    "ClaimRole",
    "DropHint",
    "FileSig",
    "InboxEvent",
    "Orphan",
    "PairOutcome",
    "PairReady",
    "Pairer",
    "StabilityTracker",
    "ambiguity_message",
    "beside",
    "claimed_files",
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
    """What a stable sidecar says about the files of its drop, for pairing.

    ``alone``: no image of the sidecar's own name belongs to the drop: ``mode:
    text``, a reference drop, or a ``mode:`` or ``references:`` that is not valid,
    which then fails at once as ``invalid_sidecar`` rather than waiting for files.
    ``last_frame``: the bare file name of the end image, in the sidecar's folder,
    when the sidecar names a valid one.  ``references``: the bare file names of
    the reference images it lists, in its order (never the sidecar's own name:
    intake refuses that one).  A sidecar that cannot be read as YAML gives the
    default hint: an image drop like any other.
    """

    alone: bool = False
    last_frame: str | None = None
    references: tuple[str, ...] = ()

    @property
    def claims(self) -> tuple[str, ...]:
        """The bare names of the other files of its folder the drop holds, in order."""
        return (self.last_frame,) if self.last_frame is not None else self.references

    @property
    def role(self) -> ClaimRole | None:
        """The role of the files it claims (``last_frame`` or ``reference``), if any."""
        if self.last_frame is not None:
            return "last_frame"
        return "reference" if self.references else None


@dataclass(frozen=True, slots=True)
class PairReady:
    """A drop whose files are all complete: one job.

    An image drop is ``image`` + ``sidecar``; a first-and-last-frame drop adds
    ``last_frame`` (the file its sidecar names); a text drop (``mode: text``) is
    the sidecar alone (``image`` None); a reference drop is the sidecar and its
    ``references`` (in the sidecar's order).  Text and reference drops carry an
    image of the sidecar's own name when one lies beside it, for intake to refuse.
    """

    stem: str
    image: str | None
    sidecar: str
    last_frame: str | None = None
    references: tuple[str, ...] = ()

    @property
    def paths(self) -> tuple[str, ...]:
        """The drop's files, the lead first: image, last frame, sidecar, references."""
        named = (self.image, self.last_frame, self.sidecar, *self.references)
        return tuple(p for p in named if p is not None)


@dataclass(frozen=True, slots=True)
class Orphan:
    """A drop whose partner did not arrive within ``pair_timeout`` of the mtime.

    ``path`` is the file that waited (an image for ``missing_sidecar``, a sidecar
    for ``missing_image``); ``partners`` are the other files of its drop that did
    arrive (the image, and the files its sidecar claims); ``missing`` are the files
    the sidecar claims that never came, in its order; ``role`` is what the sidecar
    claims them as (``last_frame`` or ``reference``), None when it claims none.
    """

    path: str
    code: Literal["missing_sidecar", "missing_image"]
    partners: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    role: ClaimRole | None = None


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
    """A present file as the pairer sees it: mtime in seconds, stable or not, link or not.

    ``hint`` is what a sidecar says about its drop (read by the shell once the
    sidecar is stable, and kept while it changes); None for images and unread ones.
    """

    mtime: float
    stable: bool
    is_symlink: bool = False
    hint: DropHint | None = None


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


def beside(rel: str, name: str) -> str:
    """The inbox path of the file ``name`` in ``rel``'s folder (a file a sidecar names)."""
    parent = PurePosixPath(rel).parent
    return name if str(parent) == "." else f"{parent}/{name}"


def claimed_files(rel: str, hint: DropHint | None) -> tuple[str, ...]:
    """The paths of the files the sidecar ``rel`` claims with ``hint``, in its order.

    Its last frame, or its reference images: each belongs to this drop and is never
    a drop of its own.
    """
    if hint is None:
        return ()
    return tuple(beside(rel, name) for name in hint.claims)


@dataclass(slots=True)
class _Drop:
    """The files one decision covers: a stem's files, plus the files its sidecars claim."""

    members: list[str]
    claimed: list[str] = field(default_factory=list)  # named by its sidecars (present or not)
    # Claimed files that other drops' sidecars claim too -> every sidecar naming each.
    contested: dict[str, list[str]] = field(default_factory=dict)


class Pairer:
    """Groups files into drops and decides.

    A drop is the files of one :func:`names.pair_stem` (so always within one folder),
    plus the files its sidecar claims (:func:`claimed_files`: a ``last_frame:``, or
    the images listed in ``references:``), which belong to that drop and are never a
    drop of their own:

    * an image + a sidecar, all stable → :class:`PairReady`; with a last frame named,
      only once that file is there too (and stable);
    * a ``mode: text`` sidecar, stable → :class:`PairReady` at once; a reference
      sidecar once every image it lists is there and stable (either with the image of
      the same name if one lies beside it, which intake refuses);
    * more than one image or sidecar for a stem, or two sidecars claiming one file,
      all stable → :class:`AmbiguousDrop` (never a guess);
    * a stable drop still missing a file when the waiting file's mtime is
      ``pair_timeout`` old → :class:`Orphan` (a partner that is present but still being
      written counts as a partner);
    * any symlink among a drop's files, all stable → :class:`Unsafe` with the rest.

    Files that are neither images nor sidecars, and ignored names, are skipped.  The
    pairer keeps no state: the shell remembers what it already emitted, and passes the
    files of every stem a claimed file links (both ways).
    """

    def __init__(self, pair_timeout: float) -> None:
        self.pair_timeout = pair_timeout

    def evaluate(self, files: Mapping[str, Candidate], now: float) -> PairOutcome:
        drops: dict[str, _Drop] = {}
        for rel, cand in files.items():
            if not is_watched_path(rel):
                continue
            name = PurePosixPath(rel).name
            if cand.is_symlink or names.is_image(name) or names.is_sidecar(name):
                drops.setdefault(names.pair_stem(rel), _Drop([])).members.append(rel)
        self._attach_claims(drops, files)
        events: list[InboxEvent] = []
        waiting: list[tuple[str, float]] = []
        for stem in sorted(drops):
            drop = drops[stem]
            event, due = self._decide(stem, drop, files, now)
            if event is not None:
                events.append(event)
            elif due is not None:
                waiting.append(due)
        next_deadline = min((due for _, due in waiting), default=None)
        if next_deadline is not None and math.isinf(next_deadline):
            next_deadline = None
        events.sort(key=_event_key)
        return PairOutcome(events, waiting, next_deadline)

    @staticmethod
    def _attach_claims(drops: dict[str, _Drop], files: Mapping[str, Candidate]) -> None:
        """Move each claimed file out of its own stem into the claiming drop; drops
        whose sidecars claim one file become one (ambiguous) drop."""
        claimants: dict[str, list[str]] = {}  # claimed path -> the sidecars claiming it
        for stem in sorted(drops):
            drop = drops[stem]
            for rel in sorted(drop.members):
                if files[rel].is_symlink:
                    continue
                for path in claimed_files(rel, files[rel].hint):
                    if path not in drop.claimed:
                        drop.claimed.append(path)
                    claimants.setdefault(path, []).append(rel)
        for path in claimants:
            own = drops.get(names.pair_stem(path))
            if own is not None and path in own.members:
                own.members.remove(path)
                if not own.members:  # a drop with claims has a sidecar: never this one
                    del drops[names.pair_stem(path)]
        merged_into: dict[str, str] = {}

        def home(stem: str) -> str:
            while stem in merged_into:
                stem = merged_into[stem]
            return stem

        for path in sorted(claimants):
            sidecars = claimants[path]
            if len({names.pair_stem(rel) for rel in sidecars}) < 2:
                continue  # one stem's two sidecars: ambiguous for that alone
            stems = list(dict.fromkeys(home(names.pair_stem(rel)) for rel in sidecars))
            # One image, two drops: neither may have it (nor be guessed).
            first, *others = stems
            target = drops[first]
            for other in others:
                absorbed = drops.pop(other)
                merged_into[other] = first
                target.members.extend(absorbed.members)
                target.claimed.extend(p for p in absorbed.claimed if p not in target.claimed)
                target.contested.update(absorbed.contested)
            target.contested[path] = sidecars

    def _decide(
        self, stem: str, drop: _Drop, files: Mapping[str, Candidate], now: float
    ) -> tuple[InboxEvent | None, tuple[str, float] | None]:
        members = sorted(drop.members)
        present = [rel for rel in drop.claimed if rel in files]
        everything = members + present
        links = [rel for rel in everything if files[rel].is_symlink]
        if links:
            # One drop, one report: a link's real partners fail with it (once stable).
            if not all(files[rel].stable for rel in everything):
                return None, None
            rest = [rel for rel in everything if rel != links[0]]
            return Unsafe(links[0], tuple(sorted(rest, key=_lead_first))), None
        if not all(files[rel].stable for rel in everything):
            return None, None
        images = [rel for rel in members if names.is_image(PurePosixPath(rel).name)]
        sidecars = [rel for rel in members if not names.is_image(PurePosixPath(rel).name)]
        if drop.contested:
            message = "; ".join(
                _contest_message(path, claimants, files)
                for path, claimants in sorted(drop.contested.items())
            )
            return AmbiguousDrop(tuple(sorted(everything, key=_lead_first)), message), None
        if len(images) > 1 or len(sidecars) > 1:
            message = ambiguity_message(stem, images, sidecars)
            return AmbiguousDrop(tuple(sorted(everything, key=_lead_first)), message), None
        if not sidecars:
            (lone,) = images
            due = files[lone].mtime + self.pair_timeout
            if due <= now:
                return Orphan(lone, "missing_sidecar"), None
            return None, (lone, due)
        (sidecar,) = sidecars
        image = images[0] if images else None
        hint = files[sidecar].hint or DropHint()
        named = claimed_files(sidecar, hint)  # the drop's claims: its one sidecar's
        missing = tuple(rel for rel in named if rel not in files)
        if not missing and (hint.alone or image is not None):
            if hint.last_frame is not None:
                return PairReady(stem, image, sidecar, named[0]), None
            return PairReady(stem, image, sidecar, references=named), None
        due = files[sidecar].mtime + self.pair_timeout
        if due > now:
            return None, (sidecar, due)
        partners = tuple(p for p in (image, *present) if p is not None)
        return Orphan(sidecar, "missing_image", partners, missing, hint.role), None


def _contest_message(path: str, sidecars: list[str], files: Mapping[str, Candidate]) -> str:
    """Why a file two sidecars claim belongs to neither drop."""
    keys = {
        "last_frame" if (files[rel].hint or DropHint()).last_frame is not None else "references"
        for rel in sidecars
    }
    if keys == {"last_frame"}:
        return (
            f"{path} is named as last_frame by {', '.join(sidecars)}; "
            "an end image belongs to one drop"
        )
    return (
        f"{path} is named in {' and '.join(sorted(keys))} by {', '.join(sidecars)}; "
        "an image belongs to one drop"
    )


def _lead_first(rel: str) -> tuple[bool, str]:
    """Images before sidecars, by name: the order a failed drop's files are listed in."""
    return (not names.is_image(PurePosixPath(rel).name), rel)


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
        return event.paths[0]
    if isinstance(event, AmbiguousDrop):
        return event.paths[0]
    return event.path
