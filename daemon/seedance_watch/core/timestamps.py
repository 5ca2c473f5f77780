"""How a moment is written where people and programs read it.

Every time the daemon writes into a file or a page (an output's metadata, an error
report, ``daemon.json``, the status page) is Unix time rendered by :func:`iso_utc`,
so they all read alike.  Pure: the caller passes the time.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["iso_utc"]


def iso_utc(ts: float) -> str:
    """Unix time as ISO 8601 UTC with whole seconds (truncated): ``2025-09-10T20:10:45Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
