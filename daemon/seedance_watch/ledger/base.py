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

Several hosts on one shared store act as one account: a :class:`JobStore` also
claims drops (:meth:`JobStore.claim`), decides submits for the whole account
(:meth:`JobStore.put_intent`), keeps this host's lease (:meth:`JobStore.renew`)
and adopts the jobs of dead hosts (:meth:`JobStore.adopt`).  A store of one host
gives each its single-host meaning (:class:`OneHost`: nothing to claim from anyone,
the engine's own slots, token bucket and budget decide, no lease), so the pipeline
calls them without asking which store it has (docs/design.md, "Several hosts, one
account").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from seedance_watch.core.budget import BudgetHold, BudgetPrices, BudgetTally
from seedance_watch.core.jobs import Job

if TYPE_CHECKING:
    from seedance_watch.ledger.retries import RetryFile

__all__ = [
    "DaemonRecorder",
    "HostLease",
    "JobReader",
    "JobStore",
    "OneHost",
    "RetryRequests",
    "StoreHolder",
    "SubmitLimits",
    "SubmitRefusal",
    "Taken",
    "status_order",
]


@dataclass(frozen=True, slots=True)
class Taken:
    """The files of a drop are claimed by another job: leave them alone.

    ``finished``: that job has ended (done, failed or retried), so its files left the
    inbox then; files found there again with the same identity were put back (a
    retry, a copy keeping the mtime) and are a new drop once checked to be there.
    """

    job_id: str
    host: str
    finished: bool


@dataclass(frozen=True, slots=True)
class SubmitLimits:
    """What the account allows, for a shared store's submit decision: the engine's own
    limits (``gateway.max_in_flight``, ``requests_per_minute`` with its burst, the
    budget's prices and caps), and what this submit reserves (``cents``, at ``at``,
    its intent's time)."""

    max_in_flight: int
    per_minute: float
    burst: float
    prices: BudgetPrices
    cents: int
    at: float


@dataclass(frozen=True, slots=True)
class SubmitRefusal:
    """The account cannot take this submit now; nothing was written.

    ``slots``: ``max_in_flight`` tasks are in flight across the hosts (wait for one to
    end); ``rate``: the account's token bucket is empty for ``retry_in`` seconds;
    ``budget``: a daily cap (``hold``) is reached across the hosts; ``busy``: the
    decision could not be taken in time (another host held it): try again soon.
    """

    reason: Literal["slots", "rate", "budget", "busy"]
    retry_in: float = 0.0
    hold: BudgetHold | None = None
    in_flight: int = 0

    @property
    def message(self) -> str:
        if self.reason == "slots":
            return f"{self.in_flight} tasks in flight across the hosts (gateway.max_in_flight)"
        if self.reason == "rate":
            return f"the account's requests_per_minute: next submit in {self.retry_in:.1f} s"
        if self.reason == "budget" and self.hold is not None:
            return self.hold.message
        return "another host held the submit decision"


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

    # --- several hosts, one account (OneHost: the meaning for one host) ---

    @property
    def lease_seconds(self) -> float | None:
        """How long this host's lease runs after a renewal; None: no lease (one host)."""
        ...

    @property
    def lost(self) -> bool:
        """This host's session is over: its jobs were adopted (it was presumed dead), or
        another daemon took its name.  Nothing it writes goes through any more."""
        ...

    def renew(self) -> bool:
        """Renew this host's lease; False when it could not (:attr:`lost`, or the
        database out of reach).  Call it every ``lease_seconds / 3``."""
        ...

    def adopt(self) -> list[Job]:
        """Take over the unfinished jobs of every host whose lease ran out; returns them
        (now this host's, to resume as after a restart)."""
        ...

    def claim(self, job: Job, *, replace_finished: bool = False) -> Taken | None:
        """Claim the files of a new drop for ``job`` before anything is done with them.

        None: the drop is this host's (a shared store records ``job`` with its claim,
        in one transaction).  :class:`Taken`: another job holds one of its files,
        nothing written.  ``replace_finished``: take over files claimed by jobs that
        ended (after checking the files are still in the inbox).
        """
        ...

    def put_intent(self, job: Job, limits: SubmitLimits) -> SubmitRefusal | None:
        """Write ``job``'s submit intent if the account allows it now (a slot, a token,
        the day's caps), deciding and writing in one transaction; else write nothing
        and say why.  One host: a plain :meth:`put` (the engine decided)."""
        ...

    def put_finished(self, job: Job) -> None:
        """Write ``job``, which had ended (``FAILED → RETRIED``), whichever host drove it."""
        ...

    def find(self, job_id: str) -> Job | None:
        """Any host's job by id (:meth:`get`: this host's)."""
        ...

    def forget(self, job_id: str) -> None:
        """Drop a job this host no longer owns (fenced) from what it reads."""
        ...

    async def watch_account(self, changed: Callable[[], None]) -> None:
        """Call ``changed`` whenever a task of any host ends (a slot frees), until
        cancelled; one host: returns at once (its own engine knows)."""
        ...


class OneHost:
    """The several-hosts methods of :class:`JobStore` for a store of one host: nothing is
    claimed by anyone else, the engine's own slots, token bucket and budget decide each
    submit, there is no lease to keep and no dead host to adopt from."""

    lease_seconds: float | None = None
    lost = False
    # The store this mixes into writes and reads its jobs.
    put: Callable[[Job], None]
    get: Callable[[str], Job | None]

    def renew(self) -> bool:
        return True

    def adopt(self) -> list[Job]:
        return []

    def claim(self, job: Job, *, replace_finished: bool = False) -> Taken | None:
        return None

    def put_intent(self, job: Job, limits: SubmitLimits) -> SubmitRefusal | None:
        self.put(job)
        return None

    def put_finished(self, job: Job) -> None:
        self.put(job)

    def find(self, job_id: str) -> Job | None:
        return self.get(job_id)

    def forget(self, job_id: str) -> None:
        pass

    async def watch_account(self, changed: Callable[[], None]) -> None:
        return None


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


class RetryRequests(Protocol):
    """Which failed job sent which files back to the inbox (``seedance-watch retry``):
    ``state/retries.jsonl`` for one host (:class:`~.retries.RetryBook`), a table of the
    shared store for several, so that whichever host takes the drop knows it
    (docs/design.md, "Retry")."""

    def request(self, job_id: str, files: Iterable[RetryFile]) -> None:
        """Record that ``job_id``'s ``files`` go back to the inbox (before they move)."""
        ...

    def match(
        self, files: Iterable[RetryFile], *, usable: Callable[[str], bool] = ...
    ) -> str | None:
        """The failed job that sent back any of ``files``, newest request first, among
        the jobs ``usable`` accepts."""
        ...

    def pending(self) -> set[str]:
        """The jobs with a request (spent or not)."""
        ...

    def close(self) -> None: ...


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
