"""Several hosts as one account: the shared store's transactions that span hosts.

Each function runs one transaction on a connection the store lends it
(docs/design.md, "Several hosts, one account"):

* :func:`claim_drop` -- a new job and the claims of its files, together: the drop is
  this host's, or nothing is written and :class:`~seedance_watch.ledger.base.Taken`
  says whose it is;
* :func:`decide_submit` -- under the lock of the one ``account`` row, count the tasks
  in flight and the day's submits across the hosts, take a token of the account's
  bucket, and write the submit intent, or write nothing and say why
  (:class:`~seedance_watch.ledger.base.SubmitRefusal`);
* :func:`adopt_dead` -- the unfinished jobs of every host whose lease ran out become
  this host's, and the dead host's epoch moves on (its late writes are fenced);
* :func:`watch_slots` -- ``LISTEN`` for tasks ending on any host, on one dedicated
  asynchronous connection.

Round trips are few and counted (pipeline mode sends a transaction's statements
together): the store adds them up for ``bench/cluster.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import structlog
from psycopg import errors as pg_errors

from seedance_watch.core.budget import BudgetTally, day_of, day_start, next_day_start
from seedance_watch.core.jobs import TERMINAL_STATES, InputFile
from seedance_watch.core.scheduling import take_token
from seedance_watch.ledger.base import SubmitLimits, SubmitRefusal, Taken
from seedance_watch.ledger.postgres.schema import SCHEMA, Database

__all__ = [
    "SLOTS_CHANNEL",
    "Fenced",
    "adopt_dead",
    "claim_drop",
    "decide_submit",
    "watch_slots",
]

log = structlog.get_logger(__name__)

#: ``NOTIFY`` channel of the ``slot_freed`` trigger (migration 0002).
SLOTS_CHANNEL = "seedance_watch_slots"
#: A submit decision waits this long for the account's lock, then is refused as busy
#: (a host frozen inside its decision must not stall every other host).
LOCK_TIMEOUT = "2s"
_TERMINAL = [state.value for state in TERMINAL_STATES]
_IN_FLIGHT = ["submitting", "submitted"]


class Fenced(Exception):
    """This host may not write the job (another owns it, or our session is over)."""


class _Rollback(Exception):
    """Leave the transaction, writing nothing."""


# --- claims --------------------------------------------------------------------------------

# The job and its files' claims in one statement: the claims only when the job was
# written (new, and our session current); the counts tell what happened.
_CLAIM = f"""
WITH j AS (
    INSERT INTO {SCHEMA}.jobs AS j (
        job_id, record, state, kind, content_key, owner, owner_epoch, created_at,
        updated_at, seq, intent_at, submit_at, cost_cents, revision, written_at)
    SELECT %(job_id)s::text, %(record)s::json, %(state)s::text, %(kind)s::text,
        %(content_key)s::text, %(owner)s::text, %(epoch)s::bigint, %(created_at)s::float8,
        %(updated_at)s::float8, %(seq)s::integer, %(intent_at)s::float8,
        %(submit_at)s::float8, %(cost_cents)s::bigint, nextval('{SCHEMA}.job_revisions'), now()
    WHERE EXISTS (
        SELECT 1 FROM {SCHEMA}.hosts AS h WHERE h.name = %(owner)s AND h.epoch = %(epoch)s)
    ON CONFLICT (job_id) DO NOTHING
    RETURNING job_id
), c AS (
    INSERT INTO {SCHEMA}.claims AS c (path, size, mtime_ns, sha256, job_id, host)
    SELECT f.path, f.size, f.mtime_ns, f.sha256, j.job_id, %(owner)s
    FROM j, unnest(%(paths)s::text[], %(sizes)s::bigint[], %(mtimes)s::bigint[],
                   %(shas)s::text[]) AS f(path, size, mtime_ns, sha256)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM j), (SELECT count(*) FROM c)
"""

# Who holds the files we could not claim (and the job, when its id was taken).
_HOLDERS = f"""
SELECT c.job_id, j.owner, j.state
FROM {SCHEMA}.claims AS c JOIN {SCHEMA}.jobs AS j USING (job_id)
WHERE (c.path, c.size, c.mtime_ns, c.sha256) IN (
    SELECT * FROM unnest(%(paths)s::text[], %(sizes)s::bigint[], %(mtimes)s::bigint[],
                         %(shas)s::text[]))
  AND c.job_id <> %(job_id)s
UNION ALL
SELECT job_id, owner, state FROM {SCHEMA}.jobs WHERE job_id = %(job_id)s
"""

# Files claimed by jobs that ended change hands (the files were put back).
_TAKE_OVER = f"""
UPDATE {SCHEMA}.claims AS c SET job_id = %(job_id)s, host = %(owner)s, claimed_at = now()
FROM {SCHEMA}.jobs AS j
WHERE j.job_id = c.job_id AND j.state = ANY(%(terminal)s) AND c.job_id <> %(job_id)s
  AND (c.path, c.size, c.mtime_ns, c.sha256) IN (
    SELECT * FROM unnest(%(paths)s::text[], %(sizes)s::bigint[], %(mtimes)s::bigint[],
                         %(shas)s::text[]))
RETURNING 1
"""

# How many files the job holds now (after a take-over: all of them, or a race was lost).
_HELD = f"""
SELECT count(*) FROM {SCHEMA}.claims AS c
WHERE c.job_id = %(job_id)s AND (c.path, c.size, c.mtime_ns, c.sha256) IN (
    SELECT * FROM unnest(%(paths)s::text[], %(sizes)s::bigint[], %(mtimes)s::bigint[],
                         %(shas)s::text[]))
"""

_CLAIM_REST = f"""
INSERT INTO {SCHEMA}.claims AS c (path, size, mtime_ns, sha256, job_id, host)
SELECT f.path, f.size, f.mtime_ns, f.sha256, %(job_id)s, %(owner)s
FROM unnest(%(paths)s::text[], %(sizes)s::bigint[], %(mtimes)s::bigint[], %(shas)s::text[])
    AS f(path, size, mtime_ns, sha256)
ON CONFLICT DO NOTHING
RETURNING 1
"""


def claim_params(row: dict[str, Any], inputs: Sequence[InputFile]) -> dict[str, Any]:
    """The job's row and its files' identities (path, size, mtime, sha256)."""
    return {
        **row,
        "paths": [i.path for i in inputs],
        "sizes": [i.size for i in inputs],
        "mtimes": [i.mtime_ns for i in inputs],
        "shas": [i.sha256 for i in inputs],
        "terminal": _TERMINAL,
    }


def claim_drop(
    conn: psycopg.Connection[Any], params: dict[str, Any], *, replace_finished: bool
) -> tuple[Taken | None, int]:
    """Write the job and claim its files in one transaction; ``(None, trips)`` when the
    drop is ours, ``(Taken, trips)`` with nothing written when another job holds a
    file.  Raises :class:`Fenced` when our session is over."""
    files = len(params["paths"])
    taken: Taken | None = None
    trips = 2
    try:
        with conn.pipeline(), conn.transaction():
            jobs, claimed = _one(conn.execute(_CLAIM, params, prepare=True))
            if jobs == 1 and claimed == files:
                return None, trips
            trips += 1
            holders = conn.execute(_HOLDERS, params).fetchall()
            own = [(o, s) for j, o, s in holders if j == params["job_id"]]
            if jobs == 0 and not own:
                raise Fenced
            if jobs == 0:
                owner, state = own[0]
                taken = Taken(params["job_id"], owner, state in _TERMINAL)
                raise _Rollback
            others = [(j, o, s) for j, o, s in holders if j != params["job_id"]]
            finished = bool(others) and all(s in _TERMINAL for _, _, s in others)
            if replace_finished and finished:
                trips += 2
                conn.execute(_TAKE_OVER, params).fetchall()
                conn.execute(_CLAIM_REST, params).fetchall()
                (held,) = _one(conn.execute(_HELD, params))
                if held == files:
                    return None, trips
                # Another host took them over first (its job is running now): its own.
                trips += 1
                holders = conn.execute(_HOLDERS, params).fetchall()
                others = [(j, o, s) for j, o, s in holders if j != params["job_id"]]
                job_id, owner, state = others[0] if others else (params["job_id"], "", "")
                taken = Taken(job_id, owner, state in _TERMINAL)
                raise _Rollback
            job_id, owner, _ = others[0] if others else (params["job_id"], "", "")
            taken = Taken(job_id, owner, finished)
            raise _Rollback
    except _Rollback:
        return taken, trips


# --- the submit decision -------------------------------------------------------------------

_LOCK_ACCOUNT = f"""
SELECT tokens, extract(epoch FROM clock_timestamp() - tokens_at)::float8
FROM {SCHEMA}.account WHERE id = 1 FOR UPDATE
"""

# Read after the lock (a statement of its own: its snapshot then holds every decision
# committed before ours).  Submits without a recorded cost (records from before costs
# were kept) are priced by the caller, as the reader does.
_ACCOUNT_STATE = f"""
SELECT
    (SELECT count(*) FROM {SCHEMA}.jobs
        WHERE state = ANY(%(in_flight)s) AND job_id <> %(job_id)s),
    (SELECT coalesce(sum(cost_cents), 0)::bigint FROM {SCHEMA}.jobs
        WHERE submit_at >= %(start)s AND submit_at < %(end)s AND job_id <> %(job_id)s
          AND cost_cents IS NOT NULL),
    (SELECT count(*) FROM {SCHEMA}.jobs
        WHERE submit_at >= %(start)s AND submit_at < %(end)s AND job_id <> %(job_id)s),
    (SELECT json_agg(record) FROM {SCHEMA}.jobs
        WHERE submit_at >= %(start)s AND submit_at < %(end)s AND job_id <> %(job_id)s
          AND cost_cents IS NULL)
"""

_SPEND_TOKEN = f"""
UPDATE {SCHEMA}.account SET tokens = %s, tokens_at = clock_timestamp() WHERE id = 1
"""


def decide_submit(
    conn: psycopg.Connection[Any],
    put_sql: str,
    params: dict[str, Any],
    limits: SubmitLimits,
    price_unpriced: Callable[[list[dict[str, Any]]], int],
) -> tuple[SubmitRefusal | None, int]:
    """Decide one submit for the whole account and write its intent, in one transaction.

    ``(None, trips)``: the intent is committed.  ``(SubmitRefusal, trips)``: nothing
    written.  Raises :class:`Fenced` when the intent's write is fenced.
    """
    zone = limits.prices.zone
    day = day_of(limits.at, zone)
    window = {
        **params,
        "in_flight": _IN_FLIGHT,
        "start": day_start(day, zone),
        "end": next_day_start(limits.at, zone),
    }
    refusal: SubmitRefusal | None = None
    try:
        with conn.pipeline(), conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            bucket = conn.execute(_LOCK_ACCOUNT, prepare=True)
            state = conn.execute(_ACCOUNT_STATE, window, prepare=True)
            tokens, elapsed = _one(bucket)
            in_flight, cents, submits, unpriced = _one(state)
            if in_flight >= limits.max_in_flight:
                refusal = SubmitRefusal("slots", in_flight=int(in_flight))
                raise _Rollback
            cents += price_unpriced(unpriced or [])
            tally = BudgetTally.from_days(limits.prices, {day: (int(cents), int(submits))})
            hold = tally.check(limits.at, limits.cents)
            if hold is not None:
                refusal = SubmitRefusal("budget", hold=hold, in_flight=int(in_flight))
                raise _Rollback
            left, wait = take_token(tokens, elapsed, limits.per_minute, limits.burst)
            if wait > 0:
                refusal = SubmitRefusal("rate", retry_in=wait, in_flight=int(in_flight))
                raise _Rollback
            conn.execute(_SPEND_TOKEN, (left,), prepare=True)
            written = conn.execute(put_sql, params, prepare=True)
        # Committed (the pipeline synced at the transaction's end).
        if written.fetchone() is None:
            raise Fenced
        return None, 2
    except _Rollback:
        return refusal, 2
    except pg_errors.LockNotAvailable:
        return SubmitRefusal("busy", retry_in=1.0), 1


# --- adoption ------------------------------------------------------------------------------

# The hosts whose lease ran out with unfinished jobs (a clean stop counts from its last
# renewal), locked so two adopters take each host once; only while our session stands.
_DEAD = f"""
SELECT h.name FROM {SCHEMA}.hosts AS h
WHERE h.name <> %(me)s
  AND h.renewed_at + h.lease_seconds * interval '1 second' < now()
  AND EXISTS (SELECT 1 FROM {SCHEMA}.jobs AS j
              WHERE j.owner = h.name AND j.state <> ALL(%(terminal)s))
  AND EXISTS (SELECT 1 FROM {SCHEMA}.hosts AS m
              WHERE m.name = %(me)s AND m.epoch = %(epoch)s AND m.stopped_at IS NULL)
FOR UPDATE OF h SKIP LOCKED
"""

_FENCE_DEAD = f"UPDATE {SCHEMA}.hosts SET epoch = epoch + 1 WHERE name = ANY(%(dead)s)"

_TAKE_JOBS = f"""
UPDATE {SCHEMA}.jobs SET owner = %(me)s, owner_epoch = %(epoch)s
WHERE owner = ANY(%(dead)s) AND state <> ALL(%(terminal)s)
RETURNING owner_epoch, record
"""


def adopt_dead(
    conn: psycopg.Connection[Any], host: str, epoch: int
) -> tuple[list[str], list[dict[str, Any]], int]:
    """Adopt the unfinished jobs of every dead host in one transaction: ``(dead hosts,
    the adopted records, trips)``.  The dead hosts' epochs move on, so that a late
    write of theirs changes nothing."""
    params = {"me": host, "epoch": epoch, "terminal": _TERMINAL}
    with conn.transaction():
        dead = [name for (name,) in conn.execute(_DEAD, params).fetchall()]
        if not dead:
            return [], [], 3
        params["dead"] = dead
        conn.execute(_FENCE_DEAD, params)
        rows = conn.execute(_TAKE_JOBS, params).fetchall()
    return dead, [record for _, record in rows], 5


# --- waiting for a slot --------------------------------------------------------------------


async def watch_slots(
    database: Database, application_name: str, changed: Callable[[], None]
) -> None:
    """``LISTEN`` on :data:`SLOTS_CHANNEL` and call ``changed`` for every notification,
    and once each time listening (re)starts (what ended meanwhile), until cancelled.

    One dedicated connection; lost, it is made again with backoff (the daemon's
    database pause is the lease's business, not this one's).
    """
    delay = 0.5
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(
                database.url,
                autocommit=True,
                connect_timeout=10,
                application_name=application_name,
            )
            try:
                await conn.execute(f"LISTEN {SLOTS_CHANNEL}")
                delay = 0.5
                changed()
                async for _ in conn.notifies():
                    changed()
            finally:
                await conn.close()
        except psycopg.Error as exc:
            log.debug("store.listen_lost", error=database.scrub(str(exc)), retry_in=delay)
        await asyncio.sleep(delay)
        delay = min(5.0, delay * 2)


def _one(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    row = cursor.fetchone()
    assert row is not None
    return tuple(row)
