"""The daily budget in the pipeline: hold submits at the cap, count every intent.

The arithmetic is pure (:mod:`seedance_watch.core.budget`); this module is its I/O
shell: it builds the tally from the ledger (a restart does not reset the day),
keeps it current from the ledger writes the engine makes (an intent counts at the
cost it reserves, a provable refusal not at all, a settlement by its difference),
and when the next submit would go over a cap it holds
submits -- nothing fails -- logging ``budget.reached`` once, showing the pause in
``state/daemon.json`` and ``/metrics``, and telling the notifiers; at the next day
it lifts by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import structlog

from seedance_watch.config import BudgetConfig
from seedance_watch.core.budget import (
    BudgetHold,
    BudgetPrices,
    BudgetTally,
    TodaySpend,
    submit_time,
)
from seedance_watch.core.jobs import Job, Placing, SubmitIntent, SubmitRefused
from seedance_watch.ledger.daemonfile import DaemonStatusFile
from seedance_watch.pipeline.ports import Announcer, Observer

__all__ = ["BudgetGate"]

log = structlog.get_logger(__name__)


class BudgetGate:
    """Whether the next submit may go, and the pause while it may not."""

    def __init__(
        self,
        config: BudgetConfig,
        *,
        clock: Callable[[], float],
        observer: Observer,
        status: DaemonStatusFile,
        notes: Announcer | None = None,
    ) -> None:
        self.prices = BudgetPrices.from_config(config)
        self.tally = BudgetTally(self.prices)
        self.hold: BudgetHold | None = None
        self._clock, self._observer, self._status, self._notes = clock, observer, status, notes
        self._announced: tuple[object, str] | None = None
        # Submits let through but whose intent is not written yet (they run
        # concurrently): counted already, at what each reserves, so that two
        # cannot pass one last slot.  job id -> (when, cents).
        self._reserved: dict[str, tuple[float, int]] = {}
        self._view: TodaySpend = self.tally.today(clock())
        # A cap reached across the hosts of a shared store (its submit decision said
        # so): held until the day ends, whatever this host's own tally says.
        self._account_hold: BudgetHold | None = None

    def load(self, jobs: Iterable[Job]) -> None:
        """Count every submit the ledger holds (start-up)."""
        self.tally = BudgetTally.from_jobs(self.prices, jobs)
        self._publish()

    def recorded(self, before: Job, after: Job, event: object) -> None:
        """The engine wrote ``event``: an intent counts from now, a refusal no more,
        a settled reservation by the difference."""
        if isinstance(event, SubmitIntent) and after.intent_at is not None:
            self.release(after.job_id)
            self.tally.intent(after.intent_at, self.prices.cost_of(after).cents)
        elif isinstance(event, SubmitRefused) and before.intent_at is not None:
            self.tally.refused(before.intent_at, self.prices.cost_of(before).cents)
        elif isinstance(event, Placing) and after.cost != before.cost:
            at = submit_time(after)
            if at is None:
                return
            reserved, settled = self.prices.cost_of(before), self.prices.cost_of(after)
            self.tally.settled(at, reserved.cents, settled.cents)
            log.info(
                "budget.settled",
                job_id=after.job_id,
                reserved=reserved.cents,
                cents=settled.cents,
                seconds=settled.seconds,
            )
        else:
            return
        self._publish()

    def release(self, job_id: str) -> None:
        """A let-through submit ended without an intent (or its intent is now counted)."""
        reserved = self._reserved.pop(job_id, None)
        if reserved is not None:
            self.tally.refused(*reserved)

    def wait(self, job: Job) -> float:
        """0 when ``job`` may be submitted now (what it reserves is counted from now
        on); else the seconds until the day ends."""
        now = self._clock()
        account = self._account_hold
        if account is not None:
            if now < account.lifts_at:
                return max(0.001, account.lifts_at - now)
            self._account_hold = None
        cents = self.prices.reserve(job.model, job.options).cents
        hold = self.tally.check(now, cents)
        self._view = self.tally.today(now)  # a new day shows as one
        if hold is None:
            if self.hold is not None:
                self._lift()
            self._reserved[job.job_id] = (now, cents)
            self.tally.intent(now, cents)
            return 0.0
        if self.hold is None or (hold.day, hold.cap) != (self.hold.day, self.hold.cap):
            self._reached(hold)
        self.hold = hold
        return max(0.001, hold.lifts_at - now)

    def account_held(self, hold: BudgetHold) -> None:
        """A shared store refused a submit: ``hold``'s cap is reached across the hosts
        (this host's own tally counts only its own submits).  Submits wait until the
        day ends, the pause reported as for this host's own cap."""
        self._account_hold = hold
        if self.hold is None or (hold.day, hold.cap) != (self.hold.day, self.hold.cap):
            self._reached(hold)
        self.hold = hold

    def today(self) -> TodaySpend:
        return self.tally.today(self._clock())

    def view(self) -> TodaySpend:
        """Today's standing as last published (safe to read from another thread)."""
        return self._view

    def _reached(self, hold: BudgetHold) -> None:
        if self._announced != (hold.day, hold.cap):
            self._announced = (hold.day, hold.cap)
            log.warning(
                "budget.reached",
                cap=hold.cap,
                spent=hold.spent,
                limit=hold.limit,
                lifts_at=hold.lifts_at,
                message=hold.message,
            )
            if self._notes is not None:
                self._notes.pause_started("budget", hold.why, hold.lifts_at)
        self._observer.paused("budget", True)
        try:
            self._status.pause("budget", hold.message, next_probe_at=hold.lifts_at)
        except OSError as exc:  # the status file is best effort
            log.warning("status.write_failed", error=str(exc))

    def _lift(self) -> None:
        self.hold = None
        log.info("budget.resumed")
        self._observer.paused("budget", False)
        if self._notes is not None:
            self._notes.pause_ended("budget")
        try:
            self._status.resume("budget")
        except OSError as exc:
            log.warning("status.write_failed", error=str(exc))

    def _publish(self) -> None:
        today = self._view = self.tally.today(self._clock())
        self._observer.budget(today)
