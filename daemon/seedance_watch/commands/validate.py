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
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from seedance_watch import errors as E
from seedance_watch.core.names import is_ignored, is_image, is_sidecar, pair_stem
from seedance_watch.core.options import GenerationOptions
from seedance_watch.core.stability import Orphan, Unsafe, ambiguity_message
from seedance_watch.files.sidecar import KNOWN_MODELS, build_request, check_image, check_sidecar
from seedance_watch.pipeline.intake import event_error, read_nofollow

__all__ = ["Problem", "validate_paths"]

_SIDECAR_MAX_BYTES = 1 << 20  # what the daemon reads of a sidecar


@dataclass(frozen=True)
class Problem:
    """One problem as the daemon reports it (``code`` and ``message`` of NAME.error.json)."""

    path: Path
    code: str
    message: str
    hint: str | None = None


def _problem(path: Path, error: E.JobError) -> Problem:
    return Problem(path, error.code, error.message, error.hint)


def _stderr_warning(path: Path, message: str) -> None:
    print(f"{path}: warning: {message}", file=sys.stderr)


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
            # A file named alone: its partner (or a second spelling) belongs to the check.
            stem = PurePosixPath(root.name).stem
            try:
                siblings = list(os.scandir(root.parent))
            except OSError:
                siblings = []
            for entry in siblings:
                name = entry.name
                if (is_image(name) or is_sidecar(name)) and PurePosixPath(name).stem == stem:
                    add(root.parent / name, name, False)
    return found


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
    default_model: str,
    strict_model: bool = False,
    warn: Callable[[Path, str], None] = _stderr_warning,
) -> tuple[int, list[Problem]]:
    """Check every pair under ``paths``; returns (pairs checked, problems)."""
    problems: list[Problem] = []
    groups: dict[tuple[Path, str], list[tuple[Path, str]]] = {}
    for file, (rel, named) in sorted(_entries(paths).items()):
        if file.is_symlink():
            problems.append(_problem(file, event_error(Unsafe(rel))))
            continue
        if not file.exists():
            if named:
                problems.append(Problem(file, "not_found", "no such file or folder"))
            continue
        if not (is_image(file.name) or is_sidecar(file.name)) or not file.is_file():
            if named:
                message = "not an image (.jpg .jpeg .png .webp .bmp .tif .tiff .gif) or a sidecar"
                problems.append(Problem(file, "not_an_input", f"{message} (.yaml .yml)"))
            continue
        groups.setdefault((file.parent, pair_stem(rel)), []).append((file, rel))

    pairs = 0
    for (_, stem), members in sorted(groups.items()):
        members.sort(key=lambda m: m[1])
        images = [m for m in members if is_image(m[0].name)]
        sidecars = [m for m in members if not is_image(m[0].name)]
        if len(images) > 1 or len(sidecars) > 1:
            message = ambiguity_message(stem, [r for _, r in images], [r for _, r in sidecars])
            problems.append(_problem(members[0][0], E.AmbiguousPair(message)))
        elif images and sidecars:
            pairs += 1
            problems.extend(
                _check_pair(
                    images[0][0], sidecars[0][0], defaults, default_model, strict_model, warn
                )
            )
        elif images:
            file, rel = images[0]
            problems.append(_problem(file, event_error(Orphan(rel, "missing_sidecar"))))
        else:
            file, rel = sidecars[0]
            problems.append(_problem(file, event_error(Orphan(rel, "missing_image"))))
    return pairs, problems


def _check_pair(
    image: Path,
    sidecar: Path,
    defaults: GenerationOptions,
    default_model: str,
    strict_model: bool,
    warn: Callable[[Path, str], None],
) -> list[Problem]:
    """The daemon's checks of one pair (intake.examine_drop), each problem on its own."""
    problems: list[Problem] = []
    try:
        data = read_nofollow(sidecar, max_bytes=_SIDECAR_MAX_BYTES)
    except OSError as exc:
        return [Problem(sidecar, E.InvalidSidecar.code, f"cannot be read: {exc.strerror}")]
    parsed, found = check_sidecar(data, strict_model=strict_model)
    problems.extend(_problem(sidecar, error) for error in found)
    if parsed is not None:
        request = build_request(parsed, defaults=defaults, default_model=default_model)
        if request.model not in KNOWN_MODELS and not strict_model:
            warn(sidecar, f"model {request.model!r} is not a model the daemon knows")
    try:
        check_image(image)
    except E.JobError as exc:
        problems.append(_problem(image, exc))
    except OSError as exc:
        problems.append(Problem(image, E.InvalidImage.code, f"cannot be read: {exc.strerror}"))
    return problems
