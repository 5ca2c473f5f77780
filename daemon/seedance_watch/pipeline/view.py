"""What the outside reads of a running engine: one view instead of a bag of callbacks.

The status page and ``/healthz`` run on the health server's own thread: every
method here is safe to call from there (it reads copies, or hands work to the
engine's loop) and cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from seedance_watch.core.budget import TodaySpend
from seedance_watch.core.jobs import Job
from seedance_watch.logs import redact_text

if TYPE_CHECKING:
    from seedance_watch.pipeline.engine import Engine

__all__ = ["EngineView"]


class EngineView:
    """A read-only window on one :class:`~seedance_watch.pipeline.engine.Engine`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def jobs(self) -> Sequence[Job]:
        """A consistent copy of every record."""
        return self._engine.store.snapshot()

    def counts(self) -> dict[str, int]:
        return self._engine.store.counts()

    def task_eta(self) -> float | None:
        """The learned time from submit to a finished task, seconds (None: not yet)."""
        return self._engine.deps.estimator.typical()

    def budget(self) -> TodaySpend:
        """Today's spend against the caps, as last published."""
        return self._engine.budget.view()

    def poke(self, token: str) -> bool:
        """A webhook callback's token: True when it names a job (its task is polled soon)."""
        return self._engine.poke(token)

    def pauses(self) -> dict[str, str]:
        """Why submissions (credentials) or uploads (storage) are paused, if they are."""
        out: dict[str, str] = {}
        pauses = self._engine.pauses
        for name, breaker in (("credentials", pauses.credentials), ("storage", pauses.storage)):
            if breaker.reason is not None:
                out[name] = redact_text(breaker.reason)[:160]
        return out

    def fatal(self) -> str | None:
        """Why the engine stopped, when a stage crashed or the state failed."""
        fatal = self._engine.fatal
        return None if fatal is None else fatal.message

    def ready(self) -> bool:
        """Recovery is done and the inbox is watched."""
        return self._engine.inbox.watching.is_set()

    def writable(self) -> bool:
        """The store takes a write now."""
        return self._engine.store.writable()
