"""How a run ends: the daemon waits out every pause, ``run --once`` must end.

The engine applies the same outcomes in both modes; where they differ, it asks its
:class:`RunPolicy`:

* a **pause** (the key refused, the bucket unusable, the shared store's database out
  of reach) cannot resolve itself in a pass that must end: ``--once`` stops the run
  (exit 3 or 1), nothing lost;
* a step that **keeps failing** transiently (an upload, a submit that provably never
  left) ends a ``--once`` run after :data:`ONCE_ATTEMPTS` tries, where the daemon
  would keep retrying;
* a job **held by the day's budget** is parked by ``--once`` (it stays uploaded in
  the ledger, exit 5) instead of waiting for midnight.

:class:`RunSummary` is what the run did, for the exit code and the demo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

__all__ = ["ONCE_ATTEMPTS", "OncePolicy", "RunPolicy", "RunSummary"]

log = structlog.get_logger(__name__)

#: With ``--once``, a job whose upload or (never-sent) submit keeps failing this many
#: times ends the run (exit 1, nothing lost) instead of waiting for ever, as the daemon does.
ONCE_ATTEMPTS = {"upload": 3, "submit": 8}


@dataclass
class RunSummary:
    """What a run did, for ``run --once`` exit codes and the demo's output."""

    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    credentials_refused: str | None = None
    storage_unavailable: str | None = None
    database_unavailable: str | None = None
    unfinished: str | None = None
    budget_held: str | None = None


class RunPolicy:
    """``seedance-watch run``: the daemon waits out every pause and retries for ever."""

    once = False

    def __init__(self, summary: RunSummary) -> None:
        self.summary = summary

    def paused(self, reason: str, message: str) -> bool:
        """A pause started; True when the run must stop."""
        return False

    def retries_exhausted(self, stage: str, attempt: int, reason: str) -> bool:
        """A transient failure of ``stage``; True when the run must stop."""
        return False

    def park(self, job_id: str, why: str) -> bool:
        """The budget holds ``job_id``; True when it is set aside (not waited for)."""
        return False

    def parked(self, job_id: str) -> bool:
        return False


class OncePolicy(RunPolicy):
    """``seedance-watch run --once``: a pass over the inbox and the ledger that ends."""

    once = True

    def __init__(self, summary: RunSummary, stop: Callable[[str], None]) -> None:
        super().__init__(summary)
        self._stop = stop
        self._parked: set[str] = set()

    def paused(self, reason: str, message: str) -> bool:
        if reason == "credentials":
            self.summary.credentials_refused = message
            self._stop("credentials_refused")
        elif reason == "database":
            self.summary.database_unavailable = message
            self._stop("database_unavailable")
        else:
            self.summary.storage_unavailable = message
            self._stop("storage_unavailable")
        return True

    def retries_exhausted(self, stage: str, attempt: int, reason: str) -> bool:
        if attempt <= ONCE_ATTEMPTS.get(stage, attempt):
            return False
        # The run must end: nothing is lost, the job waits in its durable state.
        self.summary.unfinished = f"{stage} kept failing ({reason or 'transient error'})"
        self._stop("unfinished")
        return True

    def park(self, job_id: str, why: str) -> bool:
        self.summary.budget_held = why
        self._parked.add(job_id)
        return True

    def parked(self, job_id: str) -> bool:
        return job_id in self._parked
