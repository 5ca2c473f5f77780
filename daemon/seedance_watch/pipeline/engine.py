"""The asyncio orchestrator that drives jobs through their stages.

The engine owns the clock, the queues and the I/O; the decisions live in the pure
parts (``jobs.apply`` for the state machine, ``scheduling`` for timers, limits and
backoff).  Every state change is written to the ledger *before* the external
action that depends on it, so a crash at any point is recovered by
:meth:`Engine.recover`.

Stages and their bounds::

    inbox ─▶ intake ─▶ upload pool ─▶ ready queue ─▶ submitter ─▶ timer heap ─▶ poll pool
                                      (uploaded)     (slots, token         (one entry     │
                                                     bucket, breaker)      per task)      ▼
                                                                          download pool ─▶ done/

A job has at most one pending timer; when it fires, the job's ledger state says
which stage it re-enters.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import stamina
import structlog

from seedance_watch import errors as E
from seedance_watch.commands.status import DaemonStatusFile
from seedance_watch.config import Config
from seedance_watch.core.jobs import (
    Job,
    State,
    SubmitIntent,
    SubmitRefused,
    Submitted,
    TaskSucceeded,
    Uploaded,
    apply,
    job_files,
)
from seedance_watch.core.scheduling import (
    STAGE_POLICIES,
    Backoff,
    RetryHook,
    TaskTimeEstimator,
    TimerHeap,
    TokenBucket,
    task_kind,
)
from seedance_watch.files.fsutil import make_dirs, remove_stale_temps
from seedance_watch.files.inbox import AmbiguousPair, Inbox, InboxEvent, PairReady
from seedance_watch.files.outbox import cleanup_staging
from seedance_watch.files.storage import Storage
from seedance_watch.ledger.jsonl import Ledger
from seedance_watch.pipeline.intake import (
    bare_job,
    event_error,
    event_files,
    examine_drop,
    job_groups,
)
from seedance_watch.pipeline.pauses import Pauses
from seedance_watch.pipeline.placement import Placement
from seedance_watch.providers.pixazo import Gateway
from seedance_watch.service.metrics import Metrics

__all__ = ["Engine", "RunSummary"]

log = structlog.get_logger(__name__)

CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".gif": "image/gif",
}

#: With ``--once``, a job whose upload or (never-sent) submit keeps failing this many
#: times ends the run (exit 1, nothing lost) instead of waiting for the store or the
#: gateway forever, as the daemon does.
ONCE_ATTEMPTS = {"upload": 3, "submit": 8}
#: A poll answered 404 for a task we submitted this many times fails the job.
TASK_NOT_FOUND_LIMIT = 3
#: Broken downloads are tried this many times (the URL lasts 24 hours); see scheduling.
DOWNLOAD_ATTEMPTS = STAGE_POLICIES["download"].attempts or 8


@dataclass
class RunSummary:
    """What a run did, for ``run --once`` exit codes and the demo's output."""

    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    credentials_refused: str | None = None
    storage_unavailable: str | None = None
    unfinished: str | None = None


class Engine:
    """Drives every job from the inbox to done/ or failed/."""

    def __init__(
        self,
        config: Config,
        *,
        ledger: Ledger,
        storage: Storage,
        gateway: Gateway,
        inbox: Inbox,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        key_source: str = "",
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.storage = storage
        self.gateway = gateway
        self.inbox = inbox
        self.metrics = metrics or Metrics(job_counts=ledger.counts)
        self.clock = clock
        self.rng = rng or random.Random()
        self.key_source = key_source
        paths = config.paths
        self.roots = {"inbox": paths.inbox, "done": paths.done, "failed": paths.failed}
        gw = config.gateway
        self.bucket = TokenBucket(gw.requests_per_minute, burst=min(10.0, gw.max_in_flight))
        self.backoff = Backoff(initial=1.0, cap=60.0)
        self.estimator = TaskTimeEstimator()
        self.summary = RunSummary()

        self._timers = TimerHeap()
        self._ready: deque[str] = deque()
        self._uploads: asyncio.Queue[str] = asyncio.Queue()
        self._polls: asyncio.Queue[str] = asyncio.Queue()
        self._downloads: asyncio.Queue[str] = asyncio.Queue()
        self._finishes: asyncio.Queue[str] = asyncio.Queue()
        self._intakes: asyncio.Queue[tuple[InboxEvent, list[str]]] = asyncio.Queue()
        self._intake_pending = 0
        self._in_flight: set[str] = set()
        self._attempts: dict[str, int] = {}
        self._claims: dict[str, str] = {}
        self._submit_wake = asyncio.Event()  # the submitter's: a slot or a job is ready
        self._timer_wake = asyncio.Event()  # the timer loop's: a new due time
        self._idle = asyncio.Event()
        self._busy = 0
        self._stopping = False
        self._fatal: E.StateError | None = None
        self._fatal_event = asyncio.Event()
        self._once = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._side_tasks: set[asyncio.Task[Any]] = set()
        # Where a finished job's files go: its output, or its failure report and inputs.
        self.placement = Placement(
            ledger=ledger,
            paths=paths,
            clock=clock,
            on_finished=self._finished,
            download_again=self._downloads.put,
        )
        # Bad credentials and an unusable bucket pause their stages; nothing fails.
        self.pauses = Pauses(
            metrics=self.metrics,
            status=DaemonStatusFile(paths.state, key_source=key_source),
            clock=clock,
            key_source=key_source,
            on_credentials_accepted=self._submit_wake.set,
        )
        self.credentials = self.pauses.credentials
        self.store_breaker = self.pauses.storage
        self.daemon_status = self.pauses.status

    # --- lifecycle ------------------------------------------------------------------------------

    async def recover(self) -> None:
        """Take up every unfinished job of the ledger, as SPEC §7 says."""
        alive = {job.job_id for job in self.ledger.active()}
        removed = await asyncio.to_thread(cleanup_staging, self.config.paths.outbox, alive)
        for root in (self.roots["done"], self.roots["failed"]):
            removed += await asyncio.to_thread(remove_stale_temps, root)
        if removed:
            log.info("engine.leftovers_removed", files=removed)
        for job in self.ledger.active():
            self._claim(job)
            bound = log.bind(job_id=job.job_id, state=job.state.value)
            bound.info("job.recovered")
            match job.state:
                case State.NEW:
                    self._uploads.put_nowait(job.job_id)
                case State.UPLOADED:
                    self._ready.append(job.job_id)
                case State.SUBMITTING:
                    await self.placement.fail(
                        job,
                        E.SubmitAmbiguous(
                            "The daemon stopped while this job's submit was in flight, so "
                            "whether the gateway created (and bills) a task is unknown."
                        ),
                    )
                case State.SUBMITTED:
                    self._in_flight.add(job.job_id)
                    self._schedule(job.job_id, self.clock())
                case State.SUCCEEDED:
                    self._downloads.put_nowait(job.job_id)
                case State.PLACING | State.FAILING:
                    self._finishes.put_nowait(job.job_id)
        self._submit_wake.set()

    def start_workers(self) -> None:
        """Start the stage workers (idempotent per engine)."""
        spawn = self._spawn_worker
        spawn(self._dispatch_timers(), "timers")
        spawn(self._submitter(), "submitter")
        for i in range(2):
            spawn(self._intake_worker(), f"intake-{i}")
        for i in range(4):
            spawn(self._worker(self._uploads, self._upload), f"upload-{i}")
        for i in range(min(64, max(4, self.config.gateway.max_in_flight))):
            spawn(self._worker(self._polls, self._poll), f"poll-{i}")
        for i in range(4):
            spawn(self._worker(self._downloads, self._download), f"download-{i}")
        spawn(self._worker(self._finishes, self._finish), "finish")

    async def run(self, stop: asyncio.Event) -> None:
        """The daemon: watch the inbox until ``stop`` is set, then drain."""
        await self.recover()
        self.start_workers()
        watcher = asyncio.create_task(self.inbox.run(self.handle_event), name="inbox")
        stopped = asyncio.create_task(stop.wait())
        fatal = asyncio.create_task(self._fatal_event.wait())
        try:
            await asyncio.wait({watcher, stopped, fatal}, return_when=asyncio.FIRST_COMPLETED)
            if watcher.done() and not watcher.cancelled() and watcher.exception():
                raise watcher.exception()  # type: ignore[misc]
            self._raise_if_fatal()
        finally:
            for task in (watcher, stopped, fatal):
                task.cancel()
            await asyncio.gather(watcher, stopped, fatal, return_exceptions=True)

    async def run_once(self) -> RunSummary:
        """``run --once``: everything in the inbox and the ledger, then return."""
        self._once = True
        await self.recover()
        self.start_workers()
        for event in await self.inbox.scan_once():
            await self.handle_event(event)
        while not self._stopping and (self._intake_pending or self.ledger.active()):
            self._idle.clear()
            await self._idle.wait()
        self._raise_if_fatal()
        return self.summary

    def _die(self, exc: E.StateError) -> None:
        """The state can no longer be trusted (e.g. an fsync failed): stop everything."""
        if self._fatal is None:
            log.critical("engine.state_error", error=exc.message)
            self._fatal = exc
        self._stopping = True
        self._fatal_event.set()
        self._idle.set()
        self._submit_wake.set()

    def _raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    async def shutdown(self, grace: float = 20.0) -> None:
        """Stop taking work, let running uploads/submits/downloads finish (bounded), stop."""
        self._stopping = True
        self._submit_wake.set()
        deadline = time.monotonic() + grace
        if self._side_tasks:  # submits in flight and object deletions
            await asyncio.wait(set(self._side_tasks), timeout=grace)
        while self._busy and time.monotonic() < deadline:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=deadline - time.monotonic())
        if self._busy:
            log.warning("engine.drain_timeout", busy=self._busy, grace=grace)
        for task in [*self._tasks, *self._side_tasks]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._side_tasks, return_exceptions=True)

    def _spawn_worker(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _spawn_side(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
        task.add_done_callback(self._task_done)

    def _stop_for(self, reason: str) -> None:
        """In ``--once`` mode, end the run (a pause cannot resolve itself there)."""
        self._stopping = True
        self._idle.set()
        log.error("engine.stopping", reason=reason)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A worker or side task ended: a state error stops the daemon, a bug is logged."""
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, E.StateError):
            self._die(exc)
        elif exc is not None:
            log.error("engine.task_error", task=task.get_name(), exc_info=exc)

    @contextlib.contextmanager
    def _critical(self) -> Any:
        """Mark a step that shutdown lets finish (an upload, a submit, a download)."""
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            self._idle.set()

    # --- intake ---------------------------------------------------------------------------------

    async def handle_event(self, event: InboxEvent) -> None:
        """Queue one inbox event for intake (quick: the inbox loop awaits this)."""
        if self._stopping:
            return
        files = event_files(event)
        if any(path in self._claims for path in files):
            return
        self.inbox.claim(files)
        for path in files:
            self._claims[path] = "?"
        self._intake_pending += 1
        self._intakes.put_nowait((event, files))

    async def _intake_worker(self) -> None:
        while True:
            event, files = await self._intakes.get()
            try:
                await self._intake(event, files)
            except E.StateError as exc:
                self._die(exc)
            except Exception:
                log.exception("engine.intake_error", files=files)
                self._release(files)
            finally:
                self._intake_pending -= 1
                self._idle.set()

    async def _intake(self, event: InboxEvent, files: list[str]) -> None:
        if isinstance(event, AmbiguousPair) and len(files) > 2:
            # A job holds two inputs: fail the group as several jobs, one after the
            # other, so each one's names in failed/ are planned after the last moved.
            for group in job_groups(files):
                await self._intake(AmbiguousPair(tuple(group), event.message), group)
            return
        now = self.clock()
        cfg = self.config
        if isinstance(event, PairReady):
            drop = await asyncio.to_thread(
                examine_drop,
                self.roots["inbox"],
                event.image,
                event.sidecar,
                defaults=cfg.defaults,
                default_model=cfg.gateway.model,
                now=now,
                strict_model=cfg.gateway.strict_model,
            )
            job, error = drop.job, drop.error
        else:
            job = bare_job(event, now)
            error = event_error(event)
        for path in files:
            self._claims[path] = job.job_id
        if self.ledger.get(job.job_id) is not None:
            log.info("job.already_known", job_id=job.job_id, source=job.source)
            return
        log.info("job.created", job_id=job.job_id, source=job.source)
        if error is not None:
            await self.placement.fail(job, error)
            return
        if cfg.dedupe and job.content_key is not None and await self.placement.dedupe(job):
            return
        self.ledger.put(job)
        await self._uploads.put(job.job_id)

    # --- upload ---------------------------------------------------------------------------------

    async def _upload(self, job_id: str) -> None:
        job = self._job(job_id)
        if job is None or job.state is not State.NEW:
            return
        # While the bucket is unusable one upload at a time probes it; the rest wait.
        wait = self.store_breaker.acquire(self.clock())
        if wait > 0:
            self._schedule(job_id, self.clock() + wait)
            return
        path = self.roots["inbox"] / job.source
        key = self.storage.key_for(job.job_id, PurePosixPath(job.source).name)
        content_type = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
        started = time.monotonic()
        policy = STAGE_POLICIES["upload"]
        try:
            # Transient S3 errors: a few quick retries in this worker (stamina), then
            # back on the timer heap -- an outage keeps the input waiting, never fails it.
            async for attempt in stamina.retry_context(
                on=self._retry_hook(job_id, "upload", E.StorageTransient),
                attempts=policy.attempts,
                timeout=None,
            ):
                with attempt, self._critical():
                    size = await asyncio.to_thread(
                        self.storage.upload, path, key, content_type=content_type
                    )
        except FileNotFoundError:
            await self.placement.fail(
                job, E.InputVanished("The image left the inbox before its upload.")
            )
            return
        except E.StorageUnavailable as exc:
            self._pause_storage(str(exc))
            self._schedule(job_id, self.store_breaker.probe_at)
            return
        except E.StorageTransient as exc:
            self._retry_later(job_id, "upload", exc.retry_after, reason=exc.message)
            return
        except E.JobError as exc:
            await self.placement.fail(job, exc)
            return
        self.pauses.storage_ok()
        self.metrics.upload_bytes.inc(size)
        self.metrics.upload_seconds.inc(time.monotonic() - started)
        self._attempts.pop(job_id, None)
        self._put(job, Uploaded(uploads=(("image", key),)))
        log.info("job.uploaded", job_id=job_id, s3_key=key, bytes=size)
        self._ready.append(job_id)
        self._submit_wake.set()

    def _pause_storage(self, reason: str) -> None:
        """The bucket is missing or refuses us: pause uploads; ``--once`` ends there."""
        self.pauses.pause_storage(reason)
        if self._once:
            self.summary.storage_unavailable = reason
            self._stop_for("storage_unavailable")

    # --- submit ---------------------------------------------------------------------------------

    async def _submitter(self) -> None:
        """Send submits while a slot, a token and the breaker allow (uploads run ahead)."""
        max_in_flight = self.config.gateway.max_in_flight
        while True:
            while self._stopping or not self._ready or len(self._in_flight) >= max_in_flight:
                self._submit_wake.clear()
                await self._submit_wake.wait()
            wait = self.credentials.wait(self.clock())
            if wait > 0:
                await self._sleep_or_wake(self._submit_wake, wait)
                continue
            job_id = self._ready.popleft()
            job = self._job(job_id)
            if job is None or job.state is not State.UPLOADED:
                continue
            self._in_flight.add(job_id)
            delay = self.bucket.reserve(self.clock())
            if delay > 0:
                await asyncio.sleep(delay)
            if self.credentials.is_open:
                # This submit is the probe; hold the others until it answers.
                await self._submit(job_id)
            else:
                self._spawn_side(self._submit(job_id))

    @staticmethod
    async def _sleep_or_wake(event: asyncio.Event, seconds: float) -> None:
        event.clear()
        # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that
        # arrives as the event is set, and the loop then outlives shutdown.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()

    async def _submit(self, job_id: str) -> None:
        job = self._job(job_id)
        image_key = None if job is None else job.upload_key("image")
        if job is None or job.state is not State.UPLOADED or image_key is None:
            self._in_flight.discard(job_id)
            return
        with self._critical():
            try:
                url = await asyncio.to_thread(self.storage.url_for, image_key)
            except (E.StorageTransient, E.StorageUnavailable) as exc:
                self._in_flight.discard(job_id)
                self._retry_later(
                    job_id, "presign", getattr(exc, "retry_after", None), reason=exc.message
                )
                return
            model, text = job.model, job.text
            assert model is not None and text is not None
            job = self._put(job, SubmitIntent())
            self.metrics.submit_attempts.inc()
            try:
                task_id = await self.gateway.submit(model=model, text=text, image_url=url)
            except (E.SubmitNotSent, E.RateLimited) as exc:
                # Provably not created: back to UPLOADED and wait (no budget: nothing
                # is billed or lost); a 429 also slows every submit down (adaptive).
                self._put(job, SubmitRefused())
                self._in_flight.discard(job_id)
                if isinstance(exc, E.RateLimited):
                    self.bucket.slow_down()
                self._retry_later(job_id, "submit", exc.retry_after, ready=True, reason=exc.message)
                return
            except E.CredentialsRefused as exc:
                self._put(job, SubmitRefused())
                self._in_flight.discard(job_id)
                self._ready.appendleft(job_id)
                self._pause_credentials(exc)
                # The submitter may be asleep on an empty queue: wake it to wait for the probe.
                self._submit_wake.set()
                return
            except E.JobError as exc:
                self._in_flight.discard(job_id)
                await self.placement.fail(self._job_or(job), exc)
                return
            except Exception as exc:  # the outcome of this submit is unknown
                self._in_flight.discard(job_id)
                log.exception("job.submit_error", job_id=job_id)
                await self.placement.fail(
                    self._job_or(job),
                    E.SubmitAmbiguous(f"The submit ended with an unexpected error: {exc!r}"),
                )
                return
            self._gateway_ok()
            self.bucket.recover(self.config.gateway.requests_per_minute)
            self.metrics.submits.inc()
            job = self._put(job, Submitted(task_id=task_id))
            self._attempts.pop(job_id, None)  # polls count their own retries
            log.info("job.submitted", job_id=job_id, task_id=task_id)
            delay = self.estimator.first_poll_delay(
                task_kind(job.text), self.config.gateway.poll_interval, key=job_id
            )
            self._schedule(job_id, self.clock() + delay)
            self._submit_wake.set()

    def _pause_credentials(self, exc: E.CredentialsRefused) -> None:
        """401/402/403: pause submits and polls; ``--once`` ends there."""
        self.pauses.pause_credentials(exc)
        if self._once:
            self.summary.credentials_refused = exc.message
            self._stop_for("credentials_refused")

    def _gateway_ok(self) -> None:
        self.metrics.gateway_ok()
        self.pauses.credentials_ok()

    # --- poll -----------------------------------------------------------------------------------

    async def _dispatch_timers(self) -> None:
        """One timer heap for every waiting job; due jobs re-enter their stage."""
        while True:
            now = self.clock()
            for job_id in list(self._timers.pop_due(now)):
                self._enter_stage(job_id)
            due = self._timers.next_due()
            if due is None:
                self._timer_wake.clear()
                await self._timer_wake.wait()
            else:
                await self._sleep_or_wake(self._timer_wake, max(0.0, due - self.clock()))

    def _enter_stage(self, job_id: str) -> None:
        job = self._job(job_id)
        if job is None:
            return
        match job.state:
            case State.NEW:
                self._uploads.put_nowait(job_id)
            case State.UPLOADED:
                self._ready.append(job_id)
                self._submit_wake.set()
            case State.SUBMITTED:
                wait = self.credentials.wait(self.clock())
                if wait > 0:
                    self._schedule(job_id, self.clock() + wait)
                else:
                    self._polls.put_nowait(job_id)
            case State.SUCCEEDED:
                self._downloads.put_nowait(job_id)
            case State.PLACING | State.FAILING:
                self._finishes.put_nowait(job_id)
            case _:
                pass

    async def _finish(self, job_id: str) -> None:
        """Retry a placement or a failure whose file steps raised (e.g. disk full)."""
        job = self._job(job_id)
        if job is None:
            return
        if job.state is State.PLACING:
            await self.placement.finish_placing(job)
        elif job.state is State.FAILING:
            await self.placement.finish_failing(job)

    async def _poll(self, job_id: str) -> None:
        job = self._job(job_id)
        if job is None or job.state is not State.SUBMITTED or job.task_id is None:
            return
        if self._stopping:
            return
        # While the key is refused, polls pause too; one of them may be the probe.
        wait = self.credentials.acquire(self.clock())
        if wait > 0:
            self._schedule(job_id, self.clock() + wait)
            return
        cfg = self.config.gateway
        self.metrics.polls.inc()
        not_found = f"{job_id}#404"
        try:
            status = await self.gateway.poll(job.task_id)
        except E.TaskNotFound as exc:
            if self._bump(not_found) >= TASK_NOT_FOUND_LIMIT:
                self._attempts.pop(not_found, None)
                await self._end_task(job, exc)
            else:
                self._retry_later(job_id, "poll", reason=exc.message)
            return
        except E.CredentialsRefused as exc:
            self._pause_credentials(exc)
            self._schedule(job_id, self.credentials.probe_at)
            return
        except E.TransientError as exc:
            # Polls are idempotent: retried until the task's own deadline, no sooner.
            elapsed = self.clock() - (job.submitted_at or self.clock())
            if elapsed > cfg.task_timeout:
                await self._end_task(
                    job,
                    E.TaskTimeout(
                        f"Task {job.task_id} did not finish within {cfg.task_timeout:g} s; "
                        f"the last poll failed: {exc.message}",
                        task_id=job.task_id,
                    ),
                )
            else:
                self._retry_later(job_id, "poll", exc.retry_after, reason=exc.message)
            return
        except E.JobError as exc:  # 400: the gateway refuses to answer for this task
            exc.task_id = exc.task_id or job.task_id
            await self._end_task(job, exc)
            return
        self._gateway_ok()
        self._attempts.pop(job_id, None)
        self._attempts.pop(not_found, None)
        now = self.clock()
        bound = log.bind(job_id=job_id, task_id=job.task_id)
        bound.debug("task.polled", status=status.raw_status)
        elapsed = now - (job.submitted_at or now)
        done = {"pending": False, "succeeded": True}.get(status.state)
        self.estimator.first_polled(job_id, done)
        if status.state == "pending":
            if elapsed > cfg.task_timeout:
                await self._end_task(
                    job,
                    E.TaskTimeout(
                        f"Task {job.task_id} did not finish within {cfg.task_timeout:g} s "
                        f"(last status {status.raw_status!r}).",
                        task_id=job.task_id,
                    ),
                )
            else:
                self._schedule(job_id, now + cfg.poll_interval)
            return
        if status.state == "succeeded":
            assert status.video_url is not None
            self._in_flight.discard(job_id)
            self._submit_wake.set()
            self.estimator.observe(task_kind(job.text), elapsed, poll_interval=cfg.poll_interval)
            self._put(job, TaskSucceeded(video_url=status.video_url, usage=status.usage))
            bound.info("task.succeeded", seconds=round(elapsed, 3))
            await self._downloads.put(job_id)
            return
        detail = ": ".join(p for p in (status.error_code, status.error_message) if p)
        error: E.JobError
        if status.state == "failed":
            error = E.TaskFailed(
                f"The gateway reports task {job.task_id} failed"
                + (f" ({detail})." if detail else "."),
                task_id=job.task_id,
            )
        elif status.state == "expired":
            error = E.TaskExpired(
                f"Task {job.task_id} expired before it ran" + (f" ({detail})." if detail else "."),
                task_id=job.task_id,
            )
        else:
            error = E.TaskCancelled(f"Task {job.task_id} was cancelled.", task_id=job.task_id)
        await self._end_task(job, error)

    async def _end_task(self, job: Job, error: E.JobError) -> None:
        self._in_flight.discard(job.job_id)
        self.estimator.forget(job.job_id)
        self._submit_wake.set()
        await self.placement.fail(job, error)

    # --- download -------------------------------------------------------------------------------

    async def _download(self, job_id: str) -> None:
        job = self._job(job_id)
        if job is None or job.state is not State.SUCCEEDED or job.video_url is None:
            return
        staging = self.placement.staging(job)
        # The staging name may be a hard link to a placed video after a crash mid-move:
        # unlink it rather than truncate it.
        staging.unlink(missing_ok=True)
        await asyncio.to_thread(make_dirs, staging.parent)
        started = time.monotonic()
        # A broken body is retried in this worker (stamina) within the download budget;
        # only the attempts themselves hold up a shutdown, not the waits between them.
        hook = self._retry_hook(job_id, "download", E.DownloadIncomplete)
        try:
            async for attempt in stamina.retry_context(
                on=hook, attempts=DOWNLOAD_ATTEMPTS, timeout=None
            ):
                with attempt, self._critical():
                    result = await self.gateway.download(
                        job.video_url, staging, max_bytes=self.config.gateway.max_video_bytes
                    )
        except E.DownloadIncomplete as exc:
            await self.placement.fail(
                job,
                E.DownloadFailed(
                    f"The video of task {job.task_id} could not be downloaded after "
                    f"{hook.attempts} attempt(s): {exc.message}",
                    task_id=job.task_id,
                    http_status=exc.http_status,
                ),
            )
            return
        except E.DownloadFailed as exc:
            await self.placement.fail(
                job,
                E.DownloadFailed(
                    f"The video of task {job.task_id} could not be downloaded: {exc.message}"
                    + (" (its URL has probably expired)" if exc.http_status in (403, 404) else ""),
                    task_id=job.task_id,
                    http_status=exc.http_status,
                ),
            )
            return
        self.metrics.download_bytes.inc(result.size)
        self.metrics.download_seconds.inc(time.monotonic() - started)
        self._attempts.pop(job_id, None)
        await self.placement.place(job, result.sha256, result.size)

    # --- finished -------------------------------------------------------------------------------

    def _finished(self, job: Job) -> None:
        self.metrics.finished.labels(state=job.state.value).inc()
        self.metrics.job_latency.observe(max(0.0, job.updated_at - job.created_at))
        (self.summary.done if job.state is State.DONE else self.summary.failed).append(job.job_id)
        self._release(job_files(job))
        self._attempts.pop(job.job_id, None)
        if self.config.storage.delete_after:
            for key in job.object_keys:
                self._spawn_side(self._delete_object(job.job_id, key))
        self._idle.set()

    async def _delete_object(self, job_id: str, key: str) -> None:
        try:
            await asyncio.to_thread(self.storage.delete, key)
        except (E.StorageTransient, E.StorageUnavailable) as exc:
            log.warning("storage.delete_failed", job_id=job_id, s3_key=key, reason=str(exc))

    # --- helpers --------------------------------------------------------------------------------

    async def _worker(
        self, queue: asyncio.Queue[str], step: Callable[[str], Coroutine[Any, Any, None]]
    ) -> None:
        while True:
            job_id = await queue.get()
            try:
                await step(job_id)
            except E.StateError as exc:
                self._die(exc)
            except Exception:
                # A bug must not kill the pipeline; the job stays in its durable
                # state and is retried later.
                log.exception("engine.step_error", job_id=job_id, step=step.__name__)
                self._retry_later(job_id, step.__name__.strip("_"))

    def _retry_later(
        self,
        job_id: str,
        stage: str,
        retry_after: float | None = None,
        *,
        ready: bool = False,
        reason: str = "",
    ) -> None:
        """Re-queue ``job_id`` on the timer heap after a backoff (submits, polls, fallbacks)."""
        attempt = self._bump(job_id)
        if self._once and attempt > ONCE_ATTEMPTS.get(stage, attempt):
            # ``--once`` must end: nothing is lost, the job waits in its durable state.
            self.summary.unfinished = f"{stage} kept failing ({reason or 'transient error'})"
            self._stop_for("unfinished")
            return
        policy = STAGE_POLICIES.get(stage)
        backoff = policy.backoff if policy is not None else self.backoff
        delay = backoff.delay(attempt, self.rng, retry_after)
        self._log_retry(job_id, stage, attempt, delay, reason)
        self._schedule(job_id, self.clock() + delay)
        self._submit_wake.set()

    def _retry_hook(self, job_id: str, stage: str, retry_on: type[Exception]) -> RetryHook:
        """The stamina backoff hook of one in-coroutine retry loop (downloads, uploads)."""

        def on_retry(attempt: int, delay: float, exc: Exception) -> None:
            reason = exc.message if isinstance(exc, E.SeedanceWatchError) else repr(exc)
            self._log_retry(job_id, stage, attempt, delay, reason)

        return RetryHook(
            STAGE_POLICIES[stage], retry_on, clock=time.monotonic, rng=self.rng, on_retry=on_retry
        )

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

    def _schedule(self, job_id: str, due: float) -> None:
        self._timers.schedule(job_id, due)
        self._timer_wake.set()

    def _bump(self, job_id: str) -> int:
        self._attempts[job_id] = self._attempts.get(job_id, 0) + 1
        return self._attempts[job_id]

    def _put(self, job: Job, event: Any) -> Job:
        new = apply(job, event, self.clock())
        self.ledger.put(new)
        return new

    def _job(self, job_id: str) -> Job | None:
        return self.ledger.get(job_id)

    def _job_or(self, job: Job) -> Job:
        return self.ledger.get(job.job_id) or job

    def _claim(self, job: Job) -> None:
        files = job_files(job)
        self.inbox.claim(files)
        for path in files:
            self._claims[path] = job.job_id

    def _release(self, files: Iterable[str]) -> None:
        files = list(files)
        for path in files:
            self._claims.pop(path, None)
        self.inbox.release(files)
