"""What the pipeline tells the world, as small interfaces it owns.

The pipeline never imports ``service/`` (metrics, notifications, hooks live there,
a floor above): it speaks through these protocols, and ``daemon.py`` plugs the
service implementations in.  Each method is cheap and never raises into a job:
an observer's bug must not fail, hold or duplicate a billed task.

* :class:`Observer` -- counters and gauges (``service/metrics.py``);
* :class:`Announcer` -- messages to people when a job ends or a pause starts or
  ends (``service/notify.py``);
* :class:`HookRunner` -- the user's commands after a job ends (``service/hooks.py``);
* :class:`JobEnd` -- how a job ended, what the last two are told.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from seedance_watch.core.budget import TodaySpend

__all__ = ["Announcer", "HookRunner", "JobEnd", "NullObserver", "Observer"]


class Observer(Protocol):
    """What the pipeline counts (``/metrics``)."""

    def submit_attempted(self) -> None: ...
    def submitted(self) -> None: ...
    def polled(self) -> None: ...
    def retried(self, stage: str) -> None: ...
    def paused(self, reason: str, active: bool) -> None: ...
    def uploaded(self, size: int, seconds: float) -> None: ...
    def downloaded(self, size: int, seconds: float) -> None: ...
    def finished(self, state: str, seconds: float) -> None: ...
    def gateway_ok(self) -> None: ...
    def budget(self, today: TodaySpend) -> None: ...


class NullObserver:
    """Counts nothing (a run without ``/metrics``, and tests)."""

    def submit_attempted(self) -> None:
        pass

    def submitted(self) -> None:
        pass

    def polled(self) -> None:
        pass

    def retried(self, stage: str) -> None:
        pass

    def paused(self, reason: str, active: bool) -> None:
        pass

    def uploaded(self, size: int, seconds: float) -> None:
        pass

    def downloaded(self, size: int, seconds: float) -> None:
        pass

    def finished(self, state: str, seconds: float) -> None:
        pass

    def gateway_ok(self) -> None:
        pass

    def budget(self, today: TodaySpend) -> None:
        pass


@dataclass(frozen=True, slots=True)
class JobEnd:
    """How a job ended, for its hook and its notification.

    ``source`` is relative to the inbox (the image, or the sidecar of a text or
    reference job); ``output`` is the mp4's absolute path (done only); ``metadata``
    the absolute path of ``NAME.json`` (done) or ``NAME.error.json`` (failed);
    ``code``, ``message`` and ``hint`` come from the error report (failed only).
    """

    event: Literal["done", "failed"]
    job_id: str
    source: str
    metadata: Path
    output: Path | None = None
    code: str | None = None
    message: str | None = None
    hint: str | None = None


class Announcer(Protocol):
    """Tells people (notifications): never blocks, never fails a job."""

    def job_ended(self, end: JobEnd) -> None: ...
    def pause_started(self, reason: str, message: str, lifts_at: float | None = None) -> None: ...
    def pause_ended(self, reason: str) -> None: ...
    # Notifications wait in a thread, which asyncio cannot cancel: it needs its own bound.
    async def drain(self, timeout: float) -> object: ...  # noqa: ASYNC109


class HookRunner(Protocol):
    """Runs the user's command for a job's end (``hooks.on_done``/``on_failed``)."""

    def command(self, event: str) -> list[str] | None: ...
    async def run(self, end: JobEnd) -> None: ...
    async def wait_idle(self) -> None: ...
