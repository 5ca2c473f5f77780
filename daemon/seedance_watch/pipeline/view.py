"""What the outside reads of a running engine: one view instead of a bag of callbacks.

The status page and ``/healthz`` run on the health server's own thread: every
method here is safe to call from there (it reads copies, or hands work to the
engine's loop) and cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from seedance_watch.core.budget import TodaySpend
from seedance_watch.core.jobs import Job
from seedance_watch.core.scheduling import TaskTimeEstimator
from seedance_watch.ledger.base import JobStore
from seedance_watch.logs import redact_text
from seedance_watch.pipeline.budget import BudgetGate
from seedance_watch.pipeline.dispatch import Dispatcher, Waiting
from seedance_watch.pipeline.pauses import Pauses

__all__ = ["EngineView"]


class EngineView:
    """A read-only window on one :class:`~seedance_watch.pipeline.engine.Engine`, built
    by :meth:`Engine.view` from the parts it reads."""

    def __init__(
        self,
        *,
        store: JobStore,
        estimator: TaskTimeEstimator,
        budget: BudgetGate,
        pauses: Pauses,
        dispatch: Dispatcher,
        poke: Callable[[str], bool],
        fatal: Callable[[], str | None],
        ready: Callable[[], bool],
    ) -> None:
        self._store, self._estimator, self._budget, self._pauses = store, estimator, budget, pauses
        self._dispatch = dispatch
        self.poke, self.fatal, self.ready = poke, fatal, ready

    def jobs(self) -> Sequence[Job]:
        """A consistent copy of every record."""
        return self._store.snapshot()

    def counts(self) -> dict[str, int]:
        return self._store.counts()

    def task_eta(self) -> float | None:
        """The learned time from submit to a finished task, seconds (None: not yet)."""
        return self._estimator.typical()

    def budget(self) -> TodaySpend:
        """Today's spend against the caps, as last published."""
        return self._budget.view()

    def pauses(self) -> dict[str, str]:
        """Why submissions (credentials), uploads (storage) or intake and submissions
        (database: the shared store's) are paused, if they are."""
        out: dict[str, str] = {}
        for name, breaker in (
            ("credentials", self._pauses.credentials),
            ("storage", self._pauses.storage),
            ("database", self._pauses.database),
        ):
            if breaker.reason is not None:
                out[name] = redact_text(breaker.reason)[:160]
        return out

    def waiting(self, job_id: str) -> Waiting:
        """Where one job waits: when its timer is due, whether it holds a submit slot."""
        return self._dispatch.waiting(job_id)

    def submit_queue(self) -> tuple[str, ...]:
        """The uploaded jobs waiting for a submit, next first."""
        return self._dispatch.submit_queue()

    def submit_rate(self) -> float:
        """Submits a minute allowed now: ``gateway.requests_per_minute``, lowered after
        a 429 (never below a quarter of it), raised again by each accepted submit."""
        return self._dispatch.bucket.rate_per_minute

    def writable(self) -> bool:
        """The store takes a write now."""
        return self._store.writable()
