"""``seedance-watch validate PATH...``: the daemon's input checks, offline.

Pairs images and sidecars the way the inbox does and reports every problem the
daemon would report, with the same codes and messages (built by the same
functions), without uploading, submitting or opening any connection.

A folder is walked like the inbox: hidden folders and ignored names are skipped,
and so are files that are neither images nor sidecars (the daemon ignores them
too).  A file named on the command line is checked with its partner beside it;
named but not an input, it is a problem (``not_an_input``).  Messages name paths
relative to the folder given, as the daemon names them relative to the inbox.

Where the daemon stops at the first failing check of a pair (the sidecar), this
reports the sidecar's problems one per line and the image's too.  A model the
daemon does not know is a warning on stderr (exit 0) unless ``strict_model``.

The folder presets above each drop (``.seedance-watch.yaml``) are read as the
daemon reads them, from the inbox's top (``inbox``, when the drop is in it; else
the folder given) down to the drop's folder.  Each drop that passes is shown with
its effective model, options and priority, and where each came from: the sidecar,
a preset, the config's defaults or model settings.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from seedance_watch import errors as E
from seedance_watch.commands.terminal import printable
from seedance_watch.core.models import DEFAULT_MODELS, MODELS, Kind
from seedance_watch.core.names import is_ignored, is_image, is_sidecar
from seedance_watch.core.options import GenerationOptions
from seedance_watch.core.stability import (
    AmbiguousDrop,
    Candidate,
    DropHint,
    InboxEvent,
    Orphan,
    Pairer,
    PairReady,
    claimed_files,
)
from seedance_watch.files.drop import (
    check_drop_files,
    check_last_frame,
    check_reference,
    event_error,
)
from seedance_watch.files.fsutil import read_nofollow
from seedance_watch.files.images import check_image
from seedance_watch.files.presets import PRESET_NAME, read_presets
from seedance_watch.files.sidecar import (
    SIDECAR_MAX_BYTES,
    Request,
    build_request,
    check_preset,
    check_sidecar,
    sidecar_hint,
)

__all__ = ["Effective", "Problem", "validate_paths"]


@dataclass(frozen=True)
class Problem:
    """One problem as the daemon reports it (``code`` and ``message`` of NAME.error.json)."""

    path: Path
    code: str
    message: str
    hint: str | None = None


@dataclass(frozen=True)
class Effective:
    """A drop that passes: what the daemon would send, and where each value came from."""

    path: Path
    request: Request

    def text(self) -> str:
        """``model M (origin); ratio 9:16 (origin); ...; priority 0 (origin)``."""
        values = {
            "model": self.request.model,
            **self.request.options.set_options(),
            "priority": self.request.priority,
        }
        parts = []
        for key, origin in self.request.origins.items():
            value = values[key]
            shown = str(value).lower() if isinstance(value, bool) else str(value)
            parts.append(f"{key} {shown} ({origin})")
        return "; ".join(parts)


def _problem(path: Path, error: E.JobError) -> Problem:
    return Problem(path, error.code, error.message, error.hint)


def _offline(path: Path, event: InboxEvent) -> Problem:
    """The daemon's error for a drop that is not whole, said as an offline check says it:
    there is no waiting here (the daemon waits ``watch.pair_timeout`` from the mtime)."""
    error = event_error(event)
    if isinstance(event, Orphan):
        if event.code == "missing_sidecar":
            stem = PurePosixPath(event.path).stem
            message = f"no sidecar ({stem}.yaml or {stem}.yml) beside {event.path}"
        elif event.missing:
            message = f"{event.path} names {', '.join(event.missing)}, which is not beside it"
        else:
            stem = PurePosixPath(event.path).stem
            message = (
                f"no image named {stem}.* beside the sidecar {event.path} (a sidecar alone "
                "is a drop only with mode: text or references:)"
            )
        return Problem(
            path, error.code, message + "; the daemon waits watch.pair_timeout for it", error.hint
        )
    return _problem(path, error)


def _sidecar_problems(path: Path, strict_model: bool) -> list[Problem]:
    try:
        data = read_nofollow(path, max_bytes=SIDECAR_MAX_BYTES)
    except OSError as exc:
        return [Problem(path, E.InvalidSidecar.code, f"cannot be read: {exc.strerror}")]
    return [_problem(path, error) for error in check_sidecar(data, strict_model=strict_model)[1]]


def _preset_problems(path: Path, strict_model: bool) -> list[Problem]:
    """A folder preset named on the command line, checked alone."""
    try:
        data = read_nofollow(path, max_bytes=SIDECAR_MAX_BYTES + 1)
    except OSError as exc:
        return [Problem(path, E.InvalidSidecar.code, f"cannot be read: {exc.strerror}")]
    errors = check_preset(data, path.name, strict_model=strict_model)[1]
    return [_problem(path, error) for error in errors]


def _stderr_warning(path: Path, message: str) -> None:
    print(printable(f"{path}: warning: {message}"), file=sys.stderr)


def _entries(paths: Iterable[Path]) -> dict[Path, tuple[str, bool]]:
    """Every file to look at → (its path in messages, named on the command line or not)."""
    found: dict[Path, tuple[str, bool]] = {}

    def add(file: Path, rel: str, named: bool) -> None:
        key = Path(os.path.normpath(file.absolute()))
        if key not in found or named:
            found[key] = (rel, named or found.get(key, ("", False))[1])

    for root in paths:
        if root.is_dir() and not root.is_symlink():
            for file in _walk(root):
                add(file, file.relative_to(root).as_posix(), False)
            continue
        add(root, root.name, True)
        if is_image(root.name) or is_sidecar(root.name):
            # A file named alone: the rest of its drop belongs to the check.
            for name in _drop_siblings(root):
                add(root.parent / name, name, False)
    return found


def _drop_siblings(file: Path) -> list[str]:
    """The names of the files of ``file``'s drop beside it: the same stem (a partner, a
    second spelling), the files its sidecar claims (a last frame, reference images),
    the drop that claims it."""
    try:
        siblings = [
            e.name for e in os.scandir(file.parent) if is_image(e.name) or is_sidecar(e.name)
        ]
    except OSError:
        return []

    def stem(name: str) -> str:
        return PurePosixPath(name).stem

    claims = {
        name: set(claimed_files(name, _hint(file.parent / name)))
        for name in siblings
        if is_sidecar(name)
    }
    stems = {stem(file.name)}
    while True:  # until nothing more links in (a drop may claim nine images)
        members = {name for name in siblings if stem(name) in stems}
        grown = set(stems)
        for name, claimed in claims.items():
            if stem(name) in stems:
                grown.update(stem(path) for path in claimed)
            if claimed & members:
                grown.add(stem(name))
        if grown == stems:
            return [name for name in siblings if stem(name) in stems]
        stems = grown


def _hint(sidecar: Path) -> DropHint | None:
    if sidecar.is_symlink():
        return None
    try:
        data = read_nofollow(sidecar, max_bytes=SIDECAR_MAX_BYTES + 1)
    except OSError:
        return None
    return sidecar_hint(data, sidecar.name)


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        kept = []
        for name in dirnames:
            if name.startswith("."):
                continue
            if (base / name).is_symlink():
                yield base / name  # a link to a folder: reported, never followed
            else:
                kept.append(name)
        dirnames[:] = kept
        for name in filenames:
            if not is_ignored(name):
                yield base / name


def validate_paths(
    paths: Iterable[Path],
    *,
    defaults: GenerationOptions,
    models: Mapping[Kind, str] = DEFAULT_MODELS,
    strict_model: bool = False,
    warn: Callable[[Path, str], None] = _stderr_warning,
    inbox: Path | None = None,
    passed: Callable[[Effective], None] | None = None,
) -> tuple[int, list[Problem]]:
    """Check every drop under ``paths``; returns (drops checked, problems).

    The files are paired by the daemon's own :class:`Pairer`, as if every file were
    complete and every wait over, so a drop missing a file is reported at once.
    ``passed`` is told each drop that passes, with its effective request.  ``inbox``
    (the config's) is where presets start for a drop inside it.
    """
    problems: list[Problem] = []
    folders: dict[Path, dict[str, Path]] = {}
    for file, (rel, named) in sorted(_entries(paths).items()):
        if not file.is_symlink() and not file.exists():
            if named:
                problems.append(Problem(file, "not_found", "no such file or folder"))
            continue
        if file.is_symlink():
            folders.setdefault(file.parent, {})[rel] = file
            continue
        if named and file.name == PRESET_NAME:
            problems.extend(_preset_problems(file, strict_model))
            continue
        if not (is_image(file.name) or is_sidecar(file.name)) or not file.is_file():
            if named:
                message = "not an image (.jpg .jpeg .png .webp .bmp .tif .tiff .gif) or a sidecar"
                problems.append(Problem(file, "not_an_input", f"{message} (.yaml .yml)"))
            continue
        folders.setdefault(file.parent, {})[rel] = file

    drops = 0
    pairer = Pairer(pair_timeout=0)
    for _, found in sorted(folders.items()):
        candidates = {
            rel: Candidate(
                0.0,
                True,
                file.is_symlink(),
                _hint(file) if is_sidecar(file.name) else None,
            )
            for rel, file in found.items()
        }
        for event in pairer.evaluate(candidates, math.inf).events:
            if isinstance(event, PairReady):
                drops += 1
                checked = _check_drop(
                    event, found, defaults, models, strict_model, warn, inbox=inbox
                )
                problems.extend(checked.problems)
                if checked.effective is not None and passed is not None:
                    passed(checked.effective)
            else:
                drops += 1
                lead = event.paths[0] if isinstance(event, AmbiguousDrop) else event.path
                problems.append(_offline(found[lead], event))
                if isinstance(event, Orphan) and is_sidecar(event.path):
                    # A lone sidecar is still read: its own problems are reported too.
                    problems.extend(_sidecar_problems(found[event.path], strict_model))
    problems.sort(key=lambda p: str(p.path))
    return drops, problems


@dataclass(frozen=True)
class _Checked:
    problems: list[Problem]
    effective: Effective | None = None


def _presets_base(sidecar: Path, rel: str, inbox: Path | None) -> tuple[Path, str]:
    """Where a drop's presets start and its folder from there: the inbox's top when the
    drop is in it, else the folder the check was given (``rel`` is relative to it)."""
    folder = sidecar.parent
    if inbox is not None:
        top = Path(os.path.normpath(inbox.absolute()))
        here = Path(os.path.normpath(folder.absolute()))
        if here == top or top in here.parents:
            return top, here.relative_to(top).as_posix()
    depth = len(PurePosixPath(rel).parts) - 1
    root = folder
    for _ in range(depth):
        root = root.parent
    return root, PurePosixPath(rel).parent.as_posix()


def _check_drop(
    event: PairReady,
    found: dict[str, Path],
    defaults: GenerationOptions,
    models: Mapping[Kind, str],
    strict_model: bool,
    warn: Callable[[Path, str], None],
    *,
    inbox: Path | None = None,
) -> _Checked:
    """The daemon's checks of one drop (files/drop.examine_drop), each problem on its own."""
    problems: list[Problem] = []
    effective: Effective | None = None
    sidecar = found[event.sidecar]
    try:
        data = read_nofollow(sidecar, max_bytes=SIDECAR_MAX_BYTES + 1)
    except OSError as exc:
        return _Checked(
            [Problem(sidecar, E.InvalidSidecar.code, f"cannot be read: {exc.strerror}")]
        )
    parsed, found_problems = check_sidecar(data, strict_model=strict_model)
    problems.extend(_problem(sidecar, error) for error in found_problems)
    base, folder = _presets_base(sidecar, event.sidecar, inbox)
    try:
        presets = read_presets(base, folder, strict_model=strict_model)
    except E.JobError as exc:
        problems.append(_problem(sidecar, exc))
        presets = None
    if parsed is not None and presets is not None:
        try:
            check_drop_files(parsed, event.image, event.sidecar, event.last_frame, event.references)
            request = build_request(parsed, defaults=defaults, models=models, presets=presets)
        except E.JobError as exc:
            problems.append(_problem(sidecar, exc))
        else:
            if request.model not in MODELS and not strict_model:
                warn(sidecar, f"model {request.model!r} is not a model the daemon knows")
            lead = found[event.image] if event.image is not None else sidecar
            effective = Effective(lead, request)
    checks: list[tuple[str | None, Callable[[Path], object]]] = [
        (event.image, check_image),
        (event.last_frame, check_last_frame),
        *((rel, check_reference) for rel in event.references),
    ]
    for rel, check in checks:
        if rel is None:
            continue
        try:
            check(found[rel])
        except E.JobError as exc:
            problems.append(_problem(found[rel], exc))
        except OSError as exc:
            message = f"cannot be read: {exc.strerror}"
            problems.append(Problem(found[rel], E.InvalidImage.code, message))
    return _Checked(problems, effective if not problems else None)
