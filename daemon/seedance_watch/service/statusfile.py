"""Moved to :mod:`seedance_watch.ledger.daemonfile` (``daemon.json`` belongs to the store).

Kept only for the callers not yet moved (``pipeline/engine.py``); delete it when none is left.
"""

from __future__ import annotations

from seedance_watch.ledger.daemonfile import DAEMON_STATUS_NAME, DaemonStatusFile

__all__ = ["DAEMON_STATUS_NAME", "DaemonStatusFile"]
