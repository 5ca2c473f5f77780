"""The shared store's reader: :class:`PostgresReader`, every host's jobs, summed by the
database (docs/design.md, "The shared store")."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from seedance_watch.core.budget import BudgetPrices, BudgetTally, submit_time
from seedance_watch.core.jobs import Job, State
from seedance_watch.errors import StateError, StoreUnavailable
from seedance_watch.ledger.base import HostLease, StoreHolder, status_order
from seedance_watch.ledger.postgres.rows import ALIVE, iso
from seedance_watch.ledger.postgres.schema import (
    SCHEMA,
    Database,
    connect,
    missing_table,
    refuse_newer,
    schema_version,
    translate,
)

__all__ = ["PostgresReader"]


class PostgresReader:
    """A :class:`~seedance_watch.ledger.base.JobReader` of the shared store: every host's
    jobs, aggregated by the database; ``holder`` and ``daemon_record`` are those of
    ``host`` (this config's host).

    It connects on first use and again after losing its connection; it writes
    nothing and never migrates (a database without the store reads as empty, and
    :meth:`exists` is False).  Calls may come from several threads (one at a time).
    """

    def __init__(self, database: Database | str, *, host: str) -> None:
        self.database = database if isinstance(database, Database) else Database(database)
        self.host = host
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._version: int | None = None

    def __repr__(self) -> str:
        return f"PostgresReader({self.database.shown!r}, host={self.host!r})"

    @property
    def where(self) -> str:
        return self.database.shown

    def _query(self, doing: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Rows of one query ([] when there is no store yet), read in one statement."""
        with self._lock:
            try:
                conn = self._connection()
                if self._version is None:
                    version = schema_version(conn)
                    refuse_newer(version, self.database)
                    if version == 0:
                        return []
                    self._version = version
                return list(conn.execute(sql, params).fetchall())
            except psycopg.Error as exc:
                self._drop()
                if missing_table(exc):
                    self._version = None
                    return []
                raise translate(exc, self.database, doing, write=False) from None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.database)
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def exists(self) -> bool:
        with self._lock:
            try:
                version = schema_version(self._connection())
            except psycopg.Error as exc:
                self._drop()
                raise translate(exc, self.database, "read the schema", write=False) from None
        refuse_newer(version, self.database)
        return version > 0

    def snapshot(self) -> list[Job]:
        rows = self._query("read the jobs", f"SELECT record FROM {SCHEMA}.jobs")
        return sorted((Job.from_dict(record) for (record,) in rows), key=status_order)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((state.value for state in State), 0)
        for state, n in self._query(
            "count the jobs", f"SELECT state, count(*) FROM {SCHEMA}.jobs GROUP BY state"
        ):
            counts[state] = int(n)
        return counts

    def tally(self, prices: BudgetPrices) -> BudgetTally:
        """Spend and submits per day, summed by the database in ``prices.timezone``;
        the few records without a recorded cost are priced here."""
        try:
            days = self._query(
                "sum the day's spend",
                f"""SELECT (to_timestamp(submit_at) AT TIME ZONE %s)::date,
                           sum(cost_cents)::bigint, count(*)
                    FROM {SCHEMA}.jobs
                    WHERE submit_at IS NOT NULL AND cost_cents IS NOT NULL
                    GROUP BY 1""",
                (prices.timezone,),
            )
            tally = BudgetTally.from_days(
                prices, {day: (int(cents), int(n)) for day, cents, n in days}
            )
        except StoreUnavailable:
            raise
        except StateError:
            # A zone the server's time zone database lacks: sum here instead.
            tally = BudgetTally(prices)
            for at, cents in self._query(
                "read the submits",
                f"""SELECT submit_at, cost_cents FROM {SCHEMA}.jobs
                    WHERE submit_at IS NOT NULL AND cost_cents IS NOT NULL""",
            ):
                tally.intent(at, int(cents))
        for (record,) in self._query(
            "read the unpriced submits",
            f"""SELECT record FROM {SCHEMA}.jobs
                WHERE submit_at IS NOT NULL AND cost_cents IS NULL""",
        ):
            job = Job.from_dict(record)
            at = submit_time(job)
            if at is not None:
                tally.intent(at, prices.cents(job))
        return tally

    def holder(self) -> StoreHolder | None:
        """This host's daemon while its lease runs (None: it stopped, or it is dead)."""
        rows = self._query(
            "read the hosts",
            f"SELECT pid, machine, started_at FROM {SCHEMA}.hosts AS h WHERE name = %s AND {ALIVE}",
            (self.host,),
        )
        if not rows:
            return None
        pid, machine, started = rows[0]
        started_at = iso(started)
        named = "" if machine == self.host else f" as {self.host}"
        return StoreHolder(
            f"pid {pid} on host {machine}{named}, started {started_at}",
            pid,
            machine,
            started_at,
        )

    def daemon_record(self) -> dict[str, Any] | None:
        rows = self._query(
            "read the daemon record",
            f"SELECT daemon FROM {SCHEMA}.hosts WHERE name = %s",
            (self.host,),
        )
        record = rows[0][0] if rows else None
        return record if isinstance(record, dict) else None

    def hosts(self) -> list[HostLease] | None:
        rows = self._query(
            "read the hosts",
            f"""SELECT name, renewed_at, {ALIVE}, started_at, pid, machine
                FROM {SCHEMA}.hosts AS h ORDER BY name""",
        )
        return [
            HostLease(name, iso(renewed) or "", bool(alive), iso(started), pid, machine)
            for name, renewed, alive, started, pid, machine in rows
        ]

    def owners(self) -> dict[str, str]:
        rows = self._query("read the owners", f"SELECT job_id, owner FROM {SCHEMA}.jobs")
        return {job_id: owner for job_id, owner in rows}

    def close(self) -> None:
        with self._lock:
            self._drop()
