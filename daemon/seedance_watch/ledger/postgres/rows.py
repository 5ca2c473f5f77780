"""A job as a row of ``jobs``, a host as a row of ``hosts``: what the store, the reader
and the import share (docs/design.md, "The shared store")."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import psycopg

from seedance_watch.core.budget import recorded_cents, submit_time
from seedance_watch.core.jobs import Job
from seedance_watch.ledger.postgres.schema import SCHEMA

__all__ = ["ALIVE", "ENCODER", "encode_job", "iso", "job_row", "register_host"]

#: Compact JSON, refusing NaN and infinities as the JSON-lines ledger does.
ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)

#: A row ``h`` of ``hosts`` whose lease runs now, by the database's clock.
ALIVE = "(h.stopped_at IS NULL AND h.renewed_at + h.lease_seconds * interval '1 second' > now())"


def encode_job(job: Job) -> str:
    """The record of ``job`` as compact JSON; ``ValueError`` for a NaN or infinity and
    ``TypeError`` for a value JSON cannot hold (as the JSON-lines ledger refuses them)."""
    return ENCODER.encode(job.to_dict())


def job_row(job: Job, record: str, owner: str, epoch: int) -> dict[str, Any]:
    """The parameters of one job's row: its record and the columns the queries need."""
    return {
        "job_id": job.job_id,
        "record": record,
        "state": job.state.value,
        "kind": job.kind,
        "content_key": job.content_key,
        "owner": owner,
        "epoch": epoch,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "seq": job.seq,
        "intent_at": job.intent_at,
        "submit_at": submit_time(job),
        "cost_cents": recorded_cents(job),
    }


def iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat(timespec="seconds")


def register_host(
    conn: psycopg.Connection[Any],
    host: str,
    *,
    lease_seconds: float,
    pid: int | None,
    machine: str | None,
    running: bool,
) -> int:
    """Upsert ``host``'s row; a running daemon starts a new session (epoch + 1)."""
    row = conn.execute(
        f"""INSERT INTO {SCHEMA}.hosts AS h (name, epoch, pid, machine, lease_seconds,
                started_at, renewed_at, stopped_at)
            VALUES (%(name)s, %(epoch)s, %(pid)s, %(machine)s, %(lease)s, now(), now(),
                CASE WHEN %(running)s THEN NULL ELSE now() END)
            ON CONFLICT (name) DO UPDATE SET
                epoch = h.epoch + 1, pid = excluded.pid, machine = excluded.machine,
                lease_seconds = excluded.lease_seconds, started_at = now(),
                renewed_at = now(), stopped_at = NULL
            WHERE %(running)s
            RETURNING epoch""",
        {
            "name": host,
            "epoch": 1 if running else 0,
            "pid": pid,
            "machine": machine,
            "lease": lease_seconds,
            "running": running,
        },
    ).fetchone()
    return 0 if row is None else int(row[0])
