"""The shared store's writer: :class:`PostgresStore`, one host's session.

Several hosts point at one database (``cluster.database``); the schema is in
``ledger/postgres/migrations`` (:mod:`.schema` applies it).  docs/design.md, "The shared
store", tells the whole story; the rules kept here:

* **A put is committed when it returns.**  One statement in autocommit mode: the
  server commits before it answers (``synchronous_commit`` is never off in our
  sessions).  A record that cannot be encoded is refused before anything is sent.
* **Fencing.**  A store is one *session* of a host: opening it raises the host's
  ``epoch`` in ``hosts``.  Every write names the host and the epoch and changes a
  job only when, in the same statement, the job's ``owner`` is this host, its
  ``owner_epoch`` is not newer than ours, and ``hosts`` still has our epoch; a new
  job is written only while our epoch is current.  A write refused so changes
  nothing and raises :class:`~seedance_watch.errors.JobFenced`: another host
  adopted the job, or a newer session of this host (or a host declaring this one
  dead) superseded ours.
* **One live daemon per host name**, as ``LOCK`` is one per state folder: the
  session holds ``pg_try_advisory_lock`` on its name on a dedicated connection
  for its life; a second daemon under the same name is refused
  (:class:`~seedance_watch.errors.LedgerLocked`).  A daemon killed outright loses
  its connection and with it the lock, so a restart is never refused for long.
* **Leases by the database's clock.**  The same connection renews the host's
  lease every ``lease_seconds / 3`` (``renewed_at = now()``); a host is alive
  while ``renewed_at + lease_seconds > now()`` and it has not stopped.
* **What the writer reads** is this host's jobs, held in memory (the engine reads
  them on every step): the jobs it owns, loaded at open and kept current by each
  put.  Dedupe spans every host (:meth:`PostgresStore.find_done_by_content_key`
  asks the database).  Readers see every host's jobs.
* **Errors** are translated once (:func:`.schema.translate`): the database out of
  reach is :class:`~seedance_watch.errors.StoreUnavailable` (nothing latched, a
  put may be repeated); a write the server refused is a
  :class:`~seedance_watch.errors.DurabilityError`, after which the store refuses
  every write, as the JSON-lines ledger does after a failed fsync.
* **One account** (:mod:`.account`): a new drop is claimed with its job, a submit's
  intent is written only when the account has a slot, a token and budget left, and
  the jobs of dead hosts are adopted -- each one transaction.  Adoption waits until
  this host has renewed its own lease for a whole ``lease_seconds`` without a
  failure, so that after an outage of the database every host gets the time to
  renew before any is presumed dead.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import psycopg
import structlog
from psycopg_pool import ConnectionPool

from seedance_watch.core.budget import BudgetPrices
from seedance_watch.core.jobs import TERMINAL_STATES, Job
from seedance_watch.errors import (
    DurabilityError,
    JobFenced,
    LedgerLocked,
    StateError,
    StoreUnavailable,
)
from seedance_watch.ledger.base import SubmitLimits, SubmitRefusal, Taken, status_order
from seedance_watch.ledger.index import JobIndex
from seedance_watch.ledger.postgres.account import (
    Fenced,
    adopt_dead,
    claim_drop,
    claim_params,
    decide_submit,
    watch_slots,
)
from seedance_watch.ledger.postgres.rows import ENCODER, encode_job, iso, job_row, register_host
from seedance_watch.ledger.postgres.schema import (
    SCHEMA,
    Database,
    connect,
    ensure_synchronous_commit,
    migrate,
    translate,
)

__all__ = ["HOST_LOCK", "PostgresStore"]

log = structlog.get_logger(__name__)

#: ``pg_try_advisory_lock(HOST_LOCK, hashtext(name))``: one live daemon per host name.
HOST_LOCK = 0x5EED
_LOCK_ATTEMPTS = 10
_LOCK_RETRY_SECONDS = 0.1
_TERMINAL = tuple(state.value for state in TERMINAL_STATES)
_TERMINAL_LIST = list(_TERMINAL)

_PUT = f"""
INSERT INTO {SCHEMA}.jobs AS j (
    job_id, record, state, kind, content_key, owner, owner_epoch, created_at, updated_at,
    seq, intent_at, submit_at, cost_cents, revision, written_at)
SELECT %(job_id)s::text, %(record)s::json, %(state)s::text, %(kind)s::text,
    %(content_key)s::text, %(owner)s::text, %(epoch)s::bigint, %(created_at)s::float8,
    %(updated_at)s::float8, %(seq)s::integer, %(intent_at)s::float8, %(submit_at)s::float8,
    %(cost_cents)s::bigint, nextval('{SCHEMA}.job_revisions'), now()
WHERE EXISTS (
    SELECT 1 FROM {SCHEMA}.hosts AS h WHERE h.name = %(owner)s AND h.epoch = %(epoch)s)
ON CONFLICT (job_id) DO UPDATE SET
    record = excluded.record, state = excluded.state, kind = excluded.kind,
    content_key = excluded.content_key, owner_epoch = excluded.owner_epoch,
    created_at = excluded.created_at, updated_at = excluded.updated_at, seq = excluded.seq,
    intent_at = excluded.intent_at, submit_at = excluded.submit_at,
    cost_cents = excluded.cost_cents, revision = excluded.revision,
    written_at = excluded.written_at
WHERE j.owner = excluded.owner AND j.owner_epoch <= excluded.owner_epoch
RETURNING j.revision
"""

# A job that had ended, written by whichever host retries it (FAILED -> RETRIED): it
# becomes this host's; only while our session stands, and never a job still running.
_PUT_FINISHED = f"""
UPDATE {SCHEMA}.jobs AS j SET
    record = %(record)s::json, state = %(state)s, kind = %(kind)s,
    content_key = %(content_key)s, owner = %(owner)s, owner_epoch = %(epoch)s,
    created_at = %(created_at)s, updated_at = %(updated_at)s, seq = %(seq)s,
    intent_at = %(intent_at)s, submit_at = %(submit_at)s, cost_cents = %(cost_cents)s,
    revision = nextval('{SCHEMA}.job_revisions'), written_at = now()
WHERE j.job_id = %(job_id)s AND j.state = ANY(%(terminal)s)
  AND EXISTS (
    SELECT 1 FROM {SCHEMA}.hosts AS h WHERE h.name = %(owner)s AND h.epoch = %(epoch)s)
RETURNING j.revision
"""


class PostgresStore:
    """One host's session of the shared store: a :class:`~seedance_watch.ledger.base.JobStore`.

    Open it with :meth:`PostgresStore.open`.  ``put`` may be called from any thread
    (one at a time: it takes a lock); the reads of this host's jobs come from memory.
    """

    def __init__(
        self,
        database: Database,
        host: str,
        *,
        session: psycopg.Connection[Any],
        epoch: int,
        lease_seconds: float,
    ) -> None:
        self.database = database
        self.host = host
        self.epoch = epoch
        self.lease_seconds = lease_seconds
        self._session: psycopg.Connection[Any] | None = session
        self._session_lock = threading.Lock()
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._mutex = threading.Lock()
        self._records = JobIndex()
        self._fatal: BaseException | None = None
        self._closed = False
        self._lost = False  # the lease renewal found our session superseded
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        #: Since when (monotonic) every renewal succeeded: adoption waits a whole lease.
        self._healthy_since: float | None = time.monotonic()
        #: Round trips to the database, counted where they are made (bench/cluster.py).
        self.round_trips = 0

    def __repr__(self) -> str:
        return f"<PostgresStore {self.database.shown} host={self.host!r} epoch={self.epoch}>"

    # --- opening ---

    @classmethod
    def open(
        cls,
        database: Database | str,
        *,
        host: str,
        lease_seconds: float = 30.0,
        renew: bool = True,
        pool_size: int = 4,
    ) -> PostgresStore:
        """Migrate the schema, start this host's session, load its jobs.

        Raises :class:`StoreUnavailable` (the database cannot be reached),
        :class:`~seedance_watch.errors.SchemaTooNew`, :class:`LedgerLocked` (a daemon
        runs under ``host`` now), :class:`DurabilityError` (the server refused to
        create the schema or the session).  With ``renew`` a thread renews the lease
        every ``lease_seconds / 3``; without it the caller calls :meth:`renew`.
        """
        db = database if isinstance(database, Database) else Database(database)
        started = time.perf_counter()
        session = connect(db)
        try:
            migrate(session, db)
            epoch = cls._start_session(session, db, host, lease_seconds)
            store = cls(db, host, session=session, epoch=epoch, lease_seconds=lease_seconds)
        except BaseException:
            session.close()
            raise
        try:
            store._load()
            store._pool = store._open_pool(pool_size)
        except BaseException:
            store.close()
            raise
        if renew:
            store._renewer = threading.Thread(
                target=store._renew_loop, name="store-lease", daemon=True
            )
            store._renewer.start()
        log.info(
            "store.opened",
            database=db.shown,
            host=host,
            epoch=epoch,
            jobs=len(store._records.jobs),
            seconds=round(time.perf_counter() - started, 3),
        )
        return store

    @staticmethod
    def _start_session(
        session: psycopg.Connection[Any], db: Database, host: str, lease_seconds: float
    ) -> int:
        try:
            if not _lock_host(session, host, attempts=_LOCK_ATTEMPTS):
                holder = _describe_running(session, host)
                raise LedgerLocked(
                    f"the host name {host!r} is in use by another seedance-watch daemon on "
                    f"{db.shown} ({holder}); stop it first, or give this one its own "
                    "cluster.name",
                    holder=holder,
                )
            with session.transaction():
                epoch = register_host(
                    session,
                    host,
                    lease_seconds=lease_seconds,
                    pid=os.getpid(),
                    machine=socket.gethostname(),
                    running=True,
                )
                # Our unfinished jobs move to this session: a late write of an older
                # session of this host is fenced off them.
                session.execute(
                    f"""UPDATE {SCHEMA}.jobs SET owner_epoch = %s
                        WHERE owner = %s AND state <> ALL(%s) AND owner_epoch < %s""",
                    (epoch, host, list(_TERMINAL), epoch),
                )
        except psycopg.Error as exc:
            raise translate(exc, db, f"start the session of host {host!r}", write=True) from None
        return epoch

    def _load(self) -> None:
        session = self._session
        assert session is not None
        try:
            cursor = session.execute(
                f"SELECT record FROM {SCHEMA}.jobs WHERE owner = %s", (self.host,)
            )
            for (record,) in cursor:
                self._records.add(Job.from_dict(record))
        except psycopg.Error as exc:
            raise translate(exc, self.database, "load this host's jobs", write=False) from None

    def _open_pool(self, size: int) -> ConnectionPool[psycopg.Connection[Any]]:
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self.database.url,
            min_size=1,
            max_size=max(1, size),
            kwargs={
                "autocommit": True,
                "connect_timeout": 10,
                "application_name": f"seedance-watch {self.host}",
            },
            configure=self._configure,
            name=f"seedance-watch-{self.host}",
            timeout=10.0,
            open=False,
        )
        try:
            pool.open(wait=True, timeout=10.0)
        except Exception as exc:
            pool.close()
            raise translate(exc, self.database, "open a connection pool", write=False) from None
        return pool

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """Each pooled connection: commits durable when they return; a transaction left
        open (a host frozen inside a submit decision, holding the account's lock) is
        ended by the server once this host's lease would have run out."""
        ensure_synchronous_commit(conn)
        timeout = max(1000, int(self.lease_seconds * 1000))
        conn.execute(f"SET idle_in_transaction_session_timeout = {timeout}")

    # --- reads: this host's jobs, from memory ---

    def get(self, job_id: str) -> Job | None:
        return self._records.jobs.get(job_id)

    def jobs(self) -> Mapping[str, Job]:
        """A live read-only view of this host's jobs."""
        return MappingProxyType(self._records.jobs)

    def active(self) -> list[Job]:
        return list(self._records.active.values())

    def counts(self) -> dict[str, int]:
        """This host's jobs by state value, every state present (zeros included)."""
        return self._records.counts()

    def counts_by_kind(self) -> dict[tuple[str, str], int]:
        return self._records.counts_by_kind()

    def snapshot(self) -> list[Job]:
        """A copy of this host's jobs, safe to take from another thread."""
        return sorted(self._records.jobs.copy().values(), key=status_order)

    def find_done_by_content_key(self, content_key: str) -> Job | None:
        """The DONE job (of any host) with this ``content_key`` updated last."""
        try:
            with self._connection() as conn:
                row = conn.execute(
                    f"""SELECT record FROM {SCHEMA}.jobs
                        WHERE state = 'done' AND content_key = %s
                        ORDER BY updated_at DESC, revision DESC LIMIT 1""",
                    (content_key,),
                ).fetchone()
                self.round_trips += 1
        except psycopg.Error as exc:
            raise translate(exc, self.database, "look up a done job", write=False) from None
        return None if row is None else Job.from_dict(row[0])

    def writable(self) -> bool:
        """For /healthz: no write failed, our session stands, the database takes writes."""
        if self._closed or self._fatal is not None or self._lost or self._pool is None:
            return False
        if self._healthy_since is None:
            # The last renewal of the lease failed: the database is out of reach (a
            # probe must answer at once, not wait for the pool's connections).
            return False
        # Twice: a pooled connection the server dropped fails once, then is replaced.
        for _ in range(2):
            try:
                with self._pool.connection(timeout=2.0) as conn:
                    row = conn.execute(
                        "SELECT NOT pg_is_in_recovery() AND "
                        "current_setting('transaction_read_only') = 'off'"
                    ).fetchone()
            except Exception:
                continue
            return bool(row and row[0])
        return False

    # --- writes ---

    def put(self, job: Job) -> None:
        """Write ``job`` as its latest record, fenced; committed when this returns.

        Raises :class:`JobFenced` (another host owns the job, or our session was
        superseded: nothing changed), :class:`StoreUnavailable` (the database is out
        of reach: the record may or may not be committed; putting it again is
        safe), :class:`DurabilityError` (the server refused it, or an earlier write
        failed so: the daemon must stop), :class:`StateError` once closed.
        """
        params = job_row(job, encode_job(job), self.host, self.epoch)
        with self._mutex:
            self._check_writable()
            try:
                with self._connection() as conn:
                    self.round_trips += 1
                    row = conn.execute(_PUT, params, prepare=True).fetchone()
            except psycopg.Error as exc:
                raise self._write_error(exc, f"write job {job.job_id}") from None
            if row is None:
                raise self._fenced(job)
            self._records.add(job)

    def _fenced(self, job: Job) -> JobFenced:
        owner, current = None, None
        try:
            with self._connection() as conn:
                found = conn.execute(
                    f"""SELECT (SELECT owner FROM {SCHEMA}.jobs WHERE job_id = %s),
                               (SELECT epoch FROM {SCHEMA}.hosts WHERE name = %s)""",
                    (job.job_id, self.host),
                ).fetchone()
            if found is not None:
                owner, current = found
        except (psycopg.Error, StoreUnavailable):
            pass
        if owner is not None and owner != self.host:
            why = f"host {owner!r} owns it now"
        elif current is not None and current != self.epoch:
            why = (
                f"this session (epoch {self.epoch}) of host {self.host!r} was superseded "
                f"(epoch {current}): another daemon started under this name, or this host "
                "was presumed dead and its jobs adopted"
            )
        else:
            why = "a newer session of this host wrote it"
        log.warning("store.fenced", job_id=job.job_id, host=self.host, owner=owner)
        return JobFenced(
            f"the write of job {job.job_id} by host {self.host!r} was refused: {why}; "
            "nothing changed",
            job_id=job.job_id,
            host=self.host,
            owner=owner,
        )

    # --- one account across the hosts (docs/design.md, "Several hosts, one account") ---

    def claim(self, job: Job, *, replace_finished: bool = False) -> Taken | None:
        """Record the new ``job`` and claim its files (each by path, size, mtime and
        sha256) in one transaction; :class:`Taken` (nothing written) when another job
        holds one.  ``replace_finished``: files claimed by jobs that ended are taken
        over (the caller checked that they are in the inbox again).

        Raises :class:`JobFenced` when our session is over, :class:`StoreUnavailable`,
        :class:`DurabilityError` as :meth:`put` does.
        """
        params = claim_params(job_row(job, encode_job(job), self.host, self.epoch), job.inputs)
        with self._mutex:
            self._check_writable()
            try:
                with self._connection() as conn:
                    taken, trips = claim_drop(conn, params, replace_finished=replace_finished)
                    self.round_trips += trips
            except Fenced:
                raise self._fenced(job) from None
            except psycopg.Error as exc:
                raise self._write_error(exc, f"claim the files of job {job.job_id}") from None
            if taken is not None and (taken.job_id, taken.host) == (job.job_id, self.host):
                # This very claim committed earlier, its answer lost on the way back (the
                # store went away): the drop is ours, as recorded then.
                taken = None
            if taken is None:
                self._records.add(job)
            return taken

    def put_intent(self, job: Job, limits: SubmitLimits) -> SubmitRefusal | None:
        """Write ``job``'s submit intent when the whole account allows it now: fewer than
        ``max_in_flight`` tasks in flight on every host, a token in the account's
        bucket, the day's caps not passed (counting every host's submits); decided and
        written in one transaction under the ``account`` row's lock.  Else nothing is
        written and :class:`SubmitRefusal` says why.  Errors as :meth:`put`.
        """
        params = job_row(job, encode_job(job), self.host, self.epoch)
        prices = limits.prices
        with self._mutex:
            self._check_writable()
            try:
                with self._connection() as conn:
                    refusal, trips = decide_submit(
                        conn, _PUT, params, limits, lambda rows: _priced(prices, rows)
                    )
                    self.round_trips += trips
            except Fenced:
                raise self._fenced(job) from None
            except psycopg.Error as exc:
                raise self._write_error(exc, f"write the submit intent of {job.job_id}") from None
            if refusal is None:
                self._records.add(job)
            return refusal

    def put_finished(self, job: Job) -> None:
        """Write ``job``, a job that had ended, whichever host drove it (a retry of
        another host's failed job): it becomes this host's.  :class:`JobFenced` when it
        had not ended (or our session is over)."""
        params = job_row(job, encode_job(job), self.host, self.epoch)
        params["terminal"] = _TERMINAL_LIST
        with self._mutex:
            self._check_writable()
            try:
                with self._connection() as conn:
                    self.round_trips += 1
                    row = conn.execute(_PUT_FINISHED, params).fetchone()
            except psycopg.Error as exc:
                raise self._write_error(exc, f"write job {job.job_id}") from None
            if row is None:
                raise self._fenced(job)
            self._records.add(job)

    def find(self, job_id: str) -> Job | None:
        """Any host's job: this host's from memory, another's from the database."""
        job = self._records.jobs.get(job_id)
        if job is not None:
            return job
        try:
            with self._connection() as conn:
                self.round_trips += 1
                row = conn.execute(
                    f"SELECT record FROM {SCHEMA}.jobs WHERE job_id = %s", (job_id,)
                ).fetchone()
        except psycopg.Error as exc:
            raise translate(exc, self.database, f"read job {job_id}", write=False) from None
        return None if row is None else Job.from_dict(row[0])

    def forget(self, job_id: str) -> None:
        """A job another host owns now leaves this host's view (it was fenced)."""
        with self._mutex:
            self._records.remove(job_id)

    def adopt(self) -> list[Job]:
        """Take over the unfinished jobs of every host whose lease ran out, in one
        transaction that also moves those hosts' epochs on (their late writes are
        fenced).  Nothing until this host has renewed its own lease without a failure
        for a whole ``lease_seconds``.  Returns the jobs adopted (now this host's)."""
        healthy = self._healthy_since
        if healthy is None or time.monotonic() - healthy < self.lease_seconds:
            return []
        with self._mutex:
            self._check_writable()
            try:
                with self._connection() as conn:
                    dead, records, trips = adopt_dead(conn, self.host, self.epoch)
                    self.round_trips += trips
            except psycopg.Error as exc:
                raise self._write_error(exc, "adopt the jobs of dead hosts") from None
            jobs = [Job.from_dict(record) for record in records]
            for job in jobs:
                self._records.add(job)
        if dead:
            log.warning("store.adopted", host=self.host, dead=dead, jobs=len(jobs))
        return jobs

    @property
    def lost(self) -> bool:
        """Our session is over: this host was presumed dead (its epoch moved on), or
        another daemon took its name."""
        return self._lost

    async def watch_account(self, changed: Callable[[], None]) -> None:
        """Call ``changed`` each time a task of any host ends (``LISTEN``), until
        cancelled (docs/design.md, "Waiting for a slot")."""
        await watch_slots(self.database, f"seedance-watch {self.host} listen", changed)

    def _check_writable(self) -> None:
        if self._closed:
            raise StateError("the store is closed")
        if self._fatal is not None:
            raise DurabilityError(
                "the store refuses writes after an earlier write failure "
                f"({self._fatal}); restart the daemon once the database is healthy"
            ) from self._fatal
        if self._healthy_since is None and not self._lost:
            # The last renewal of the lease found the database out of reach: writes
            # wait for the next one to find it back, rather than each waiting for a
            # pooled connection (up to 10 s, on the daemon's loop).
            raise StoreUnavailable(
                f"the database {self.database.shown} is out of reach (the last renewal "
                "of the lease failed; the next one asks again)"
            )

    def _write_error(self, exc: BaseException, doing: str) -> StateError:
        """A failed write translated; latched unless the database was out of reach."""
        error = translate(exc, self.database, doing, write=True)
        if not isinstance(error, StoreUnavailable):
            self._fatal = error
            log.error("store.write_failed", doing=doing, error=error.message)
        return error

    def record_daemon(self, record: Mapping[str, Any] | None) -> None:
        """Keep this host's daemon record (``daemon.json``'s document) in ``hosts``.

        Best effort, as writing ``daemon.json`` is: a failure is logged, never raised.
        """
        document = None if record is None else ENCODER.encode(dict(record))
        try:
            with self._connection() as conn:
                conn.execute(
                    f"""UPDATE {SCHEMA}.hosts SET daemon = %s::json, daemon_updated_at = now()
                        WHERE name = %s AND epoch = %s""",
                    (document, self.host, self.epoch),
                )
        except (psycopg.Error, StateError, ValueError, TypeError) as exc:
            message = self.database.scrub(str(exc))
            log.warning("store.daemon_record_failed", host=self.host, error=message)

    # --- the lease ---

    def renew(self) -> bool:
        """Renew this host's lease (``renewed_at = now()``, the database's clock).

        False when it could not: the database is out of reach (logged; the next
        call reconnects), or our session was superseded (logged once; every later
        call is False, and :meth:`writable` too).
        """
        with self._session_lock:
            if self._closed or self._lost:
                return False
            try:
                session = self._session_connection()
                row = None
                if session is not None:
                    self.round_trips += 1
                    row = session.execute(
                        f"""UPDATE {SCHEMA}.hosts SET renewed_at = now()
                            WHERE name = %s AND epoch = %s AND stopped_at IS NULL
                            RETURNING renewed_at""",
                        (self.host, self.epoch),
                    ).fetchone()
            except (psycopg.Error, StateError) as exc:
                self._drop_session()
                self._healthy_since = None
                message = self.database.scrub(str(exc))
                log.warning("store.lease_renew_failed", host=self.host, error=message)
                return False
            if row is None:
                self._lost = True
                log.error("store.lease_lost", host=self.host, epoch=self.epoch)
                return False
            if self._healthy_since is None:
                self._healthy_since = time.monotonic()
                if self._pool is not None:  # back after an outage: drop dead connections
                    self._pool.check()
            return True

    def _session_connection(self) -> psycopg.Connection[Any] | None:
        """The session's connection; after losing it, a new one that takes the host lock
        back.  None when another daemon holds that lock now: our session is over."""
        if self._session is not None and not self._session.closed:
            return self._session
        session = connect(self.database)
        try:
            locked = _lock_host(session, self.host, attempts=1)
        except BaseException:
            session.close()
            raise
        if not locked:
            session.close()
            return None
        self._session = session
        return session

    def _drop_session(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            self.renew()

    # --- closing ---

    def close(self) -> None:
        """Stop renewing, mark this host stopped, close the connections (the host lock
        goes with the session's).  Idempotent."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        with self._session_lock:
            try:
                if self._session is not None and not self._session.closed:
                    self._session.execute(
                        f"""UPDATE {SCHEMA}.hosts SET stopped_at = now(), renewed_at = now()
                            WHERE name = %s AND epoch = %s""",
                        (self.host, self.epoch),
                    )
                    # Released here, not when the server notices the connection closed:
                    # the next daemon under this name may start at once.
                    self._session.execute(
                        "SELECT pg_advisory_unlock(%s, hashtext(%s))", (HOST_LOCK, self.host)
                    )
            except psycopg.Error as exc:
                message = self.database.scrub(str(exc))
                log.warning("store.stop_not_recorded", host=self.host, error=message)
            self._drop_session()
        if self._pool is not None:
            self._pool.close()
        log.info("store.closed", host=self.host, round_trips=self.round_trips)

    # --- internals ---

    def _connection(self) -> _Borrowed:
        """A pooled connection (a context manager); :class:`StoreUnavailable` when none
        comes in time."""
        if self._pool is None:
            raise StateError("the store is closed")
        return _Borrowed(self._pool, self.database)


class _Borrowed:
    """``with`` a connection of the pool, a timeout translated to StoreUnavailable."""

    def __init__(self, pool: ConnectionPool[psycopg.Connection[Any]], db: Database) -> None:
        self._pool, self._db = pool, db
        self._conn: psycopg.Connection[Any] | None = None

    def __enter__(self) -> psycopg.Connection[Any]:
        try:
            self._conn = self._pool.getconn()
        except Exception as exc:
            raise translate(exc, self._db, "get a connection", write=False) from None
        return self._conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._conn is not None:
            self._pool.putconn(self._conn)
            self._conn = None


def _priced(prices: BudgetPrices, records: list[dict[str, Any]]) -> int:
    """The cents of submits recorded without a cost, priced from their models (as the
    reader prices them)."""
    return sum(prices.cents(Job.from_dict(record)) for record in records)


def _lock_host(conn: psycopg.Connection[Any], host: str, *, attempts: int) -> bool:
    """Take the lock of ``host``'s name for this connection's life; False when a live
    session holds it.  A daemon killed a moment ago may still hold it while the
    server notices its connection is gone: ``attempts`` spaced tries cover that."""
    for attempt in range(attempts):
        row = conn.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (HOST_LOCK, host)
        ).fetchone()
        if row is not None and row[0]:
            return True
        if attempt < attempts - 1:
            time.sleep(_LOCK_RETRY_SECONDS)
    return False


def _describe_running(conn: psycopg.Connection[Any], host: str) -> str:
    row = conn.execute(
        f"SELECT pid, machine, started_at FROM {SCHEMA}.hosts WHERE name = %s", (host,)
    ).fetchone()
    if row is None:
        return "holder unknown"
    pid, machine, started = row
    return f"pid {pid} on host {machine}, started {iso(started)}"
