"""Start-up housekeeping: what a crash may have left in the folders.

Staged videos of jobs that are gone, and temp files older than an hour (an
interrupted write's ``.tmp``); in the inbox only old ones, since ``seedance-watch
retry`` may be moving files there right now.  Nothing a live job needs is touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Container

import structlog

from seedance_watch.config import PathsConfig
from seedance_watch.files.fsutil import STALE_TEMP_SECONDS, remove_stale_temps
from seedance_watch.files.outbox import cleanup_staging

__all__ = ["remove_leftovers"]

log = structlog.get_logger(__name__)


async def remove_leftovers(paths: PathsConfig, alive: Container[str]) -> int:
    """Remove what a crash left behind; returns how many files went."""
    removed = await asyncio.to_thread(cleanup_staging, paths.outbox, alive)
    for root in (paths.done, paths.failed):
        removed += await asyncio.to_thread(remove_stale_temps, root)
    removed += await asyncio.to_thread(
        remove_stale_temps, paths.inbox, older_than=STALE_TEMP_SECONDS
    )
    if removed:
        log.info("engine.leftovers_removed", files=removed)
    return removed
