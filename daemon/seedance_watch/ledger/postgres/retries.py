"""Retry requests in the shared store: :class:`PostgresRetryBook`.

``seedance-watch retry`` on any host records which failed job sends which files back
to the inbox, before it moves them; whichever host then takes the drop finds the
request here, so the new job records ``retry_of`` and the failed one becomes
``retried`` (docs/design.md, "Retry").  One host keeps the same in
``state/retries.jsonl`` (:class:`~seedance_watch.ledger.retries.RetryBook`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

from seedance_watch.ledger.postgres.schema import SCHEMA, Database, connect, translate
from seedance_watch.ledger.retries import RetryFile

__all__ = ["PostgresRetryBook"]


class PostgresRetryBook:
    """The ``retry_requests`` table, on a connection of its own (made on first use and
    again after it is lost).  Calls may come from several threads, one at a time."""

    def __init__(self, database: Database | str) -> None:
        self.database = database if isinstance(database, Database) else Database(database)
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def _run(self, doing: str, sql: str, params: Any, *, write: bool) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(self.database)
                cursor = self._conn.execute(sql, params)
                return list(cursor.fetchall()) if cursor.description else []
            except psycopg.Error as exc:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                raise translate(exc, self.database, doing, write=write) from None

    def request(self, job_id: str, files: Iterable[RetryFile]) -> None:
        """Record that ``job_id``'s ``files`` go back to the inbox (one statement,
        committed when it returns)."""
        items = list(files)
        self._run(
            f"record the retry of job {job_id}",
            f"""INSERT INTO {SCHEMA}.retry_requests (job_id, path, size, sha256)
                SELECT %s, * FROM unnest(%s::text[], %s::bigint[], %s::text[])""",
            (job_id, [f.path for f in items], [f.size for f in items], [f.sha256 for f in items]),
            write=True,
        )

    def match(
        self, files: Iterable[RetryFile], *, usable: Callable[[str], bool] = lambda _id: True
    ) -> str | None:
        """The failed job that sent back any of ``files`` (same path, size and bytes),
        the newest request first, among the jobs ``usable`` accepts."""
        items = list(files)
        if not items:
            return None
        rows = self._run(
            "read the retry requests",
            f"""SELECT job_id, path, size, sha256 FROM {SCHEMA}.retry_requests
                WHERE path = ANY(%s) ORDER BY id DESC""",
            ([f.path for f in items],),
            write=False,
        )
        for item in items:
            for job_id, path, size, sha in rows:
                if RetryFile(path, int(size), sha).matches(item) and usable(job_id):
                    return str(job_id)
        return None

    def pending(self) -> set[str]:
        """Every job with a request (spent or not)."""
        rows = self._run(
            "read the retry requests",
            f"SELECT DISTINCT job_id FROM {SCHEMA}.retry_requests",
            None,
            write=False,
        )
        return {str(job_id) for (job_id,) in rows}

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
