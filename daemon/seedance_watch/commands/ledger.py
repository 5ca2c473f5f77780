"""``seedance-watch ledger import``: copy the JSON-lines ledger into the shared store, once.

A host that moves from its own ledger (``paths.state``) to a shared database
(``cluster.database``) brings its history and its unfinished jobs along: every
record is copied, owned by this host (``cluster.name``), in one transaction.  A job
the database already has is left alone, so importing again changes nothing
(docs/design.md, "The shared store").  The ledger's daemon must be stopped: the
import copies its last records, and the lock says whether it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from seedance_watch.errors import ConfigError, LedgerLocked
from seedance_watch.ledger import StoreSettings, database_url, host_name
from seedance_watch.ledger.jsonl import JsonlReader, read_jobs
from seedance_watch.ledger.lock import lock_holder

__all__ = ["LedgerImport", "import_ledger"]


@dataclass(frozen=True, slots=True)
class LedgerImport:
    """What one import did: where from and to, and how many records it wrote."""

    state: str
    database: str
    host: str
    imported: int
    present: int

    def summary(self) -> str:
        return (
            f"imported {self.imported} job(s) from {self.state} into {self.database} "
            f"as host {self.host}; {self.present} already there"
        )


def import_ledger(config: StoreSettings, environ: Mapping[str, str]) -> LedgerImport | None:
    """Copy ``paths.state``'s ledger into the configured database; None when the state
    folder holds no ledger.

    Raises :class:`ConfigError` when no database is configured, :class:`LedgerLocked`
    while a daemon holds the ledger, and what opening the database raises
    (:class:`~seedance_watch.errors.StoreUnavailable`,
    :class:`~seedance_watch.errors.SchemaTooNew`...).
    """
    url = database_url(config, environ)
    if url is None:
        raise ConfigError(
            "ledger import copies the ledger into the shared store, and none is configured: "
            "set cluster.database (or $CREDENTIALS_DIRECTORY/database-url)",
            key="cluster.database",
        )
    state = config.paths.state
    holder = lock_holder(state)
    if holder is not None:
        raise LedgerLocked(
            f"a daemon runs on the ledger in {state} ({holder}); stop it first, so that "
            "the import copies its last records",
            holder=holder,
        )
    if not JsonlReader(state).exists():
        return None
    jobs = read_jobs(state)
    from seedance_watch.ledger.postgres import Database, import_jobs

    database = Database(url)
    host = host_name(config)
    result = import_jobs(database, host=host, jobs=jobs.values())
    return LedgerImport(str(state), database.shown, host, result.imported, result.present)
