"""The stage protocol: each stage runs one job one step and returns an :data:`Outcome`.

A stage (``upload``, ``submit``, ``poll``, ``download``, ``finish``) decides what
happened; the engine applies the outcome in one place, ledger first
(:meth:`~seedance_watch.pipeline.outcomes.Outcomes.apply`).  A stage writes to the
ledger itself only for an *intent* that must be durable before its own external
action (the submit intent), through :attr:`StageDeps.put`.

The outcomes, a closed union:

* :class:`Advance` -- apply ``event`` (if any), then the job enters the stage its
  new state routes to (``RESUME``), at once or at ``at``;
* :class:`Retry` -- a transient error: apply ``event`` (if any), then come back to
  this stage after the stage's backoff (or the peer's ``retry_after``);
* :class:`Wait` -- come back at ``at`` (a poll interval, a breaker's probe time);
  not an error;
* :class:`Pause` -- the gateway refused the key or the bucket is unusable: nothing
  fails, the pipeline waits for the breaker's probe;
* :class:`Hold` -- the account has no room for this submit now (a shared store's
  decision: every slot taken on some host, the account's rate, a daily cap across
  the hosts): nothing was written, the job waits first in line;
* :class:`Fail` -- the job fails with ``error``;
* :class:`Place` -- the video is staged and checked: place it (``length``: its
  seconds as its header says, read when a reservation waits to settle on it);
* :class:`Done` -- nothing left for the engine (the job is gone or finished).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

from seedance_watch import errors as E
from seedance_watch.config import Config
from seedance_watch.core.budget import BudgetPrices
from seedance_watch.core.jobs import Event, Job, Stage, SubmitIntent
from seedance_watch.core.scheduling import (
    STAGE_POLICIES,
    RetryHook,
    TaskTimeEstimator,
    TokenBucket,
)
from seedance_watch.files.storage import Storage
from seedance_watch.ledger.base import SubmitRefusal
from seedance_watch.pipeline.pauses import Pauses
from seedance_watch.pipeline.ports import Observer
from seedance_watch.pipeline.providers import Providers
from seedance_watch.providers.download import VideoDownloader

__all__ = [
    "Advance",
    "Done",
    "Fail",
    "Hold",
    "JobStage",
    "Outcome",
    "Pause",
    "Place",
    "Retry",
    "StageDeps",
    "Wait",
]


@dataclass(frozen=True)
class Advance:
    event: Event | None = None
    at: float | None = None


@dataclass(frozen=True)
class Retry:
    reason: str
    retry_after: float | None = None
    event: Event | None = None


@dataclass(frozen=True)
class Wait:
    at: float


@dataclass(frozen=True)
class Pause:
    reason: Literal["credentials", "storage"]
    error: E.PipelinePaused
    event: Event | None = None


@dataclass(frozen=True)
class Hold:
    refusal: SubmitRefusal


@dataclass(frozen=True)
class Fail:
    error: E.JobError


@dataclass(frozen=True)
class Place:
    sha256: str
    size: int
    length: float | None = None


@dataclass(frozen=True)
class Done:
    pass


Outcome = Advance | Retry | Wait | Pause | Hold | Fail | Place | Done


@dataclass
class StageDeps:
    """What the stages share: the seams, the pure schedulers and two engine services."""

    config: Config
    providers: Providers
    downloader: VideoDownloader
    storage: Storage
    observer: Observer
    pauses: Pauses
    bucket: TokenBucket
    estimator: TaskTimeEstimator
    clock: Callable[[], float]
    rng: random.Random
    #: Apply an event and write the job durably (returns the new record).
    put: Callable[[Job, Event], Job]
    #: Write a submit intent if the account has room for it now (the new record), or
    #: say why not (nothing written): the store decides, with the engine's limits.
    intent: Callable[[Job, SubmitIntent], Job | SubmitRefusal]
    #: Marks a step that a shutdown lets finish (an upload, a submit, a download).
    critical: Callable[[], contextlib.AbstractContextManager[None]]
    #: ``job.retry`` bookkeeping of an in-coroutine retry loop (stage, attempt, delay, why).
    log_retry: Callable[[str, str, int, float, str], None]
    #: What a submit reserves (the budget gate's prices: the same amounts it let through).
    prices: BudgetPrices
    #: The provider checks the key for free: while it is refused, uploads wait too
    #: (no image sits in the bucket for a key that does not work).
    free_key_check: bool = False

    def retry_hook(self, job_id: str, stage: Stage, retry_on: type[Exception]) -> RetryHook:
        """The stamina backoff hook of one in-coroutine retry loop (uploads, downloads)."""

        def on_retry(attempt: int, delay: float, exc: Exception) -> None:
            self.log_retry(job_id, stage, attempt, delay, getattr(exc, "message", repr(exc)))

        return RetryHook(
            STAGE_POLICIES[stage], retry_on, clock=time.monotonic, rng=self.rng, on_retry=on_retry
        )


class JobStage(Protocol):
    """One stage of the pipeline: run ``job`` one step, say what happened."""

    stage: Stage

    async def run(self, job: Job) -> Outcome: ...


@contextlib.contextmanager
def nothing() -> Iterator[None]:
    yield
