"""The seams between the code and where job records live: :class:`JobStore`, :class:`JobReader`.

The daemon writes through a :class:`JobStore` (one per store, held for the daemon's
life); everything that only looks -- ``status``, ``costs``, ``retry``, the page, the
demo -- reads through a :class:`JobReader`, which works while a daemon holds the
store and never writes to it.  Today's backend is the JSON-lines ledger
(:mod:`.jsonl`: :class:`~.jsonl.Ledger` and :class:`~.jsonl.JsonlReader`); a shared
SQL database for several hosts is one more module implementing both, where the
budget tally and the counts are aggregated by the database instead of from a
snapshot.  :mod:`seedance_watch.ledger` opens the configured backend;
:mod:`seedance_watch.testing.memory` is an in-memory one for tests, and
``tests/test_store_contract.py`` the suite every backend passes
(docs/design.md, "Writers and readers").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from seedance_watch.core.budget import BudgetPrices, BudgetTally
from seedance_watch.core.jobs import Job

__all__ = [
    "DaemonRecorder",
    "HostLease",
    "JobReader",
    "JobStore",
    "StoreHolder",
    "status_order",
]


class JobStore(Protocol):
    """Every job's latest record, written durably."""

    def put(self, job: Job) -> None:
        """Record ``job`` as the latest state of its id.

        Returns only when the record is durable (a crash after ``put`` returns keeps
        it); raises :class:`~seedance_watch.errors.StateError` when it cannot be.
        """
        ...

    def get(self, job_id: str) -> Job | None: ...

    def jobs(self) -> Mapping[str, Job]:
        """Every job by id (a live view: the event loop's thread only)."""
        ...

    def active(self) -> list[Job]:
        """The jobs not yet DONE or FAILED."""
        ...

    def counts(self) -> dict[str, int]:
        """Jobs by state value."""
        ...

    def counts_by_kind(self) -> dict[tuple[str, str], int]:
        """Jobs by (kind, state value), for each kind of job in the store."""
        ...

    def find_done_by_content_key(self, content_key: str) -> Job | None:
        """The newest DONE job that made this exact request (for dedupe)."""
        ...

    def snapshot(self) -> list[Job]:
        """A copy of every record, safe to read from another thread (the status page)."""
        ...

    def writable(self) -> bool:
        """Whether a write would succeed now (``/healthz``)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StoreHolder:
    """A running daemon that holds the store now, as far as the store knows it (in a
    shared store: the daemon of the reader's own host, while its lease runs)."""

    #: For people: ``"pid 12 on host h, started 2026-05-01T10:00:00+00:00"``.
    description: str
    pid: int | None = None
    host: str | None = None
    #: ISO 8601, as the holder recorded it.
    started_at: str | None = None


@dataclass(frozen=True, slots=True)
class HostLease:
    """One host of a shared store, as the store's database knows it.

    Times are ISO 8601 in UTC by the database's clock, never a host's
    (docs/design.md, "The shared store").
    """

    name: str
    #: The last renewal of its lease.
    renewed_at: str
    #: Its lease runs now: it renewed within its ``lease_seconds`` and did not stop.
    alive: bool
    started_at: str | None = None
    pid: int | None = None
    #: The machine its daemon ran on (``socket.gethostname()``).
    machine: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "renewed_at", "alive"}``: one entry of ``status --json``'s ``hosts``."""
        return {"name": self.name, "renewed_at": self.renewed_at, "alive": self.alive}


@runtime_checkable
class DaemonRecorder(Protocol):
    """A store that keeps the daemon's record of itself (``daemon.json``'s document)
    where its readers find it (:meth:`JobReader.daemon_record`), instead of in a file
    beside a JSON-lines ledger."""

    def record_daemon(self, record: Mapping[str, Any] | None) -> None: ...


def status_order(job: Job) -> tuple[float, str]:
    """The order :meth:`JobReader.snapshot` returns jobs in: oldest first, then by id."""
    return job.created_at, job.job_id


class JobReader(Protocol):
    """What the readers of a store see, without taking it from the daemon that holds it.

    Each call reads the store as it is now (nothing is cached between calls); each
    answer is consistent in itself: a snapshot taken while a daemon writes holds the
    state after some ``put``, never half of one.
    """

    @property
    def where(self) -> str:
        """The store's location for messages (a folder; a database without secrets)."""
        ...

    def exists(self) -> bool:
        """Whether a store is there at all (a state folder no daemon ever used: False)."""
        ...

    def snapshot(self) -> list[Job]:
        """The latest record of every job, in :func:`status_order`."""
        ...

    def counts(self) -> dict[str, int]:
        """Jobs by state value, every state present (zeros included)."""
        ...

    def tally(self, prices: BudgetPrices) -> BudgetTally:
        """Spend and submits per day at ``prices``: every submit that counts, on its day.

        Equal to ``BudgetTally.from_jobs(prices, self.snapshot())``, however a backend
        computes it.
        """
        ...

    def holder(self) -> StoreHolder | None:
        """The running daemon that holds the store now; None when none does."""
        ...

    def daemon_record(self) -> dict[str, Any] | None:
        """What the last daemon recorded about itself: ``pid``, ``key_source``, ``paused``
        (reason -> since, message, next probe...) and ``updated_at``.

        It outlives the daemon (the pauses a run ended with); None when none was
        recorded or it cannot be read.  In a shared store: this host's daemon.
        """
        ...

    def hosts(self) -> list[HostLease] | None:
        """Every host that ever joined a shared store, by name; None for a store of one
        host (the JSON-lines ledger), where ``status`` names no host."""
        ...

    def owners(self) -> dict[str, str]:
        """The host that owns each job, by job id (empty for a store of one host).

        Call it after :meth:`snapshot`: every job in the snapshot is then named
        (jobs are never deleted), with its owner of this moment.
        """
        ...

    def close(self) -> None:
        """Release what the reader holds (a connection); the reader is not used after."""
        ...
