"""This host's lease in a shared store, kept from the event loop, and the adoption of
dead hosts' jobs (docs/design.md, "Leases and failover").

Every ``lease_seconds / 3`` the :class:`LeaseKeeper` renews the lease (the call runs
in a worker thread, but the loop starts it: a loop that is stuck renews nothing and
loses its lease, as a dead host does), then adopts the unfinished jobs of every host
whose lease ran out.  It tells the engine what it learnt:

* ``renewed()`` -- the database answers and the lease runs (a database pause ends);
* ``unreachable()`` -- the database does not answer (a database pause);
* ``adopted(jobs)`` -- jobs of dead hosts are this host's now;
* ``lost()`` -- this host's session is over (it was presumed dead): the engine stops.

:meth:`LeaseKeeper.valid` says whether this host may act on its jobs now, by its own
clock (:func:`awake_clock`, which runs during a suspend too): until :data:`TRUST` of
``lease_seconds`` after the start of the last renewal that succeeded.  After a freeze
(SIGSTOP, a suspended machine, a stuck loop) it is False at once, before any other
host can have adopted anything, and stays so until a renewal succeeds -- or the
session turns out lost.  A store of one host has no lease: the keeper is never
started and ``valid`` is always True.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import structlog

from seedance_watch.aio import wait_event
from seedance_watch.core.jobs import Job, job_files
from seedance_watch.errors import JobFenced, LeaseLost, StoreUnavailable
from seedance_watch.ledger.base import JobStore

if TYPE_CHECKING:
    from seedance_watch.pipeline.dispatch import Dispatcher
    from seedance_watch.pipeline.intake import Intake
    from seedance_watch.pipeline.pauses import Pauses
    from seedance_watch.pipeline.tasks import Supervisor

__all__ = ["TRUST", "HostSession", "LeaseKeeper", "lease_lost_error"]

log = structlog.get_logger(__name__)

#: The share of a lease this host trusts after a renewal began: the database's lease
#: ends ``lease_seconds`` after the renewal reached it (later than it began here),
#: and the margin covers clocks running at slightly different rates.
TRUST = 0.8


def awake_clock() -> float:
    """Seconds on a clock that also runs while the machine is suspended (Linux's
    ``CLOCK_BOOTTIME``; ``time.monotonic`` stops meanwhile, which would let a host
    that slept past its lease trust it on waking), else ``time.monotonic``."""
    return time.clock_gettime(_BOOTTIME) if _BOOTTIME is not None else time.monotonic()


_BOOTTIME: int | None = getattr(time, "CLOCK_BOOTTIME", None)


class LeaseKeeper:
    """Renews this host's lease and adopts dead hosts' jobs, from the event loop."""

    def __init__(
        self,
        store: JobStore,
        *,
        renewed: Callable[[], None],
        unreachable: Callable[[], None],
        adopted: Callable[[list[Job]], None],
        lost: Callable[[], None],
        clock: Callable[[], float] = awake_clock,
    ) -> None:
        self.store = store
        self.lease = store.lease_seconds
        self._renewed, self._unreachable = renewed, unreachable
        self._adopted, self._lost = adopted, lost
        self._clock = clock
        # The store's session began its lease when it opened, a moment ago.
        self._valid_until = clock() + TRUST * self.lease if self.lease is not None else None
        self._wake = asyncio.Event()

    def valid(self) -> bool:
        """Whether this host may act on its jobs now (always, for one host)."""
        return self._valid_until is None or self._clock() < self._valid_until

    def check_now(self) -> None:
        """Renew at once (a write was fenced: is the session over?)."""
        self._wake.set()

    async def run(self) -> None:
        """Renew every ``lease_seconds / 3`` until cancelled, or until the session is lost."""
        if self.lease is None:
            return
        interval = self.lease / 3
        while True:
            started = self._clock()
            if await asyncio.to_thread(self.store.renew):
                self._valid_until = started + TRUST * self.lease
                self._renewed()
                try:
                    jobs = await asyncio.to_thread(self.store.adopt)
                except StoreUnavailable as exc:  # the next round tries again
                    log.warning("lease.adoption_failed", error=exc.message)
                    jobs = []
                if jobs:
                    self._adopted(jobs)
            elif self.store.lost:
                log.error("lease.lost", lease_seconds=self.lease)
                self._lost()
                return
            else:
                self._unreachable()
            self._wake.clear()
            await wait_event(self._wake, max(0.0, started + interval - self._clock()))


def lease_lost_error(host: str) -> LeaseLost:
    """Why the daemon stops when its session is over."""
    return LeaseLost(
        f"this host's lease of the shared store ran out and its session is over (host "
        f"{host!r} was presumed dead and its unfinished jobs adopted by the other hosts, "
        "or another daemon took its name); it stopped without touching them: start it "
        "again to join as a new session"
    )


class HostSession:
    """This host's standing in a shared store, as the engine meets it: the lease (kept
    by a :class:`LeaseKeeper`), the work to do again once it is renewed, the database
    pause, fenced writes and adopted jobs.  On the JSON-lines ledger of one host none
    of it ever happens: the lease is always valid and the store never out of reach.
    """

    def __init__(
        self,
        store: JobStore,
        *,
        host: str,
        pauses: Pauses,
        dispatch: Dispatcher,
        intake: Intake,
        tasks: Supervisor,
        paused: Callable[[str], object],
        resume: Callable[[list[Job], str], None],
    ) -> None:
        self.store, self.pauses, self.dispatch = store, pauses, dispatch
        self.intake, self.tasks = intake, tasks
        self._paused, self._resume = paused, resume
        # Work to do again once the store answers and this host's lease runs (a write
        # the database did not take; a step the lease did not allow), and a signal of
        # each renewal for whoever waits for one.
        self._after_renewal: list[Callable[[], None]] = []
        self._renewal = asyncio.Event()
        self.keeper = LeaseKeeper(
            store,
            renewed=self._renewed,
            unreachable=lambda: self.database_down(
                "the shared store's database does not answer: this host's lease could not "
                "be renewed"
            ),
            adopted=lambda jobs: self._resume(jobs, "job.adopted"),
            lost=lambda: self.tasks.die(lease_lost_error(host)),
        )
        intake.ready = self.ready
        intake.store_down = self.intake_store_down
        intake.fenced = lambda exc: self.fenced(exc.job_id, exc)

    def start(self) -> None:
        """Keep the lease and listen for tasks ending on any host (a shared store only)."""
        if self.store.lease_seconds is not None:
            self.tasks.spawn(self.keeper.run(), "lease")
            self.tasks.spawn(self.store.watch_account(self.dispatch.account_changed), "listen")

    def valid(self) -> bool:
        """Whether this host may act on its jobs now (see :meth:`LeaseKeeper.valid`)."""
        return self.keeper.valid()

    def when_renewed(self, again: Callable[[], None]) -> None:
        """Do ``again`` once the lease is renewed next (the database answers again)."""
        self._after_renewal.append(again)

    async def ready(self) -> None:
        """Wait until the store may be written: its database answers, the lease runs."""
        while self.pauses.database.is_open or not self.keeper.valid():
            await self._renewal.wait()

    def database_down(self, message: str) -> None:
        """The shared store's database is out of reach: pause intake and submits."""
        try:
            self.pauses.pause_database(message)
        except OSError as exc:
            log.warning("status.write_failed", error=str(exc))
        self._paused(message)

    def intake_store_down(
        self, exc: StoreUnavailable, finish: Callable[[], Coroutine[Any, Any, None]] | None
    ) -> None:
        """Intake could not write: ``finish`` (what is left of the drop) runs again once
        the database answers."""
        self.database_down(exc.message)
        if finish is not None:
            self.when_renewed(lambda: self.tasks.spawn(self._finish_intake(finish), "intake"))

    async def _finish_intake(self, finish: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await finish()
        except StoreUnavailable as exc:
            self.intake_store_down(exc, finish)
        except JobFenced as exc:
            self.fenced(exc.job_id, exc)

    def fenced(self, job_id: str, exc: JobFenced) -> None:
        """Another host owns the job now (it adopted it), or this host's session is
        over: the job leaves this host's view, and no file of it is touched again."""
        job = self.store.get(job_id)
        self.store.forget(job_id)
        self.dispatch.in_flight.discard(job_id)
        if job is not None and not job.terminal:
            self.intake.release(job_files(job))
        log.warning("job.fenced", job_id=job_id, owner=exc.owner, reason=exc.message)
        self.keeper.check_now()

    def _renewed(self) -> None:
        """The lease was renewed: the database answers, this host may act."""
        if self.pauses.database.is_open:
            self.pauses.database_ok()
            self.dispatch.wake()
        waiting, self._after_renewal = self._after_renewal, []
        for again in waiting:
            again()
        self._renewal.set()
        self._renewal = asyncio.Event()
