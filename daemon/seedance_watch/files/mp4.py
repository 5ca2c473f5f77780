"""How long a downloaded video lasts, read from its mp4 header.

The one place that knows mutagen.  What the length costs is the budget's question
(:meth:`seedance_watch.core.budget.JobCost.settle`); this only reads it.
"""

from __future__ import annotations

import math
from pathlib import Path

import mutagen
from mutagen.mp4 import MP4

__all__ = ["video_seconds"]


def video_seconds(path: Path) -> float | None:
    """The length in seconds the mp4 at ``path`` declares in its header.

    None when the file is no mp4 mutagen can read, or declares no length: the
    caller decides what an unknown length means.  Blocking: call it in a thread.
    """
    try:
        info = MP4(path).info  # type: ignore[no-untyped-call]
    except (mutagen.MutagenError, OSError):
        return None
    length = getattr(info, "length", None)
    if not isinstance(length, int | float) or not math.isfinite(length) or length <= 0:
        return None
    return float(length)
