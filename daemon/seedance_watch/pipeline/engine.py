"""The asyncio orchestrator: queues, bounded pools, the timer heap, the lifecycle.

Policy lives in the stages (``upload``, ``submit``, ``poll``, ``download``,
``finish``: :mod:`seedance_watch.pipeline.stage`), each returning an ``Outcome``;
the engine applies every outcome in :meth:`Engine.apply`, ledger first, then
routes the job by ``RESUME`` (its state says which stage it enters next)::

    inbox ─▶ intake ─▶ upload pool ─▶ ready queue ─▶ submitter ─▶ timer heap ─▶ poll pool
                                      (uploaded)     (slots, token         (one entry     │
                                                     bucket, breaker)      per task)      ▼
                                                                          download pool ─▶ done/

A job has at most one pending timer; when it fires the job re-enters the stage its
ledger state routes to -- the same table recovery uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog

from seedance_watch import errors as E
from seedance_watch.aio import wait_event
from seedance_watch.config import Config
from seedance_watch.core.jobs import RESUME, Event, Job, Stage, State, apply, job_files
from seedance_watch.core.scheduling import STAGE_POLICIES, TaskTimeEstimator, TokenBucket
from seedance_watch.core.stability import InboxEvent
from seedance_watch.files.fsutil import STALE_TEMP_SECONDS, remove_stale_temps
from seedance_watch.files.inbox import Inbox
from seedance_watch.files.outbox import cleanup_staging
from seedance_watch.files.storage import Storage
from seedance_watch.ledger.base import JobStore
from seedance_watch.pipeline.budget import BudgetGate
from seedance_watch.pipeline.dispatch import Dispatcher
from seedance_watch.pipeline.download import DownloadStage
from seedance_watch.pipeline.endings import Endings
from seedance_watch.pipeline.finish import FinishStage
from seedance_watch.pipeline.intake import Intake, event_files
from seedance_watch.pipeline.pauses import Pauses
from seedance_watch.pipeline.placement import Placement
from seedance_watch.pipeline.poll import PollStage
from seedance_watch.pipeline.stage import (
    Advance,
    Done,
    Fail,
    JobStage,
    Outcome,
    Pause,
    Place,
    Retry,
    StageDeps,
    Wait,
)
from seedance_watch.pipeline.submit import SubmitStage
from seedance_watch.pipeline.upload import UploadStage
from seedance_watch.providers.base import VideoProvider
from seedance_watch.providers.download import VideoDownloader
from seedance_watch.service.hooks import HookRunner
from seedance_watch.service.metrics import Metrics
from seedance_watch.service.notify import Notifications
from seedance_watch.service.statusfile import DaemonStatusFile

__all__ = ["ONCE_ATTEMPTS", "Engine", "RunSummary"]

log = structlog.get_logger(__name__)

#: With ``--once``, a job whose upload or (never-sent) submit keeps failing this many
#: times ends the run (exit 1, nothing lost) instead of waiting for ever, as the daemon does.
ONCE_ATTEMPTS = {"upload": 3, "submit": 8}
#: Workers per pooled stage (polls: scaled with ``gateway.max_in_flight``).
POOL_SIZES = {Stage.UPLOAD: 4, Stage.DOWNLOAD: 4, Stage.FINISH: 1}


@dataclass
class RunSummary:
    """What a run did, for ``run --once`` exit codes and the demo's output."""

    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    credentials_refused: str | None = None
    storage_unavailable: str | None = None
    unfinished: str | None = None
    budget_held: str | None = None


class StageCrashed(E.StateError):
    """A stage raised an unexpected exception: a bug; the daemon stops cleanly."""


class Engine:
    """Drives every job from the inbox to done/ or failed/."""

    def __init__(
        self,
        config: Config,
        *,
        ledger: JobStore,
        storage: Storage,
        provider: VideoProvider,
        downloader: VideoDownloader,
        inbox: Inbox,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        key_source: str = "",
        hooks: HookRunner | None = None,
        notes: Notifications | None = None,
    ) -> None:
        self.config, self.ledger, self.inbox, self.clock = config, ledger, inbox, clock
        self.metrics = metrics or Metrics(
            job_counts=ledger.counts, kind_counts=ledger.counts_by_kind
        )
        self.summary = RunSummary()
        self.fatal: E.StateError | None = None
        self._attempts: dict[str, int] = {}
        self._idle, self._fatal_event = asyncio.Event(), asyncio.Event()
        self._busy, self._once = 0, False
        self._parked: set[str] = set()  # --once: held by the day's budget
        self._tasks: list[asyncio.Task[Any]] = []
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self.pauses = Pauses(
            metrics=self.metrics,
            status=DaemonStatusFile(config.paths.state, key_source=key_source),
            clock=clock,
            key_source=key_source,
            on_credentials_accepted=lambda: self.dispatch.submit_wake.set(),
            notes=notes,
        )
        self.budget = BudgetGate(
            config.budget, clock=clock, metrics=self.metrics, status=self.pauses.status, notes=notes
        )
        self.endings = Endings(
            config.paths,
            hooks=hooks,
            notes=notes,
            get=ledger.get,
            put=self._put,
            spawn=lambda coro: self._spawn(coro, "hook", side=True),
        )
        self.credentials, self.store_breaker = self.pauses.credentials, self.pauses.storage
        gw = config.gateway
        self.placement = Placement(
            store=ledger,
            put=self._put,
            paths=config.paths,
            on_finished=self._finished,
            download_again=lambda job_id: self.dispatch.route_id(job_id),
            release_objects=self._delete_objects,
            hook_due=self.endings.hook_due,
            prices=self.budget.prices,
        )
        deps = StageDeps(
            config=config,
            provider=provider,
            downloader=downloader,
            storage=storage,
            metrics=self.metrics,
            pauses=self.pauses,
            bucket=TokenBucket(gw.requests_per_minute, burst=min(10.0, gw.max_in_flight)),
            estimator=TaskTimeEstimator(),
            clock=clock,
            rng=rng or random.Random(),
            put=self._put,
            critical=self._critical,
            log_retry=self._log_retry,
            prices=self.budget.prices,
        )
        self.deps, self.storage = deps, storage
        self.dispatch = Dispatcher(
            store=ledger,
            clock=clock,
            credentials=self.credentials,
            bucket=deps.bucket,
            max_in_flight=gw.max_in_flight,
            step=self._step,
            gate=self._budget_wait,
            spawn_side=lambda coro: self._spawn(coro, "submit", side=True),
        )
        self.intake = Intake(config, ledger, self.placement, clock)
        self.intake.attach(inbox)
        self.poller = PollStage(deps)
        self.stages: dict[Stage, JobStage] = {
            Stage.UPLOAD: UploadStage(deps),
            Stage.SUBMIT: SubmitStage(deps),
            Stage.POLL: self.poller,
            Stage.DOWNLOAD: DownloadStage(deps, self.placement),
            Stage.FINISH: FinishStage(self.placement),
        }

    @property
    def _stopping(self) -> bool:
        return self.dispatch.stopping

    @_stopping.setter
    def _stopping(self, value: bool) -> None:
        self.dispatch.stopping = value

    # --- lifecycle ------------------------------------------------------------------------------

    async def recover(self) -> None:
        """Take up every unfinished job of the ledger (SPEC §7): each re-enters its stage."""
        self.dispatch.loop = asyncio.get_running_loop()
        for job in self.ledger.active():
            self.dispatch.know_token(job)
        alive = {job.job_id for job in self.ledger.active()}
        removed = await asyncio.to_thread(cleanup_staging, self.config.paths.outbox, alive)
        for root in (self.config.paths.done, self.config.paths.failed):
            removed += await asyncio.to_thread(remove_stale_temps, root)
        # `seedance-watch retry` may be moving files into the inbox now: old temps only.
        inbox = self.config.paths.inbox
        removed += await asyncio.to_thread(remove_stale_temps, inbox, older_than=STALE_TEMP_SECONDS)
        if removed:
            log.info("engine.leftovers_removed", files=removed)
        self.budget.load(self.ledger.jobs().values())
        if hooks_due := self.endings.resume(self.ledger.snapshot()):
            log.info("hook.resumed", jobs=hooks_due)
        for job in self.ledger.active():
            self.placement.reserve(job)
        for job in self.ledger.active():
            self.intake.claim(job)
            log.info("job.recovered", job_id=job.job_id, state=job.state.value)
            self.dispatch.track(job)
            self.dispatch.route(job)
        self.dispatch.submit_wake.set()

    def start_workers(self) -> None:
        """Start the timer loop, the submitter, intake and the stage pools."""
        self._spawn(self.dispatch.timer_loop(), "timers")
        self._spawn(self.dispatch.submitter(), "submitter")
        for i in range(2):
            worker = self.intake.worker(
                self.dispatch.route, self._fail, self._guard, self._idle.set
            )
            self._spawn(worker, f"intake-{i}")
        sizes = {**POOL_SIZES, Stage.POLL: min(64, max(4, self.config.gateway.max_in_flight))}
        for stage, size in sizes.items():
            for i in range(size):
                self._spawn(self.dispatch.worker(stage), f"{stage}-{i}")

    async def run(self, stop: asyncio.Event) -> None:
        """The daemon: watch the inbox until ``stop`` is set (or a fatal error), then return."""
        await self.recover()
        self.start_workers()
        watcher = asyncio.create_task(self.inbox.run(self.handle_event), name="inbox")
        waits = {
            watcher,
            asyncio.create_task(stop.wait()),
            asyncio.create_task(self._fatal_event.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if watcher.done() and not watcher.cancelled() and watcher.exception():
                raise watcher.exception()  # type: ignore[misc]
            self._raise_if_fatal()
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def run_once(self) -> RunSummary:
        """``run --once``: everything in the inbox and the ledger, then return."""
        self._once = True
        await self.recover()
        self.start_workers()
        for event in await self.inbox.scan_once():
            await self.handle_event(event)
        while not self._stopping and (self.intake.pending or self._unparked()):
            self._idle.clear()
            await self._idle.wait()
        self._raise_if_fatal()
        await self.endings.drain(self.config.hooks.timeout)
        return self.summary

    def _unparked(self) -> bool:
        return any(job.job_id not in self._parked for job in self.ledger.active())

    def _budget_wait(self, job: Job) -> float:
        """The submitter's budget check: seconds to wait; -1 (``--once``): park the job."""
        wait = self.budget.wait(job)
        if wait > 0 and self._once:
            hold = self.budget.hold
            self.summary.budget_held = hold.message if hold is not None else "budget reached"
            self._parked.add(job.job_id)
            self._idle.set()
            return -1.0
        return wait

    async def shutdown(self, grace: float = 20.0) -> None:
        """Stop taking work, let running uploads/submits/downloads finish (bounded), stop."""
        self._stopping = True
        self.dispatch.submit_wake.set()
        deadline = time.monotonic() + grace
        if self._side_tasks:  # submits in flight and object deletions
            await asyncio.wait(set(self._side_tasks), timeout=grace)
        while self._busy and time.monotonic() < deadline:
            self._idle.clear()
            await wait_event(self._idle, deadline - time.monotonic())
        if self._busy:
            log.warning("engine.drain_timeout", busy=self._busy, grace=grace)
        tasks = [*self._tasks, *self._side_tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _die(self, exc: E.StateError) -> None:
        """The state can no longer be trusted (a failed fsync, a crashed stage): stop."""
        if self.fatal is None:
            log.critical("engine.state_error", error=exc.message)
            self.fatal = exc
        self._stopping = True
        for event in (self._fatal_event, self._idle, self.dispatch.submit_wake):
            event.set()

    def _raise_if_fatal(self) -> None:
        if self.fatal is not None:
            raise self.fatal

    def _stop_for(self, reason: str) -> None:
        """In ``--once`` mode, end the run (a pause cannot resolve itself there)."""
        self._stopping = True
        self._idle.set()
        log.error("engine.stopping", reason=reason)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str, *, side: bool = False) -> None:
        task = asyncio.create_task(coro, name=name)
        if side:
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)
        else:
            self._tasks.append(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A worker never ends by itself: if one does, the daemon stops (never a dead worker)."""
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, E.StateError):
            self._die(exc)
        elif exc is not None:
            log.error("engine.task_error", task=task.get_name(), exc_info=exc)
            self._die(StageCrashed(f"the {task.get_name()} task crashed: {exc!r}"))

    @contextlib.contextmanager
    def _critical(self) -> Iterator[None]:
        """Mark a step that shutdown lets finish (an upload, a submit, a download)."""
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            self._idle.set()

    # --- intake and webhooks --------------------------------------------------------------------

    def poke(self, token: str) -> bool:
        """A webhook callback (any thread): see :meth:`Dispatcher.poke`."""
        return self.dispatch.poke(token)

    async def handle_event(self, event: InboxEvent) -> None:
        """Queue one inbox event for intake (quick: the inbox loop awaits this)."""
        if not self._stopping:
            self.intake.submit(event, event_files(event))

    # --- applying outcomes ----------------------------------------------------------------------

    async def apply(self, job: Job, stage: Stage, outcome: Outcome) -> None:
        """Apply a stage's outcome: the ledger first, then the follow-up (route, timer, fail)."""
        match outcome:
            case Advance(event=event, at=at):
                self._attempts.pop(job.job_id, None)
                if event is not None:
                    job = self._put(job, event)
                    self._advanced(job, stage)
                self.dispatch.route(job, at)
            case Retry(reason=reason, retry_after=retry_after, event=event):
                if event is not None:
                    job = self._put(job, event)
                self._retry(job, stage, reason, retry_after)
            case Wait(at=at):
                self._attempts.pop(job.job_id, None)
                self.dispatch.schedule(job.job_id, at)
            case Pause(reason=reason, error=error, event=event):
                if event is not None:
                    job = self._put(job, event)
                self._pause(job, reason, error)
            case Fail(error=error):
                await self._fail(job, error)
            case Place(sha256=sha, size=size, length=length):
                await self._guard(job, self.placement.place(job, sha, size, length=length))
            case Done():
                pass
        self.dispatch.track(self.ledger.get(job.job_id) or job)

    def _advanced(self, job: Job, stage: Stage) -> None:
        """Reporting after a durable step (best effort: never undoes the step)."""
        if stage is Stage.UPLOAD:
            keys = [key for _, key in job.uploads]
            log.info("job.uploaded", job_id=job.job_id, s3_key=keys[0] if keys else None)
        elif stage is Stage.SUBMIT:
            self.metrics.submits.inc()
            self.deps.bucket.recover(self.config.gateway.requests_per_minute)
            log.info("job.submitted", job_id=job.job_id, task_id=job.task_id, dialect=job.dialect)
            self._gateway_ok()

    def _gateway_ok(self) -> None:
        self.metrics.gateway_ok()
        try:
            self.pauses.credentials_ok()
        except OSError as exc:  # the status file is best effort
            log.warning("status.write_failed", error=str(exc))

    def _pause(self, job: Job, reason: str, error: E.PipelinePaused) -> None:
        try:
            if reason == "credentials":
                assert isinstance(error, E.CredentialsRefused)
                self.pauses.pause_credentials(error)
            else:
                self.pauses.pause_storage(error.message)
        except OSError as exc:
            log.warning("status.write_failed", error=str(exc))
        if self._once:
            if reason == "credentials":
                self.summary.credentials_refused = error.message
            else:
                self.summary.storage_unavailable = error.message
            self._stop_for(
                f"{reason}_refused" if reason == "credentials" else "storage_unavailable"
            )
        breaker = self.credentials if reason == "credentials" else self.store_breaker
        if job.state is State.UPLOADED:
            self.dispatch.ready.appendleft(job.job_id)  # first in line when the probe succeeds
        else:
            self.dispatch.schedule(job.job_id, breaker.probe_at)
        self.dispatch.submit_wake.set()

    async def _fail(self, job: Job, error: E.JobError) -> None:
        self.deps.estimator.forget(job.job_id)
        self.poller.forget(job.job_id)
        await self._guard(self.ledger.get(job.job_id) or job, self.placement.fail(job, error))

    async def _guard(self, job: Job, step: Coroutine[Any, Any, None]) -> None:
        """Run a placement step; a file error is retried from the recorded plan (finish)."""
        try:
            with self._critical():  # a shutdown lets a placement finish (bounded)
                await step
        except OSError as exc:
            current = self.ledger.get(job.job_id)
            if current is None or current.terminal:
                raise
            self._retry(current, Stage.FINISH, f"file error: {exc}", None)

    def _retry(self, job: Job, stage: Stage, reason: str, retry_after: float | None) -> None:
        """Back on the timer heap after the stage's backoff (or the peer's Retry-After)."""
        attempt = self._attempts[job.job_id] = self._attempts.get(job.job_id, 0) + 1
        if self._once and attempt > ONCE_ATTEMPTS.get(stage, attempt):
            # ``--once`` must end: nothing is lost, the job waits in its durable state.
            self.summary.unfinished = f"{stage} kept failing ({reason or 'transient error'})"
            self._stop_for("unfinished")
            return
        delay = STAGE_POLICIES[stage].backoff.delay(attempt, self.deps.rng, retry_after)
        self._log_retry(job.job_id, stage, attempt, delay, reason)
        self.dispatch.schedule(job.job_id, self.clock() + delay)
        self.dispatch.submit_wake.set()

    def _log_retry(self, job_id: str, stage: str, attempt: int, delay: float, reason: str) -> None:
        self.metrics.retries.labels(stage=stage).inc()
        log.info(
            "job.retry",
            job_id=job_id,
            stage=stage,
            attempt=attempt,
            delay=round(delay, 2),
            reason=reason,
        )

    def _put(self, job: Job, event: Event) -> Job:
        """Apply ``event`` and make it durable (``put`` returns only once it is)."""
        new = apply(job, event, self.clock())
        self.ledger.put(new)
        self.budget.recorded(job, new, event)
        self.dispatch.know_token(new)
        return new

    async def _step(self, stage: Stage, job_id: str) -> None:
        """Run one stage on one job and apply its outcome."""
        try:
            job = self.ledger.get(job_id)
            if job is None or job.terminal or RESUME[job.state] is not stage:
                return  # stale: the job moved on meanwhile
            if stage is Stage.POLL:
                if self._stopping:
                    return
                self.dispatch.last_poll[job_id] = self.clock()
            try:
                outcome = await self.stages[stage].run(job)
            except OSError as exc:  # a file step (disk full, a folder gone): retried
                outcome = Retry(f"file error: {exc}")
        finally:
            if stage is Stage.SUBMIT:
                self.budget.release(job_id)  # its intent is counted, or there was none
        await self.apply(self.ledger.get(job_id) or job, stage, outcome)

    # --- finished -------------------------------------------------------------------------------

    def _finished(self, job: Job) -> None:
        self.metrics.finished.labels(state=job.state.value).inc()
        self.metrics.job_latency.observe(max(0.0, job.updated_at - job.created_at))
        (self.summary.done if job.state is State.DONE else self.summary.failed).append(job.job_id)
        self.intake.release(job_files(job))
        self._attempts.pop(job.job_id, None)
        self.dispatch.forget(job)
        self.dispatch.track(job)
        self.endings.ended(job)
        self._idle.set()

    async def _delete_objects(self, job: Job) -> None:
        """Best effort: a bucket that refuses the delete never holds a job back."""
        if not self.config.storage.delete_after:
            return
        for key in job.object_keys:
            try:
                await asyncio.to_thread(self.storage.delete, key)
            except (E.StorageTransient, E.StorageUnavailable) as exc:
                log.warning("storage.delete_failed", job_id=job.job_id, s3_key=key, reason=str(exc))
