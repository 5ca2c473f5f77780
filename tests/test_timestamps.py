"""How the daemon writes a moment: ISO 8601 UTC, whole seconds, a Z."""

from __future__ import annotations

from seedance_watch.core.timestamps import iso_utc


def test_iso_utc_whole_seconds_z() -> None:
    """Unix seconds become ISO 8601 UTC with a Z, fractions truncated."""
    assert iso_utc(1757535045.987) == "2025-09-10T20:10:45Z"
    assert iso_utc(0) == "1970-01-01T00:00:00Z"
