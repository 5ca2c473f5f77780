"""The asyncio orchestrator: runs the stages and has their outcomes applied, ledger first.

Policy lives in the stages (``upload``, ``submit``, ``poll``, ``download``,
``finish``: :mod:`seedance_watch.pipeline.stage`), each returning an ``Outcome``;
:class:`~seedance_watch.pipeline.outcomes.Outcomes` applies every outcome, ledger
first, then routes the job by ``RESUME`` (its state says which stage it enters next).  The
plumbing -- queues, slots, the timer heap -- is the :class:`Dispatcher`'s; how a run
ends is its :class:`~seedance_watch.pipeline.once.RunPolicy`'s::

    inbox ─▶ intake ─▶ upload pool ─▶ ready queue ─▶ submitter ─▶ timer heap ─▶ poll pool
                                      (uploaded)     (slots, token         (one entry     │
                                                     bucket, breaker)      per task)      ▼
                                                                          download pool ─▶ done/

What the engine needs from outside comes in through the constructor, wired by
``daemon.py``: the store, the bucket, the providers, the inbox, and the pipeline's
ports (:mod:`seedance_watch.pipeline.ports`) for metrics, notifications and hooks.

On a shared store (several hosts, one account: docs/design.md, "Several hosts, one
account") the engine's :class:`~seedance_watch.pipeline.lease.HostSession` keeps this
host's lease and listens for tasks ending on any host; the engine resumes the jobs it
adopts from dead hosts as after a restart, and meets three store errors no single host
sees: a write another host fenced
(``JobFenced``: the job is dropped from this host's view, no file touched), the
session lost (``LeaseLost``: the daemon stops at once), the database out of reach
(``StoreUnavailable``: a pause of intake and submits; the step whose write failed is
done again once the database answers).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from seedance_watch import errors as E
from seedance_watch.config import Config
from seedance_watch.core.jobs import RESUME, Job, Stage, State
from seedance_watch.core.scheduling import TaskTimeEstimator, TokenBucket
from seedance_watch.core.stability import InboxEvent
from seedance_watch.files.drop import event_files
from seedance_watch.files.inbox import Inbox
from seedance_watch.files.storage import Storage
from seedance_watch.ledger import host_name
from seedance_watch.ledger.base import JobStore, RetryRequests
from seedance_watch.ledger.daemonfile import DaemonStatusFile
from seedance_watch.pipeline.budget import BudgetGate
from seedance_watch.pipeline.checks import KeyWatch, preflight
from seedance_watch.pipeline.dispatch import Dispatcher
from seedance_watch.pipeline.download import DownloadStage
from seedance_watch.pipeline.endings import Endings
from seedance_watch.pipeline.finish import FinishStage
from seedance_watch.pipeline.intake import Intake
from seedance_watch.pipeline.lease import HostSession
from seedance_watch.pipeline.leftovers import remove_leftovers
from seedance_watch.pipeline.once import OncePolicy, RunPolicy, RunSummary
from seedance_watch.pipeline.outcomes import Outcomes
from seedance_watch.pipeline.pauses import Pauses
from seedance_watch.pipeline.placement import Placement
from seedance_watch.pipeline.poll import PollStage
from seedance_watch.pipeline.ports import Announcer, HookRunner, NullObserver, Observer
from seedance_watch.pipeline.providers import Providers
from seedance_watch.pipeline.stage import (
    JobStage,
    Outcome,
    Retry,
    StageDeps,
)
from seedance_watch.pipeline.submit import SubmitStage
from seedance_watch.pipeline.tasks import StageCrashed, Supervisor
from seedance_watch.pipeline.upload import UploadStage
from seedance_watch.pipeline.view import EngineView
from seedance_watch.providers.download import VideoDownloader

__all__ = ["Engine", "RunSummary", "StageCrashed"]

log = structlog.get_logger(__name__)

#: Workers per pooled stage (polls: scaled with ``gateway.max_in_flight``).
POOL_SIZES = {Stage.UPLOAD: 4, Stage.DOWNLOAD: 4, Stage.FINISH: 1}


class Engine:
    """Drives every job from the inbox to done/ or failed/."""

    def __init__(
        self,
        config: Config,
        *,
        store: JobStore,
        storage: Storage,
        providers: Providers,
        downloader: VideoDownloader,
        inbox: Inbox,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        key_source: str = "",
        hooks: HookRunner | None = None,
        notes: Announcer | None = None,
        daemon_record: Callable[[Mapping[str, Any]], None] | None = None,
        retries: RetryRequests | None = None,
    ) -> None:
        self.config, self.store, self.inbox, self.clock = config, store, inbox, clock
        self.observer: Observer = observer or NullObserver()
        self.summary = RunSummary()
        self.tasks = Supervisor(on_fatal=lambda: self.dispatch.stop())
        gw = config.gateway
        out = self.outcomes = Outcomes(
            config,
            store=store,
            clock=clock,
            observer=self.observer,
            tasks=self.tasks,
            summary=self.summary,
            rng=rng or random.Random(),
        )
        self.apply, self.put = out.apply, out.put
        self.pauses = Pauses(
            observer=self.observer,
            status=DaemonStatusFile(config.paths.state, key_source=key_source, write=daemon_record),
            clock=clock,
            key_source=key_source,
            on_credentials_accepted=lambda: self.dispatch.wake(),
            notes=notes,
        )
        self.budget = BudgetGate(
            config.budget,
            clock=clock,
            observer=self.observer,
            status=self.pauses.status,
            notes=notes,
        )
        self.endings = Endings(
            config.paths,
            hooks=hooks,
            notes=notes,
            get=store.get,
            put=out.put_after_hook,
            spawn=lambda coro: self.tasks.spawn(coro, "hook", side=True),
        )
        self.placement = Placement(
            store=store,
            put=out.put,
            paths=config.paths,
            on_finished=out.finished,
            download_again=lambda job_id: self.dispatch.route_id(job_id),
            bucket=storage if config.storage.delete_after else None,
            hook_due=self.endings.hook_due,
            prices=self.budget.prices,
        )
        self.deps = StageDeps(
            config=config,
            providers=providers,
            downloader=downloader,
            storage=storage,
            observer=self.observer,
            pauses=self.pauses,
            bucket=TokenBucket(gw.requests_per_minute, burst=out.burst),
            estimator=TaskTimeEstimator(),
            clock=clock,
            rng=out.rng,
            put=out.put,
            intent=out.intent,
            critical=self.tasks.critical,
            log_retry=out.log_retry,
            prices=self.budget.prices,
        )
        self.dispatch = Dispatcher(
            store=store,
            clock=clock,
            credentials=self.pauses.credentials,
            database=self.pauses.database,
            bucket=self.deps.bucket,
            max_in_flight=gw.max_in_flight,
            step=self.step,
            gate=out.budget_wait,
            spawn_side=lambda coro: self.tasks.spawn(coro, "submit", side=True),
        )
        self.key_watch = KeyWatch(self.deps, self.pauses, clock)
        self.intake = Intake(config, store, self.placement, clock, retries)
        self.intake.retried = out.retried
        self.intake.attach(inbox)
        self.session = HostSession(
            store,
            host=host_name(config),
            pauses=self.pauses,
            dispatch=self.dispatch,
            intake=self.intake,
            tasks=self.tasks,
            paused=lambda message: out.policy.paused("database", message),
            resume=self._resume,
        )
        self.poller = PollStage(self.deps)
        self.stages: dict[Stage, JobStage] = {
            Stage.UPLOAD: UploadStage(self.deps),
            Stage.SUBMIT: SubmitStage(self.deps),
            Stage.POLL: self.poller,
            Stage.DOWNLOAD: DownloadStage(self.deps, self.placement),
            Stage.FINISH: FinishStage(self.placement),
        }
        out.connect(
            dispatch=self.dispatch,
            budget=self.budget,
            pauses=self.pauses,
            placement=self.placement,
            endings=self.endings,
            intake=self.intake,
            poller=self.poller,
            key_watch=self.key_watch,
            bucket=self.deps.bucket,
            forget_estimate=self.deps.estimator.forget,
        )

    @property
    def policy(self) -> RunPolicy:
        """How this run ends (``run`` or ``run --once``): the outcomes apply it."""
        return self.outcomes.policy

    def view(self) -> EngineView:
        """What the status page and ``/healthz`` read (safe from another thread)."""
        return EngineView(
            store=self.store,
            estimator=self.deps.estimator,
            budget=self.budget,
            pauses=self.pauses,
            dispatch=self.dispatch,
            poke=self.poke,
            fatal=lambda: None if self.fatal is None else self.fatal.message,
            ready=self.inbox.watching.is_set,
        )

    # --- lifecycle ------------------------------------------------------------------------------

    async def recover(self) -> None:
        """Take up every unfinished job of the store: each re-enters its stage
        (docs/design.md, "Recovery").  On a shared store, the lease is kept from here
        on, and tasks ending on any host are listened for."""
        self.dispatch.start()
        self.session.start()
        self.deps.free_key_check = await preflight(self.deps, self.pauses, self.policy)
        active = self.store.active()
        await remove_leftovers(self.config.paths, {job.job_id for job in active})
        self.budget.load(self.store.jobs().values())
        if hooks_due := self.endings.resume(self.store.snapshot()):
            log.info("hook.resumed", jobs=hooks_due)
        # Every job's webhook token, finished ones too: a late callback answers 204 after
        # a restart as it did before (one dict update, no I/O: cheap over 100,000s).
        self.dispatch.know_tokens(self.store.jobs().values())
        self._resume(active, "job.recovered")

    def _resume(self, jobs: list[Job], event: str) -> None:
        """Each job re-enters its stage as after a restart: this host's unfinished jobs
        at start (``job.recovered``), a dead host's (``job.adopted``; a submit whose
        outcome was never recorded fails as submit_ambiguous)."""
        for job in jobs:
            self.placement.reserve(job)
        self.dispatch.know_tokens(jobs)
        for job in jobs:
            self.intake.claim(job)
            log.info(event, job_id=job.job_id, state=job.state.value)
            self.dispatch.track(job)
            self.dispatch.route(job)
        self.dispatch.wake()

    def start_workers(self) -> None:
        """Start the timer loop, the submitter, intake and the stage pools."""
        self.tasks.spawn(self.dispatch.timer_loop(), "timers")
        self.tasks.spawn(self.dispatch.submitter(), "submitter")
        if self.deps.free_key_check:
            self.tasks.spawn(self.key_watch.run(), "key-watch")
        for i in range(2):
            worker = self.intake.worker(
                self.dispatch.route, self.outcomes.fail, self.outcomes.guard, self.tasks.idle.set
            )
            self.tasks.spawn(worker, f"intake-{i}")
        sizes = {**POOL_SIZES, Stage.POLL: min(64, max(4, self.config.gateway.max_in_flight))}
        for stage, size in sizes.items():
            for i in range(size):
                self.tasks.spawn(self.dispatch.worker(stage), f"{stage}-{i}")

    async def run(self, stop: asyncio.Event) -> None:
        """The daemon: watch the inbox until ``stop`` is set (or a fatal error), then return."""
        await self.recover()
        self.start_workers()
        watcher = asyncio.create_task(self.inbox.run(self.handle_event), name="inbox")
        waits = {
            watcher,
            asyncio.create_task(stop.wait()),
            asyncio.create_task(self.tasks.fatal_event.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if watcher.done() and not watcher.cancelled() and watcher.exception():
                raise watcher.exception()  # type: ignore[misc]
            self.tasks.raise_if_fatal()
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def run_once(self) -> RunSummary:
        """``run --once``: everything in the inbox and the store, then return."""
        self.outcomes.policy = OncePolicy(self.summary, self._stop_for)
        await self.recover()
        self.start_workers()
        for event in await self.inbox.scan_once():
            await self.handle_event(event)
        while not self.dispatch.stopping and (self.intake.pending or self._waiting()):
            self.tasks.idle.clear()
            await self.tasks.idle.wait()
        self.tasks.raise_if_fatal()
        await self.endings.drain(self.config.hooks.timeout)
        return self.summary

    def _waiting(self) -> bool:
        """An unfinished job this run still waits for (not one the budget set aside)."""
        return any(not self.policy.parked(job.job_id) for job in self.store.active())

    async def shutdown(self, grace: float = 20.0) -> None:
        """Stop taking work, let running uploads/submits/downloads finish (bounded), stop.

        A host whose session is over (:class:`~seedance_watch.errors.LeaseLost`) lets
        nothing finish: its jobs are another host's now.
        """
        self.dispatch.stop()
        if isinstance(self.fatal, E.LeaseLost):
            grace = 0.0
        await self.tasks.drain(grace)

    @property
    def fatal(self) -> E.StateError | None:
        """Why the engine stopped on its own (a failed fsync, a crashed stage), if it did."""
        return self.tasks.fatal

    def _stop_for(self, reason: str) -> None:
        """End a ``--once`` run (a pause cannot resolve itself there)."""
        self.dispatch.stop()
        self.tasks.idle.set()
        log.error("engine.stopping", reason=reason)

    # --- intake and webhooks --------------------------------------------------------------------

    def poke(self, token: str) -> bool:
        """A webhook callback (any thread): see :meth:`Dispatcher.poke`."""
        return self.dispatch.poke(token)

    async def handle_event(self, event: InboxEvent) -> None:
        """Queue one inbox event for intake (quick: the inbox loop awaits this)."""
        if not self.dispatch.stopping:
            self.intake.submit(event, event_files(event))

    # --- applying outcomes ----------------------------------------------------------------------

    async def step(self, stage: Stage, job_id: str) -> None:
        """Run one stage on one job and apply its outcome."""
        try:
            job = self.store.get(job_id)
            if job is None or job.terminal or RESUME[job.state] is not stage:
                return  # stale: the job moved on meanwhile
            if not self.session.valid():  # frozen past its lease, maybe: touch nothing yet
                self.session.when_renewed(lambda: self.dispatch.route(job))
                return
            if stage is Stage.POLL:
                if self.dispatch.stopping:
                    return
                self.dispatch.last_poll[job_id] = self.clock()
            try:
                outcome = await self.stages[stage].run(job)
            except OSError as exc:  # a file step (disk full, a folder gone): retried
                outcome = Retry(f"file error: {exc}")
            except E.JobFenced as exc:
                self.session.fenced(job_id, exc)
                return
            except E.StoreUnavailable as exc:  # the step again, from what is durable
                self.session.database_down(exc.message)
                self.session.when_renewed(lambda: self._route_again(job_id))
                return
        finally:
            if stage is Stage.SUBMIT:
                self.budget.release(job_id)  # its intent is counted, or there was none
                current = self.store.get(job_id)
                if current is None or current.state not in (State.SUBMITTING, State.SUBMITTED):
                    # No intent written (a stale job, the lease or the database away, a
                    # write fenced): the slot the submitter took is free again.
                    self.dispatch.free(job_id)
        await self._apply_or_defer(self.store.get(job_id) or job, stage, outcome)

    async def _apply_or_defer(self, job: Job, stage: Stage, outcome: Outcome) -> None:
        """:meth:`apply`; a write the store could not take is done again once it
        answers: the same outcome when nothing of it was written (a task reference
        must not be lost), else the job's stage from what was (recovery's rule)."""
        try:
            await self.apply(job, stage, outcome)
        except E.JobFenced as exc:
            self.session.fenced(job.job_id, exc)
        except E.StoreUnavailable as exc:
            self.session.database_down(exc.message)
            job_id = job.job_id
            if self.store.get(job_id) is job:
                self.session.when_renewed(
                    lambda: self.tasks.spawn(
                        self._apply_again(job_id, stage, outcome), "apply", side=True
                    )
                )
            else:
                self.session.when_renewed(lambda: self._route_again(job_id))

    async def _apply_again(self, job_id: str, stage: Stage, outcome: Outcome) -> None:
        job = self.store.get(job_id)
        if job is not None and not job.terminal:
            await self._apply_or_defer(job, stage, outcome)

    def _route_again(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is not None and not job.terminal:
            self.dispatch.route(job)
