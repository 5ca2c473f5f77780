"""The shared store on PostgreSQL 13+: several hosts, one database (``cluster.database``).

The only package that knows psycopg (docs/design.md, "The shared store"):

    schema.py      reaching the database (its URL shown without the password), the
                   versioned migrations of ``migrations/``, psycopg's errors mapped once
    rows.py        a job as a row of ``jobs``, a host as a row of ``hosts``
    store.py       :class:`PostgresStore`: one host's session, fenced writes, its lease
    account.py     the transactions across hosts: claims, submit decisions, adoption,
                   LISTEN for slots that free
    retries.py     :class:`PostgresRetryBook`: the retry requests of every host
    reader.py      :class:`PostgresReader`: every host's jobs, summed by the database
    transfer.py    :func:`import_jobs`: a JSON-lines ledger copied in, once
"""

from __future__ import annotations

from seedance_watch.ledger.postgres.reader import PostgresReader
from seedance_watch.ledger.postgres.retries import PostgresRetryBook
from seedance_watch.ledger.postgres.schema import Database
from seedance_watch.ledger.postgres.store import PostgresStore
from seedance_watch.ledger.postgres.transfer import ImportResult, import_jobs

__all__ = [
    "Database",
    "ImportResult",
    "PostgresReader",
    "PostgresRetryBook",
    "PostgresStore",
    "import_jobs",
]
