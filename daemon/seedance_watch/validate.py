"""``seedance-watch validate PATH...``: the daemon's input checks, offline.

Pairs images and sidecars the way the inbox does and reports every problem the
daemon would report, without uploading or submitting anything.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import errors as E
from .intake import read_nofollow
from .names import is_ignored, is_image, is_sidecar
from .options import GenerationOptions
from .sidecar import build_request, check_image, sidecar_problems

__all__ = ["Problem", "validate_paths"]


@dataclass(frozen=True)
class Problem:
    path: Path
    code: str
    message: str


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not is_ignored(name):
                yield Path(dirpath) / name


def _groups(paths: Iterable[Path]) -> dict[tuple[Path, str], set[Path]]:
    groups: dict[tuple[Path, str], set[Path]] = defaultdict(set)
    for path in paths:
        candidates = list(_walk(path)) if path.is_dir() else [path]
        for file in candidates:
            if is_image(file.name) or is_sidecar(file.name) or file.is_file() or file.is_symlink():
                groups[(file.parent, file.stem)].add(file)
        if not path.is_dir():
            # A file named alone: its partner beside it belongs to the check.
            for sibling in path.parent.glob(f"{_glob_escape(path.stem)}.*"):
                if is_image(sibling.name) or is_sidecar(sibling.name):
                    groups[(path.parent, path.stem)].add(sibling)
    return groups


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in text)


def validate_paths(
    paths: Iterable[Path],
    *,
    defaults: GenerationOptions,
    default_model: str,
    strict_model: bool = False,
) -> tuple[int, list[Problem]]:
    """Check every pair under ``paths``; returns (pairs checked, problems)."""
    problems: list[Problem] = []
    pairs = 0
    for (_, stem), files in sorted(_groups(paths).items()):
        images = sorted(f for f in files if is_image(f.name))
        sidecars = sorted(f for f in files if is_sidecar(f.name))
        others = sorted(files - set(images) - set(sidecars))
        for other in others:
            if other.exists() or other.is_symlink():
                problems.append(Problem(other, "not_an_input", "not an image or a sidecar"))
        links = [f for f in [*images, *sidecars] if f.is_symlink()]
        for link in links:
            problems.append(Problem(link, E.UnsafePath.code, "a symbolic link is never followed"))
        if links:
            continue
        if len(sidecars) > 1 or len(images) > 1:
            names = ", ".join(f.name for f in [*images, *sidecars])
            problems.append(
                Problem(files.pop(), E.AmbiguousPair.code, f"more than one file per role: {names}")
            )
            continue
        if not sidecars and images:
            problems.append(Problem(images[0], E.MissingSidecar.code, f"no {stem}.yaml beside it"))
            continue
        if not images and sidecars:
            problems.append(Problem(sidecars[0], E.MissingImage.code, f"no image named {stem}.*"))
            continue
        if not images:
            continue
        pairs += 1
        problems.extend(_check_pair(images[0], sidecars[0], defaults, default_model, strict_model))
    return pairs, problems


def _check_pair(
    image: Path, sidecar: Path, defaults: GenerationOptions, model: str, strict: bool
) -> list[Problem]:
    problems: list[Problem] = []
    try:
        data = read_nofollow(sidecar, max_bytes=1 << 20)
    except OSError as exc:
        return [Problem(sidecar, E.InvalidSidecar.code, f"unreadable: {exc.strerror}")]
    found = sidecar_problems(data, strict_model=strict)
    problems.extend(Problem(sidecar, err.code, err.message) for err in found)
    try:
        check_image(image)
    except E.JobError as exc:
        problems.append(Problem(image, exc.code, exc.message))
    if not found:
        from .sidecar import parse_sidecar

        try:
            build_request(parse_sidecar(data), defaults=defaults, default_model=model)
        except E.JobError as exc:
            problems.append(Problem(sidecar, exc.code, exc.message))
    return problems
