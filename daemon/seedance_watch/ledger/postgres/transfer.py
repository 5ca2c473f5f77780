"""``ledger import``'s half in the database: :func:`import_jobs` copies records into the
shared store, once (docs/design.md, "The shared store")."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
import structlog

from seedance_watch.core.jobs import Job
from seedance_watch.ledger.postgres.rows import encode_job, job_row, register_host
from seedance_watch.ledger.postgres.schema import SCHEMA, Database, connect, migrate, translate

__all__ = ["ImportResult", "import_jobs"]

log = structlog.get_logger(__name__)

_IMPORT = f"""
INSERT INTO {SCHEMA}.jobs (
    job_id, record, state, kind, content_key, owner, owner_epoch, created_at, updated_at,
    seq, intent_at, submit_at, cost_cents, revision, written_at)
VALUES (%(job_id)s, %(record)s::json, %(state)s, %(kind)s, %(content_key)s, %(owner)s,
    %(epoch)s, %(created_at)s, %(updated_at)s, %(seq)s, %(intent_at)s, %(submit_at)s,
    %(cost_cents)s, nextval('{SCHEMA}.job_revisions'), now())
ON CONFLICT (job_id) DO NOTHING
"""


class ImportResult:
    """What :func:`import_jobs` did: jobs written, and jobs the database already had."""

    __slots__ = ("imported", "present")

    def __init__(self, imported: int, present: int) -> None:
        self.imported, self.present = imported, present


def import_jobs(database: Database | str, *, host: str, jobs: Iterable[Job]) -> ImportResult:
    """Copy ``jobs`` (a JSON-lines ledger's records) into the database, owned by ``host``.

    One transaction: all or nothing.  A job the database already has is left as it
    is, so importing again changes nothing.  The jobs are owned by ``host`` with
    epoch 0: the next daemon started as ``host`` takes the unfinished ones on.
    Migrates the schema first; registers ``host`` (stopped) when it never joined.
    """
    db = database if isinstance(database, Database) else Database(database)
    rows = [job_row(job, encode_job(job), host, 0) for job in jobs]
    with connect(db) as conn:
        migrate(conn, db)
        try:
            with conn.transaction():
                register_host(conn, host, lease_seconds=0.0, pid=None, machine=None, running=False)
                with conn.cursor() as cursor:
                    cursor.executemany(_IMPORT, rows)
                    imported = max(cursor.rowcount, 0) if rows else 0
        except psycopg.Error as exc:
            raise translate(exc, db, "import the ledger", write=True) from None
    log.info("store.imported", database=db.shown, host=host, imported=imported)
    return ImportResult(imported, len(rows) - imported)
