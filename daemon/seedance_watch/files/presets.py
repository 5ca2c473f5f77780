"""Folder presets: ``.seedance-watch.yaml`` files that set sidecar defaults for the
drops in their folder and below (docs/design.md, "Folder presets").

A drop in ``inbox/vertical/phone/`` reads ``inbox/.seedance-watch.yaml``, then
``inbox/vertical/.seedance-watch.yaml``, then ``inbox/vertical/phone/.seedance-watch.yaml``;
the nearest wins key by key, the sidecar wins over all of them, and the config's
``defaults:`` fill what none sets.  Presets are read when a drop is taken, so an
edit applies to the next drop without a restart.  Each is checked with the
sidecar's rules; a problem fails the drops the preset governs, naming the file.

Read below the inbox root without following a link (a preset that is a link is a
problem, not a file to read elsewhere); the name is hidden, so the inbox never
takes a preset for a drop.
"""

from __future__ import annotations

import errno
from pathlib import Path, PurePosixPath
from typing import Final

from seedance_watch import errors as E
from seedance_watch.files.fsutil import read_beneath
from seedance_watch.files.sidecar import SIDECAR_MAX_BYTES, Preset, check_preset

__all__ = ["PRESET_NAME", "preset_paths", "read_presets"]

PRESET_NAME: Final = ".seedance-watch.yaml"


def preset_paths(folder: str) -> list[str]:
    """The presets that govern a drop in ``folder`` (relative to the inbox, ``""`` or
    ``"."`` for its top), top folder first: ``"a/b"`` → ``.seedance-watch.yaml``,
    ``a/.seedance-watch.yaml``, ``a/b/.seedance-watch.yaml``."""
    parts = [p for p in PurePosixPath(folder).parts if p not in ("", ".")]
    folders = [PurePosixPath(*parts[:depth]) for depth in range(len(parts) + 1)]
    return [(f / PRESET_NAME).as_posix() for f in folders]


def read_presets(root: Path, folder: str, *, strict_model: bool = False) -> tuple[Preset, ...]:
    """The presets governing a drop in ``root/folder``, top first (a folder without one
    is skipped).  Raises :class:`~seedance_watch.errors.InvalidSidecar` naming the
    first preset that cannot be read or does not pass the sidecar's rules, with
    every problem of that file."""
    found: list[Preset] = []
    for rel in preset_paths(folder):
        try:
            data, _ = read_beneath(root, rel, max_bytes=SIDECAR_MAX_BYTES + 1)
        except FileNotFoundError:
            continue
        except E.UnsafePath as exc:
            raise E.InvalidSidecar(f"{rel}: {exc.message}", hint=_FIX) from None
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:  # a folder on the way became a file: none here
                continue
            if exc.errno == errno.ELOOP:
                message = f"{rel}: a symbolic link (the file or a folder above it); not followed"
                raise E.InvalidSidecar(message, hint=_FIX) from None
            raise E.InvalidSidecar(f"{rel}: cannot be read: {exc.strerror}", hint=_FIX) from None
        preset, problems = check_preset(data, rel, strict_model=strict_model)
        if problems:
            first = problems[0]
            message = "; ".join(p.message for p in problems)
            hint = first.hint if len(problems) == 1 and first.hint else _FIX
            raise E.InvalidSidecar(f"{rel}: {message}", key=first.key, hint=hint)
        assert preset is not None
        found.append(preset)
    return tuple(found)


_FIX = (
    "Fix the folder preset (it governs every drop in its folder and below), then run: "
    "seedance-watch retry JOB_ID"
)
