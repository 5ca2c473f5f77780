"""Where job records live: the store the config names, opened to write or to read.

:func:`open_store` gives the daemon its :class:`~.base.JobStore` (it takes the
store: one daemon per JSON-lines state folder, one per host name in a shared
database); :func:`open_reader` gives ``status``, ``costs``, ``retry``, the page and
the demo a :class:`~.base.JobReader`, which works while a daemon holds the store.

The backend: the JSON-lines ledger in ``paths.state`` (:mod:`.jsonl`), unless a
database URL is configured (:func:`database_url`: ``$CREDENTIALS_DIRECTORY/database-url``
or ``cluster.database``), then the shared PostgreSQL store (:mod:`.postgres`),
imported only when chosen (docs/design.md, "The shared store").
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from seedance_watch.errors import ConfigError
from seedance_watch.ledger.base import JobReader, JobStore, RetryRequests

__all__ = [
    "DATABASE_CREDENTIAL",
    "StoreSettings",
    "database_url",
    "host_name",
    "open_reader",
    "open_retries",
    "open_store",
    "probe_database",
]

#: The systemd credential (``LoadCredential=``) holding the whole database URL.
DATABASE_CREDENTIAL = "database-url"


class _Paths(Protocol):
    @property
    def state(self) -> Path: ...


class _Cluster(Protocol):
    @property
    def database(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def lease_seconds(self) -> float: ...


class StoreSettings(Protocol):
    """What choosing and opening a store needs of the config (``config.Config`` has it)."""

    @property
    def paths(self) -> _Paths: ...
    @property
    def cluster(self) -> _Cluster: ...


def database_url(config: StoreSettings, environ: Mapping[str, str]) -> str | None:
    """The shared store's URL, or None for the JSON-lines ledger of one host.

    ``$CREDENTIALS_DIRECTORY/database-url`` (systemd ``LoadCredential=``: the whole
    URL, password included) when that file exists, else ``cluster.database``.
    Raises :class:`ConfigError` for a credential file that cannot be read, is empty
    or is not a ``postgresql://`` URL (never quoting it).
    """
    folder = environ.get("CREDENTIALS_DIRECTORY")
    if folder:
        path = Path(folder) / DATABASE_CREDENTIAL
        shown = f"$CREDENTIALS_DIRECTORY/{DATABASE_CREDENTIAL}"
        try:
            url = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            url = None
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"{shown} cannot be read: {why}", key="cluster.database") from None
        if url is not None:
            if not url.lower().startswith(("postgresql://", "postgres://")):
                raise ConfigError(
                    f"{shown} must hold one postgresql:// URL (the whole URL, password included)",
                    key="cluster.database",
                )
            return url
    return config.cluster.database


def host_name(config: StoreSettings) -> str:
    """This host's name in a shared store: ``cluster.name``, else the machine's name."""
    return config.cluster.name or socket.gethostname()


def open_store(
    config: StoreSettings,
    *,
    compact_threshold: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> JobStore:
    """The configured store, opened for writing.

    The JSON-lines ledger (see :meth:`.jsonl.Ledger.open`) raises
    :class:`~seedance_watch.errors.LedgerLocked` when another daemon holds it,
    :class:`~seedance_watch.errors.LedgerCorrupt`,
    :class:`~seedance_watch.errors.DurabilityError`, or :class:`ConfigError` (key
    ``paths.state``).  The shared store (see :meth:`.postgres.PostgresStore.open`)
    raises :class:`~seedance_watch.errors.StoreUnavailable`,
    :class:`~seedance_watch.errors.SchemaTooNew`, or ``LedgerLocked`` when a daemon
    runs under this host's name.  ``environ``: where ``$CREDENTIALS_DIRECTORY`` is
    looked up (default: the process environment).
    """
    url = database_url(config, os.environ if environ is None else environ)
    if url is not None:
        from seedance_watch.ledger.postgres import PostgresStore

        # The daemon renews the lease from its event loop (pipeline/lease.py), so that
        # a stuck loop loses it too.
        return PostgresStore.open(
            url, host=host_name(config), lease_seconds=config.cluster.lease_seconds, renew=False
        )
    from seedance_watch.ledger.jsonl import Ledger

    return Ledger.open(config.paths.state, compact_threshold=compact_threshold)


def probe_database(config: StoreSettings, environ: Mapping[str, str]) -> str | None:
    """For ``check``: what the shared store's database says when asked (see
    :func:`.postgres.schema.probe`), or None on the JSON-lines ledger of one host."""
    url = database_url(config, environ)
    if url is None:
        return None
    from seedance_watch.ledger.postgres.schema import Database, probe

    return probe(Database(url))


def open_reader(config: StoreSettings, *, environ: Mapping[str, str] | None = None) -> JobReader:
    """A reader of the configured store; takes nothing from a daemon holding it."""
    url = database_url(config, os.environ if environ is None else environ)
    if url is not None:
        from seedance_watch.ledger.postgres import PostgresReader

        return PostgresReader(url, host=host_name(config))
    from seedance_watch.ledger.jsonl import JsonlReader

    return JsonlReader(config.paths.state)


def open_retries(
    config: StoreSettings, *, environ: Mapping[str, str] | None = None
) -> RetryRequests:
    """Where retry requests go: ``state/retries.jsonl``, or the shared store's table."""
    url = database_url(config, os.environ if environ is None else environ)
    if url is not None:
        from seedance_watch.ledger.postgres import PostgresRetryBook

        return PostgresRetryBook(url)
    from seedance_watch.ledger.retries import RetryBook

    return RetryBook(config.paths.state)
