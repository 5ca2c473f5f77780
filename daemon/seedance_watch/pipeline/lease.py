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
monotonic clock: until :data:`TRUST` of ``lease_seconds`` after the start of the last
renewal that succeeded.  After a freeze (SIGSTOP, a suspended machine, a stuck loop)
it is False at once, before any other host can have adopted anything, and stays so
until a renewal succeeds -- or the session turns out lost.  A store of one host has
no lease: the keeper is never started and ``valid`` is always True.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from seedance_watch.aio import wait_event
from seedance_watch.core.jobs import Job
from seedance_watch.errors import LeaseLost, StoreUnavailable
from seedance_watch.ledger.base import JobStore

__all__ = ["TRUST", "LeaseKeeper", "lease_lost_error"]

log = structlog.get_logger(__name__)

#: The share of a lease this host trusts after a renewal began: the database's lease
#: ends ``lease_seconds`` after the renewal reached it (later than it began here),
#: and the margin covers clocks running at slightly different rates.
TRUST = 0.8


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
        clock: Callable[[], float] = time.monotonic,
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
