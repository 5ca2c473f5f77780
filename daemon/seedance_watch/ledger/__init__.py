"""Where job records live: the store the config names, opened to write or to read.

:func:`open_store` gives the daemon its :class:`~.base.JobStore` (it takes the
store: one daemon per JSON-lines state folder); :func:`open_reader` gives
``status``, ``costs``, ``retry``, the page and the demo a :class:`~.base.JobReader`,
which works while a daemon holds the store.  Today every config names the
JSON-lines ledger in ``paths.state``; another backend is one more branch here and
one more module beside :mod:`.jsonl`, imported only when chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from seedance_watch.ledger.base import JobReader, JobStore

__all__ = ["StoreSettings", "open_reader", "open_store"]


class _Paths(Protocol):
    @property
    def state(self) -> Path: ...


class StoreSettings(Protocol):
    """What choosing and opening a store needs of the config (``config.Config`` has it)."""

    @property
    def paths(self) -> _Paths: ...


def open_store(config: StoreSettings, *, compact_threshold: int | None = None) -> JobStore:
    """The configured store, opened for writing (see :meth:`.jsonl.Ledger.open`).

    Raises :class:`~seedance_watch.errors.LedgerLocked` when another daemon holds
    it, :class:`~seedance_watch.errors.LedgerCorrupt`,
    :class:`~seedance_watch.errors.DurabilityError`, or
    :class:`~seedance_watch.errors.ConfigError` (key ``paths.state``).
    """
    from seedance_watch.ledger.jsonl import Ledger

    return Ledger.open(config.paths.state, compact_threshold=compact_threshold)


def open_reader(config: StoreSettings) -> JobReader:
    """A reader of the configured store; takes nothing from a daemon holding it."""
    from seedance_watch.ledger.jsonl import JsonlReader

    return JsonlReader(config.paths.state)
