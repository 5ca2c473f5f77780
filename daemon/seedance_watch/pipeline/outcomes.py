"""Every stage's outcome applied in one place, the store first (docs/design.md,
"Durability before each external action").

A stage returns an ``Outcome`` (:mod:`seedance_watch.pipeline.stage`); :meth:`Outcomes.apply`
writes what it says to the store (nothing else happens unless that write is durable),
then does what follows: routes the job by its new state, puts it on the timer heap
after a backoff, pauses the pipeline, holds it first in line, fails it, places its
video.  The reporting after a durable step (logs, metrics, the end of a credentials
pause) and a job's end (the run's summary, its files let go, its hooks due) are here
too: they follow writes, never precede them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import structlog

from seedance_watch import errors as E
from seedance_watch.config import Config
from seedance_watch.core.budget import recorded_cents
from seedance_watch.core.jobs import (
    Event,
    Job,
    Retried,
    Stage,
    State,
    SubmitIntent,
    apply,
    job_files,
)
from seedance_watch.core.scheduling import STAGE_POLICIES, TokenBucket
from seedance_watch.ledger.base import JobStore, SubmitLimits, SubmitRefusal
from seedance_watch.pipeline.dispatch import ACCOUNT_RECHECK
from seedance_watch.pipeline.once import RunPolicy, RunSummary
from seedance_watch.pipeline.ports import Observer
from seedance_watch.pipeline.stage import (
    Advance,
    Done,
    Fail,
    Hold,
    Outcome,
    Pause,
    Place,
    Retry,
    Wait,
)

if TYPE_CHECKING:
    from seedance_watch.pipeline.budget import BudgetGate
    from seedance_watch.pipeline.checks import KeyWatch
    from seedance_watch.pipeline.dispatch import Dispatcher
    from seedance_watch.pipeline.endings import Endings
    from seedance_watch.pipeline.intake import Intake
    from seedance_watch.pipeline.pauses import Pauses
    from seedance_watch.pipeline.placement import Placement
    from seedance_watch.pipeline.poll import PollStage
    from seedance_watch.pipeline.tasks import Supervisor

__all__ = ["Outcomes"]

log = structlog.get_logger(__name__)


class Outcomes:
    """Applies the stages' outcomes for the engine, the store first.

    Built before the parts it drives, which take its methods as their callbacks
    (``put``, ``intent``, ``finished``...); :meth:`connect` then hands it those parts.
    ``policy`` is the run's (``run`` or ``run --once``): how a pause or an exhausted
    retry ends.
    """

    def __init__(
        self,
        config: Config,
        *,
        store: JobStore,
        clock: Callable[[], float],
        observer: Observer,
        tasks: Supervisor,
        summary: RunSummary,
        rng: random.Random,
    ) -> None:
        self.config, self.store, self.clock = config, store, clock
        self.observer, self.tasks, self.summary, self.rng = observer, tasks, summary, rng
        self.policy = RunPolicy(summary)
        self.burst = min(10.0, config.gateway.max_in_flight)
        self._attempts: dict[str, int] = {}

    def connect(
        self,
        *,
        dispatch: Dispatcher,
        budget: BudgetGate,
        pauses: Pauses,
        placement: Placement,
        endings: Endings,
        intake: Intake,
        poller: PollStage,
        key_watch: KeyWatch,
        bucket: TokenBucket,
        forget_estimate: Callable[[str], None],
    ) -> None:
        self.dispatch, self.budget, self.pauses = dispatch, budget, pauses
        self.placement, self.endings, self.intake = placement, endings, intake
        self.poller, self.key_watch, self.bucket = poller, key_watch, bucket
        self._forget_estimate = forget_estimate

    async def apply(self, job: Job, stage: Stage, outcome: Outcome) -> None:
        """Apply a stage's outcome: the store first, then the follow-up (route, timer, fail)."""
        match outcome:
            case Advance(event=event, at=at):
                self._attempts.pop(job.job_id, None)
                if event is not None:
                    job = self.put(job, event)
                    self._advanced(job, stage)
                self.dispatch.route(job, at)
            case Retry(reason=reason, retry_after=retry_after, event=event):
                if event is not None:
                    job = self.put(job, event)
                self.retry(job, stage, reason, retry_after)
            case Wait(at=at):
                self._attempts.pop(job.job_id, None)
                self.dispatch.schedule(job.job_id, at)
            case Pause(reason=reason, error=error, event=event):
                if event is not None:
                    job = self.put(job, event)
                self._pause(job, reason, error)
            case Hold(refusal=refusal):
                self._attempts.pop(job.job_id, None)
                self._hold(job, refusal)
            case Fail(error=error):
                await self.fail(job, error)
            case Place(sha256=sha, size=size, length=length):
                await self.guard(job, self.placement.place(job, sha, size, length=length))
            case Done():
                pass
        self.dispatch.track(self.store.get(job.job_id) or job)

    def put(self, job: Job, event: Event) -> Job:
        """Apply ``event`` and make it durable (returns only once it is)."""
        new = apply(job, event, self.clock())
        self.store.put(new)
        self.budget.recorded(job, new, event)
        self.dispatch.know_token(new)
        return new

    def intent(self, job: Job, event: SubmitIntent) -> Job | SubmitRefusal:
        """Write ``job``'s submit intent if the account has room for it: the store
        decides with this host's limits (one host: its own slots, bucket and budget
        decided already, and the intent is a plain write)."""
        new = apply(job, event, self.clock())
        gw = self.config.gateway
        limits = SubmitLimits(
            max_in_flight=gw.max_in_flight,
            per_minute=gw.requests_per_minute,
            burst=self.burst,
            prices=self.budget.prices,
            cents=recorded_cents(new) or 0,
            at=new.intent_at if new.intent_at is not None else self.clock(),
        )
        refused = self.store.put_intent(new, limits)
        if refused is not None:
            return refused
        self.budget.recorded(job, new, event)
        self.dispatch.know_token(new)
        return new

    def put_after_hook(self, job: Job, event: Event) -> Job:
        """A hook ran: recorded when the store takes it (else it runs again after a
        restart, as after a crash)."""
        try:
            return self.put(job, event)
        except (E.JobFenced, E.StoreUnavailable) as exc:
            log.warning("hook.not_recorded", job_id=job.job_id, error=exc.message)
            return job

    async def fail(self, job: Job, error: E.JobError) -> None:
        self._forget_estimate(job.job_id)
        self.poller.forget(job.job_id)
        await self.guard(self.store.get(job.job_id) or job, self.placement.fail(job, error))

    async def guard(self, job: Job, step: Coroutine[Any, Any, None]) -> None:
        """Run a placement step; a file error is retried from the recorded plan (finish)."""
        try:
            with self.tasks.critical():  # a shutdown lets a placement finish (bounded)
                await step
        except OSError as exc:
            current = self.store.get(job.job_id)
            if current is None or current.terminal:
                raise
            self.retry(current, Stage.FINISH, f"file error: {exc}", None)

    def retry(self, job: Job, stage: Stage, reason: str, retry_after: float | None) -> None:
        """Back on the timer heap after the stage's backoff (or the peer's Retry-After)."""
        attempt = self._attempts[job.job_id] = self._attempts.get(job.job_id, 0) + 1
        if self.policy.retries_exhausted(stage, attempt, reason):
            return
        delay = STAGE_POLICIES[stage].backoff.delay(attempt, self.rng, retry_after)
        self.log_retry(job.job_id, stage, attempt, delay, reason)
        self.dispatch.schedule(job.job_id, self.clock() + delay)
        self.dispatch.wake()

    def log_retry(self, job_id: str, stage: str, attempt: int, delay: float, reason: str) -> None:
        self.observer.retried(stage)
        log.info(
            "job.retry",
            job_id=job_id,
            stage=stage,
            attempt=attempt,
            delay=round(delay, 2),
            reason=reason,
        )

    def budget_wait(self, job: Job) -> float:
        """The submitter's budget check: seconds to wait; -1: the run set the job aside."""
        wait = self.budget.wait(job)
        hold = self.budget.hold
        if wait > 0 and self.policy.park(job.job_id, hold.message if hold else "budget reached"):
            self.tasks.idle.set()
            return -1.0
        return wait

    def retried(self, failed: Job, new_id: str) -> None:
        """A retried drop became ``new_id``: the failed job's story continues there
        (on a shared store, whichever host's the failed job was)."""
        current = self.store.get(failed.job_id) or failed
        if current.state is State.FAILED:
            try:
                self.store.put_finished(apply(current, Retried(retried_as=new_id), self.clock()))
            except (E.JobFenced, E.StoreUnavailable) as exc:
                log.warning("job.retry_not_recorded", job_id=current.job_id, error=exc.message)
                return
            log.info("job.retried", job_id=current.job_id, retried_as=new_id)

    def finished(self, job: Job) -> None:
        """A job ended (done or failed, its files placed): the run's summary, its files
        let go, its hooks and notifications due."""
        self.observer.finished(job.state.value, job.updated_at - job.created_at)
        (self.summary.done if job.state is State.DONE else self.summary.failed).append(job.job_id)
        self.intake.release(job_files(job))
        self._attempts.pop(job.job_id, None)
        self.dispatch.forget(job)
        self.dispatch.track(job)
        self.endings.ended(job)
        self.tasks.idle.set()

    def _hold(self, job: Job, refusal: SubmitRefusal) -> None:
        """The account had no room for the submit: the job waits first in line until a
        task ends on some host (or the account's next token, or the next day)."""
        now = self.clock()
        if refusal.hold is not None:
            self.budget.account_held(refusal.hold)
            until = now
        elif refusal.reason == "slots":
            until = now + ACCOUNT_RECHECK
        else:
            until = now + refusal.retry_in
        log.debug("job.held", job_id=job.job_id, reason=refusal.reason, why=refusal.message)
        self.dispatch.hold_account(job.job_id, until)

    def _advanced(self, job: Job, stage: Stage) -> None:
        """Reporting after a durable step (best effort: never undoes the step)."""
        if stage is Stage.UPLOAD:
            keys = [key for _, key in job.uploads]
            log.info("job.uploaded", job_id=job.job_id, s3_key=keys[0] if keys else None)
        elif stage is Stage.SUBMIT:
            self.observer.submitted()
            self.bucket.recover(self.config.gateway.requests_per_minute)
            log.info("job.submitted", job_id=job.job_id, task_id=job.task_id, dialect=job.dialect)
            self.observer.gateway_ok()
            try:
                self.pauses.credentials_ok()
            except OSError as exc:  # the status file is best effort
                log.warning("status.write_failed", error=str(exc))

    def _pause(self, job: Job, reason: str, error: E.PipelinePaused) -> None:
        try:
            if isinstance(error, E.CredentialsRefused):
                self.pauses.pause_credentials(error)
                self.key_watch.wake.set()
            else:
                self.pauses.pause_storage(error.message)
        except OSError as exc:
            log.warning("status.write_failed", error=str(exc))
        self.policy.paused(reason, error.message)
        if job.state is State.UPLOADED:
            self.dispatch.first_in_line(job.job_id)  # the probe when the pause lifts
        else:
            breaker = self.pauses.credentials if reason == "credentials" else self.pauses.storage
            self.dispatch.schedule(job.job_id, breaker.probe_at)
            self.dispatch.wake()
