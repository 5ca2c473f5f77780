"""Where jobs wait and how they reach their stage: the plumbing of the engine.

* the **ready queue** of uploaded jobs, highest priority first (waiting raises it),
  and the **submitter** that takes them while a
  slot (``gateway.max_in_flight``), a token (``gateway.requests_per_minute``) and the
  credentials breaker allow;
* the **timer heap**: one entry per waiting job (a poll interval, a backoff, a
  breaker's probe), whatever the number of jobs;
* one **queue per pooled stage**, served by a bounded pool of workers.

Where a job goes is ``RESUME[job.state]``; what happens there is the engine's
business (``step``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from seedance_watch.aio import wait_event
from seedance_watch.core.jobs import RESUME, Job, Stage, State
from seedance_watch.core.scheduling import CircuitBreaker, ReadyQueue, TimerHeap, TokenBucket
from seedance_watch.ledger.base import JobStore

__all__ = ["ACCOUNT_RECHECK", "POKE_SPACING", "Dispatcher", "Waiting"]

#: A webhook callback polls its task at once, but never more than once a second.
POKE_SPACING = 1.0
#: With every slot of the account taken on other hosts, the submitter asks again after
#: this long even if no notification came (a lost one, a restarting listener).
ACCOUNT_RECHECK = 5.0
#: While the database is out of reach the submitter sleeps until woken (its return).
_UNTIL_WOKEN = 3600.0


@dataclass(frozen=True)
class Waiting:
    """Where one job waits in the dispatcher (:meth:`Dispatcher.waiting`)."""

    #: When the timer heap sends it on (a poll, a backoff, a probe); None: not on it.
    due: float | None
    #: It holds a submit slot: from its submit intent until its task ends.
    holds_slot: bool


class Dispatcher:
    """Queues, slots, the timer heap and the loops that serve them."""

    def __init__(
        self,
        *,
        store: JobStore,
        clock: Callable[[], float],
        credentials: CircuitBreaker,
        database: CircuitBreaker,
        bucket: TokenBucket,
        max_in_flight: int,
        step: Callable[[Stage, str], Coroutine[Any, Any, None]],
        gate: Callable[[Job], float],
        spawn_side: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.store, self.clock, self.credentials, self.bucket = store, clock, credentials, bucket
        self.database = database
        #: The account has no room (a shared store's decision) until then, or a wake.
        self.held_until = 0.0
        self.max_in_flight, self.step, self.spawn_side = max_in_flight, step, spawn_side
        #: The budget: 0 to submit now, seconds to wait, or < 0 to drop the job from the
        #: queue (it stays uploaded in the ledger).
        self.gate = gate
        self.ready = ReadyQueue()
        self.timers = TimerHeap()
        self.queues: dict[Stage, asyncio.Queue[str]] = {s: asyncio.Queue() for s in Stage}
        self.in_flight: set[str] = set()
        self.submit_wake, self.timer_wake = asyncio.Event(), asyncio.Event()
        self.stopping = False
        # Webhooks: token → job id, when each task was last polled, the loop to wake.
        self.tokens: dict[str, str] = {}
        self.last_poll: dict[str, float] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        """Something the submitter waits for may have changed (a slot, a pause, a day)."""
        self.submit_wake.set()

    def first_in_line(self, job_id: str) -> None:
        """``job_id`` goes to the gateway next (the probe a pause let through)."""
        self.ready.push_front(job_id)
        self.submit_wake.set()

    def hold_account(self, job_id: str, until: float) -> None:
        """The account had no room for ``job_id``: it goes first in line again, and the
        submitter waits until ``until`` (or :meth:`account_changed`)."""
        self.ready.push_front(job_id)
        self.held_until = max(self.held_until, until)

    def account_changed(self) -> None:
        """A task ended on some host (any thread: the store's listener runs on this
        loop): the account may have room again."""
        self.held_until = 0.0
        self.submit_wake.set()

    def stop(self) -> None:
        """Take no more submits or polls (a shutdown, or the end of a ``--once`` run)."""
        self.stopping = True
        self.submit_wake.set()

    def start(self) -> None:
        """Bind to the running loop (webhook callbacks arrive from another thread)."""
        self.loop = asyncio.get_running_loop()

    def waiting(self, job_id: str) -> Waiting:
        """Where ``job_id`` waits now: its timer and its slot."""
        return Waiting(due=self.timers.due(job_id), holds_slot=job_id in self.in_flight)

    def submit_queue(self) -> tuple[str, ...]:
        """The uploaded jobs waiting for a submit, next first (a copy)."""
        return tuple(self.ready.order())

    def know_token(self, job: Job) -> None:
        if job.webhook_token is not None:
            self.tokens[job.webhook_token] = job.job_id

    def know_tokens(self, jobs: Iterable[Job]) -> None:
        """The tokens of every job of the store (recovery): a finished job's token stays
        known for good, across restarts as while the daemon runs (docs/design.md,
        "Webhooks")."""
        self.tokens.update(
            {job.webhook_token: job.job_id for job in jobs if job.webhook_token is not None}
        )

    def forget(self, job: Job) -> None:
        """A finished job needs no poll bookkeeping (its token stays known: 204)."""
        self.last_poll.pop(job.job_id, None)

    def poke(self, token: str) -> bool:
        """A webhook callback (any thread): poll that task soon.  False for an unknown token.

        Nothing of the callback is trusted: it only moves the job's next poll forward,
        at most once per :data:`POKE_SPACING` seconds.
        """
        job_id = self.tokens.get(token)
        if job_id is None:
            return False
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._poke, job_id)
        return True

    def _poke(self, job_id: str) -> None:
        job = self.store.get(job_id)
        # Only a job waiting on the timer heap: one in a queue or being polled is not
        # polled twice at once.
        if job is None or job.state is not State.SUBMITTED or job_id not in self.timers:
            return
        due = max(self.clock(), self.last_poll.get(job_id, 0.0) + POKE_SPACING)
        if due < (self.timers.due(job_id) or due + 1):
            self.schedule(job_id, due)

    def track(self, job: Job) -> None:
        """Slots: a job holds one from its submit intent until its task ends."""
        if job.state in (State.SUBMITTING, State.SUBMITTED):
            self.in_flight.add(job.job_id)
        else:
            self.free(job.job_id)

    def free(self, job_id: str) -> None:
        """The job holds no slot (it ended, or its submit wrote no intent): the
        submitter may use it."""
        if job_id in self.in_flight:
            self.in_flight.discard(job_id)
            self.submit_wake.set()

    def route(self, job: Job, at: float | None = None) -> None:
        """Send a job to the stage its state routes to, now or at ``at``."""
        if job.terminal:
            return
        if at is not None and at > self.clock():
            self.schedule(job.job_id, at)
            return
        stage = RESUME[job.state]
        if stage is Stage.SUBMIT and job.state is State.UPLOADED:
            self.ready.push(job.job_id, priority=job.priority, since=job.created_at)
            self.submit_wake.set()
        elif stage is Stage.SUBMIT:  # SUBMITTING after a restart: fails at once
            self.spawn_side(self.step(Stage.SUBMIT, job.job_id))
        else:
            self.queues[stage].put_nowait(job.job_id)

    async def route_id(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is not None:
            self.route(job)

    def schedule(self, job_id: str, due: float) -> None:
        self.timers.schedule(job_id, due)
        self.timer_wake.set()

    async def timer_loop(self) -> None:
        """One timer heap for every waiting job; due jobs re-enter their stage."""
        while True:
            for job_id in list(self.timers.pop_due(self.clock())):
                job = self.store.get(job_id)
                if job is not None and not self._held(job):
                    self.route(job)
            due = self.timers.next_due()
            if due is None:
                self.timer_wake.clear()
                await self.timer_wake.wait()
            else:
                await sleep_or_wake(self.timer_wake, max(0.0, due - self.clock()))

    def _held(self, job: Job) -> bool:
        """A poll due while the key is refused waits for the probe instead."""
        wait = self.credentials.wait(self.clock()) if job.state is State.SUBMITTED else 0.0
        if wait > 0:
            self.schedule(job.job_id, self.clock() + wait)
        return wait > 0

    async def worker(self, stage: Stage) -> None:
        queue = self.queues[stage]
        while True:
            await self.step(stage, await queue.get())

    async def submitter(self) -> None:
        """Send submits while a slot, a token and the breaker allow (uploads run ahead)."""
        max_in_flight = self.max_in_flight
        while True:
            while self.stopping or not self.ready or len(self.in_flight) >= max_in_flight:
                self.submit_wake.clear()
                await self.submit_wake.wait()
            now = self.clock()
            wait = max(self.credentials.wait(now), self.held_until - now)
            if self.database.is_open:
                wait = _UNTIL_WOKEN
            if wait > 0:
                await sleep_or_wake(self.submit_wake, wait)
                continue
            job_id = self.ready.pop()
            job = self.store.get(job_id)
            if job is None or job.state is not State.UPLOADED:
                continue
            hold = self.gate(job)
            if hold < 0:
                continue
            if hold > 0:  # the day's budget is spent: wait for the next day (or a wake)
                self.ready.push_front(job_id)
                await sleep_or_wake(self.submit_wake, hold)
                continue
            self.in_flight.add(job_id)  # the slot is taken from now on
            delay = self.bucket.reserve(self.clock())
            if delay > 0:
                await asyncio.sleep(delay)
            if self.credentials.is_open:
                await self.step(Stage.SUBMIT, job_id)  # the probe: the others wait for it
            else:
                self.spawn_side(self.step(Stage.SUBMIT, job_id))


async def sleep_or_wake(event: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``event`` is set, whichever is first."""
    event.clear()
    await wait_event(event, seconds)
