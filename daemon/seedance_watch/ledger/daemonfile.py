"""``state/daemon.json``: the running daemon's pauses, for ``status`` and the page.

It lives beside the JSON-lines ledger and belongs to that store: the pipeline
writes it (:class:`DaemonStatusFile`; with a shared store, the same document goes
to the store's :meth:`~seedance_watch.ledger.base.DaemonRecorder.record_daemon`
instead of a file), readers get it through
:meth:`~seedance_watch.ledger.base.JobReader.daemon_record` (:func:`read_daemon_file`).
Written atomically whenever a pause starts, escalates or ends (``credentials``:
the gateway refused the key; ``storage``: the bucket is missing or refuses us;
``budget``: the day's cap is reached): since when, why, when the next probe goes
out (or the pause lifts), and which key source was used (never the key).  Best
effort: a failed write is logged by the caller and never stops a job.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from seedance_watch.core.timestamps import iso_utc
from seedance_watch.files.fsutil import atomic_write_json
from seedance_watch.ledger.modes import file_mode

__all__ = ["DAEMON_STATUS_NAME", "DaemonStatusFile", "read_daemon_file"]

DAEMON_STATUS_NAME = "daemon.json"


class DaemonStatusFile:
    """The running daemon's pause state, persisted in ``state/daemon.json``.

    Writes happen only when something changes (a pause starts, its next probe
    moves, it ends), plus once at the first call, so that a new daemon replaces
    what an earlier run left; the cost is nil in normal running.  ``write``: where
    the document goes instead of ``daemon.json`` (a shared store's record of this
    host).
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        key_source: str,
        pid: int | None = None,
        clock: Callable[[], float] = time.time,
        write: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        self.path = state_dir / DAEMON_STATUS_NAME
        self._sink = write
        self.key_source = key_source
        self.pid = os.getpid() if pid is None else pid
        self.clock = clock
        self.paused: dict[str, dict[str, Any]] = {}
        self._written = False

    def pause(
        self,
        reason: str,
        message: str,
        *,
        since: float | None = None,
        next_probe_at: float | None = None,
        http_status: int | None = None,
    ) -> None:
        """Record that ``reason`` (``credentials`` or ``storage``) pauses the pipeline."""
        now = self.clock()
        entry: dict[str, Any] = {
            "since": iso_utc(since if since is not None else now),
            "message": message,
            "http_status": http_status,
            "next_probe_at": iso_utc(next_probe_at) if next_probe_at is not None else None,
        }
        if reason == "credentials":
            entry["key_source"] = self.key_source
        if self._written and self.paused.get(reason) == entry:
            return
        self.paused[reason] = entry
        self._write()

    def resume(self, reason: str) -> None:
        """The pause for ``reason`` is over (cheap when there was none: call it freely)."""
        if self.paused.pop(reason, None) is not None or not self._written:
            self._write()

    def _write(self) -> None:
        self._written = True
        document = {
            "pid": self.pid,
            "key_source": self.key_source,
            "paused": self.paused,
            "updated_at": iso_utc(self.clock()),
        }
        if self._sink is not None:
            self._sink(document)
        else:
            atomic_write_json(self.path, document, mode=file_mode(self.path.parent))


def read_daemon_file(state_dir: Path) -> dict[str, Any] | None:
    """What the last daemon recorded in ``daemon.json``; None when it is absent or unreadable.

    The document as written (``pid``, ``key_source``, ``paused``, ``updated_at``);
    anything but a JSON object counts as unreadable.
    """
    try:
        loaded = json.loads((state_dir / DAEMON_STATUS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None
