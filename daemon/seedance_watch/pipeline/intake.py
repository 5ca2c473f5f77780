"""The intake stage: inbox events become jobs (or failures), two at a time.

The rules of a drop (reading, hashing, checking, the job it makes) are
:mod:`seedance_watch.files.drop`'s; this stage runs them in a worker thread, holds
the files of each event until its job ends, claims the drop in the store before
anything is done with it (hosts sharing an inbox: one job per drop), dedupes,
refuses a drop that alone would go over the daily cap, and records the job.

A drop another host claimed is left alone: its files stay held here (not emitted
again) for ``watch.rescan_seconds``, then are released, so that a drop still there
then is looked at again (docs/design.md, "Claims").
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog

from seedance_watch import errors as E
from seedance_watch.config import Config
from seedance_watch.core.budget import BudgetPrices
from seedance_watch.core.jobs import Job, State, job_files
from seedance_watch.core.stability import AmbiguousDrop, InboxEvent, PairReady
from seedance_watch.files.drop import (
    bare_job,
    event_error,
    examine_drop,
    inputs_in_place,
    job_groups,
    over_budget,
)
from seedance_watch.ledger.retries import RetryBook, RetryFile

if TYPE_CHECKING:
    from seedance_watch.files.inbox import Inbox
    from seedance_watch.ledger.base import JobStore, RetryRequests
    from seedance_watch.pipeline.placement import Placement

log = structlog.get_logger(__name__)

__all__ = ["PARKED", "Intake"]

#: The holder of files another host's job claimed (held here until looked at again).
PARKED = "-"


class Intake:
    """The intake stage: inbox events become jobs (or failures), two at a time.

    The files of an event are claimed from the watcher until their job ends, so a
    drop is never taken twice.  An event whose files fail to read before a job was
    recorded is released (a rescan finds it again); once a job is recorded, a file
    error is retried from its ledger plan like any finish step.
    """

    def __init__(
        self,
        config: Config,
        store: JobStore,
        placement: Placement,
        clock: Callable[[], float],
        retries: RetryRequests | None = None,
    ) -> None:
        self.config, self.store, self.placement, self.clock = config, store, placement, clock
        self.prices = BudgetPrices.from_config(config.budget)
        self.retries: RetryRequests = retries or RetryBook(config.paths.state)
        #: Told ``(failed job, new job id)`` once a retried drop's new job is recorded.
        self.retried: Callable[[Job, str], None] = lambda _failed, _new: None
        #: Before each drop: wait until the store may be written (its database answers,
        #: this host's lease runs).
        self.ready: Callable[[], Awaitable[None]] = _at_once
        #: A store error while taking a drop: ``(error, finish)``,
        #: ``finish`` to be run again once the store is back (``None`` when the job
        #: was not recorded: its files are released, a rescan finds them again).
        self.store_down: Callable[
            [E.StoreUnavailable, Callable[[], Coroutine[Any, Any, None]] | None], None
        ] = _reraise
        #: A write of the drop's job was fenced (this host's session is over).
        self.fenced: Callable[[E.JobFenced], None] = _reraise_fenced
        self.inbox: Inbox | None = None
        self.pending = 0
        self._queue: asyncio.Queue[tuple[InboxEvent, list[str]]] = asyncio.Queue()
        self._claims: dict[str, str] = {}
        # Why a claimed drop fails, until its failure is recorded (a store that went
        # away in between must not lose it: the drop would go up instead).
        self._errors: dict[str, E.JobError] = {}

    def attach(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def submit(self, event: InboxEvent, files: list[str]) -> None:
        """Queue an event unless one of its files already belongs to a job."""
        if any(path in self._claims for path in files):
            return
        self._hold(files, "?")
        self.pending += 1
        self._queue.put_nowait((event, files))

    def claim(self, job: Job) -> None:
        self._hold(job_files(job), job.job_id)

    def release(self, files: Iterable[str]) -> None:
        files = list(files)
        for path in files:
            self._claims.pop(path, None)
        if self.inbox is not None:
            self.inbox.release(files)

    def _hold(self, files: list[str], job_id: str) -> None:
        if self.inbox is not None:
            self.inbox.claim(files)
        for path in files:
            self._claims[path] = job_id

    async def worker(
        self,
        route: Callable[[Job], None],
        fail: Callable[[Job, E.JobError], Awaitable[None]],
        guard: Callable[[Job, Coroutine[Any, Any, None]], Awaitable[None]],
        idle: Callable[[], None] = lambda: None,
    ) -> None:
        while True:
            event, files = await self._queue.get()
            try:
                await self.ready()
                await self._take(event, files, route, fail, guard)
            except OSError:
                log.exception("engine.intake_error", files=files)
                if not self._recorded(files):
                    self.release(files)
            except E.StoreUnavailable as exc:
                recorded = self._recorded(files)
                if recorded is None:
                    self.release(files)
                    self.store_down(exc, None)
                elif recorded.state is State.NEW:  # nothing but the job written yet
                    error = self._errors.pop(recorded.job_id, None)
                    self.store_down(
                        exc, functools.partial(self._start, recorded, error, route, fail)
                    )
                else:  # its failure or its copy was written: finished from that, as at
                    # recovery (starting it again would fail or place it twice)
                    self._errors.pop(recorded.job_id, None)
                    self.store_down(exc, functools.partial(self._resume, recorded.job_id, route))
            except E.JobFenced as exc:
                self.release(files)
                self.fenced(exc)
            finally:
                self.pending -= 1
                idle()

    async def _resume(self, job_id: str, route: Callable[[Job], None]) -> None:
        job = self.store.get(job_id)
        if job is not None and not job.terminal:
            route(job)

    def _recorded(self, files: list[str]) -> Job | None:
        """The job recorded for these files, if one was."""
        for job_id in {self._claims.get(path, "?") for path in files}:
            job = self.store.get(job_id)
            if job is not None:
                return job
        return None

    async def _take(
        self,
        event: InboxEvent,
        files: list[str],
        route: Callable[[Job], None],
        fail: Callable[[Job, E.JobError], Awaitable[None]],
        guard: Callable[[Job, Coroutine[Any, Any, None]], Awaitable[None]],
    ) -> None:
        if isinstance(event, AmbiguousDrop) and len(files) > 2:
            # A job holds two inputs: fail the group as several jobs, one after the
            # other, so each one's names in failed/ are planned after the last moved.
            for group in job_groups(files):
                await self._take(
                    AmbiguousDrop(tuple(group), event.message), group, route, fail, guard
                )
            return
        now, cfg = self.clock(), self.config
        if isinstance(event, PairReady):
            drop = await asyncio.to_thread(
                examine_drop,
                cfg.paths.inbox,
                event.image,
                event.sidecar,
                last_frame=event.last_frame,
                references=event.references,
                defaults=cfg.defaults,
                models=cfg.gateway.models,
                now=now,
                strict_model=cfg.gateway.strict_model,
            )
            job, error = drop.job, drop.error
        else:
            job, error = bare_job(event, now, cfg.paths.inbox), event_error(event)
        if not job.inputs:
            # Every file left before it was examined: the person took the drop back,
            # or another host of a shared store ended it.  Nothing is left to fail or
            # to report.
            log.info("inbox.drop_vanished", files=files)
            self.release(files)
            return
        for path in files:
            self._claims[path] = job.job_id
        if self.store.get(job.job_id) is not None:
            log.info("job.already_known", job_id=job.job_id, source=job.source)
            return
        origin = self._retry_origin(job)
        if origin is not None:
            job = replace(job, retry_of=origin.job_id)
        if not await self._claim(job, files):
            return
        log.info("job.created", job_id=job.job_id, source=job.source, retry_of=job.retry_of)
        if error is not None:
            self._errors[job.job_id] = error
        try:
            await self._start(job, error, route, fail)
            self._errors.pop(job.job_id, None)
        finally:
            if origin is not None and self.store.get(job.job_id) is not None:
                self.retried(origin, job.job_id)

    async def _start(
        self,
        job: Job,
        error: E.JobError | None,
        route: Callable[[Job], None],
        fail: Callable[[Job, E.JobError], Awaitable[None]],
    ) -> None:
        """Record a new job: failed at once, copied from an identical one, or on its way."""
        if error is not None:
            await fail(job, error)
            return
        if self.config.dedupe and job.content_key is not None:
            copied = await self.placement.dedupe(job)
            if copied:
                return
        over = over_budget(job, self.prices)
        if over is not None:
            await fail(job, over)
            return
        if self.store.get(job.job_id) is not job:  # a shared store recorded it with its claim
            self.store.put(job)
        route(job)

    async def _claim(self, job: Job, files: list[str]) -> bool:
        """Claim the drop for ``job`` before anything is done with its files; False
        (its files parked) when another host's job holds them.

        Files claimed by a job that ended went back into the inbox (a retry, a copy
        keeping the mtime): once they are seen there still, as examined, they are this
        drop's.  (Checked after the store said the other job ended: it moves its
        files before it ends, so a file that it was moving is gone by then.)
        """
        taken = self.store.claim(job)
        if taken is not None and taken.finished and taken.job_id != job.job_id:
            inbox = self.config.paths.inbox
            if await asyncio.to_thread(inputs_in_place, inbox, job.inputs):
                taken = self.store.claim(job, replace_finished=True)
        if taken is None:
            return True
        log.info(
            "job.claimed_elsewhere",
            job_id=job.job_id,
            source=job.source,
            claimed_by=taken.job_id,
            host=taken.host,
        )
        self._park(files)
        return False

    def _park(self, files: list[str]) -> None:
        """Hold files another host's job claimed until they are worth a look again."""
        for path in files:
            self._claims[path] = PARKED
        delay = self.config.watch.rescan_seconds
        asyncio.get_running_loop().call_later(delay, self._unpark, files)

    def _unpark(self, files: list[str]) -> None:
        self.release([path for path in files if self._claims.get(path) == PARKED])

    def _retry_origin(self, job: Job) -> Job | None:
        """The failed job whose inputs ``seedance-watch retry`` sent back as this drop."""
        files = [RetryFile(item.path, item.size, item.sha256) for item in job.inputs]

        def failed(job_id: str) -> bool:
            earlier = self.store.find(job_id)
            return earlier is not None and earlier.state is State.FAILED

        origin_id = self.retries.match(files, usable=failed)
        return None if origin_id is None else self.store.find(origin_id)


async def _at_once() -> None:
    return None


def _reraise(exc: E.StoreUnavailable, _finish: object) -> None:
    raise exc


def _reraise_fenced(exc: E.JobFenced) -> None:
    raise exc
