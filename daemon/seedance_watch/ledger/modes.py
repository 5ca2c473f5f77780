"""Who may read the state folder: its owner, and its group only when it is a group folder.

The state folder holds every prompt, file name, task id and video URL (valid for a
day) the daemon has seen, the thumbnails of every source image, and the pauses'
reasons.  Under a default umask (022) a plain ``mkdir`` and ``open`` would make all of
it readable by every user of the machine, so (docs/design.md, "Who may read the
state"):

* the daemon creates a missing state folder ``0700``;
* a folder that exists keeps its mode: it is the person's, set on purpose (a
  mount point, ``StateDirectoryMode=``, the container's ``0750``);
* every file the daemon creates there (ledger segments, snapshots, ``LOCK``,
  ``daemon.json``, thumbnails) is ``0600``, or ``0640`` when the folder is a group
  folder -- its group may list and enter it (``g+rx``) and others nothing -- so a
  deliberately group-readable setup (``chgrp`` and ``chmod 2750``) lets its group run
  ``status``; never readable by others; the umask may take more away;
* files an older version left more open are tightened to that when the store opens.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Final

__all__ = ["STATE_FOLDER_MODE", "file_mode", "folder_mode", "tighten"]

#: A state folder the daemon creates (the umask may take more away).
STATE_FOLDER_MODE: Final = 0o700


def _is_group_folder(folder: Path) -> bool:
    """The folder's group may list and enter it, and nobody else may do anything."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return mode & 0o050 == 0o050 and mode & 0o007 == 0


def file_mode(folder: Path) -> int:
    """The mode of a file the daemon creates in ``folder`` (the state folder or below)."""
    return 0o640 if _is_group_folder(folder) else 0o600


def folder_mode(folder: Path) -> int:
    """The mode of a folder the daemon creates in ``folder`` (``thumbs/``)."""
    return 0o750 if _is_group_folder(folder) else 0o700


def tighten(path: Path, allowed: int) -> None:
    """Take from ``path`` every permission bit ``allowed`` lacks (never adds one).

    Links are not followed; a file that is gone, or not ours to change, is left alone:
    tightening is a courtesy to a state folder an older version wrote.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    with contextlib.suppress(OSError):
        fd = os.open(path, flags)
        try:
            st = os.fstat(fd)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                return
            current = stat.S_IMODE(st.st_mode)
            wanted = current & ~(0o777 & ~allowed)
            if wanted != current:
                os.fchmod(fd, wanted)
        finally:
            os.close(fd)
