"""Pure scheduling parts of the engine: timers, rate limits, backoff, the circuit breaker.

Nothing here sleeps or does I/O: every method takes ``now`` (or an injected clock)
and returns a decision (a time, a delay, a yes/no).  The engine owns the clock and
the sleeping, so these are tested with plain numbers.

The retry policy of docs/design.md, "The gateway protocol" (one policy, two mechanics)
--------------------------------------------------------

Every transient error is retried with :class:`Backoff`: exponential, full jitter
(``uniform(0, min(cap, initial * 2**(n-1)))``), capped per wait, and a peer's
``Retry-After`` (seconds or HTTP date, parsed in ``gateway.py``) wins.  Each stage
has a :class:`RetryPolicy` budget (:data:`STAGE_POLICIES`), and every retry is a
``job.retry`` log event with ``stage``, ``attempt``, ``delay`` and ``reason``.

*How* the wait happens depends on the stage:

* **Downloads and S3 uploads** retry inside the one coroutine that runs the step:
  stamina drives the loop (``stamina.retry_context`` with :class:`RetryHook` as its
  backoff hook, so our policy decides and stamina sleeps, instruments, and obeys
  ``stamina.set_testing``).  These stages are bounded pools of a few workers, so a
  worker sleeping through a short backoff costs nothing.
* **Submits and polls** are re-queued on the engine's :class:`TimerHeap` instead:
  thousands of jobs may be waiting to be polled, and a sleeping coroutine per job
  would not scale (STYLE: scale by scheduling, not by tasks).

Budgets: a submit that never reached the gateway (SubmitNotSent, 429) keeps
waiting without limit -- nothing is billed or lost, and the token bucket slows
down; a poll is retried until ``gateway.task_timeout`` from the submit, then the
job fails as ``task_timeout``; a download gives up as ``download_failed`` after
8 attempts or 10 minutes; an upload retries 4 times within 2 minutes (on top of
boto3's own ``standard`` retries) and then goes back on the timer heap, so a long
S3 outage keeps the input waiting instead of failing it.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

__all__ = [
    "AGING_SECONDS",
    "STAGE_POLICIES",
    "Backoff",
    "CircuitBreaker",
    "ReadyQueue",
    "RetryHook",
    "RetryPolicy",
    "TaskTimeEstimator",
    "TimerHeap",
    "TokenBucket",
    "take_token",
    "task_kind",
]


#: How long a wait is worth one point of ``priority``: a drop with priority 10 goes
#: ahead of waiting drops of priority 0 up to ten minutes older than itself, never of
#: older ones, so a steady stream of urgent drops cannot starve the rest.
AGING_SECONDS = 60.0


class ReadyQueue:
    """Uploaded jobs waiting for a submit slot: highest priority first, first come first
    served within a priority, and waiting raises priority (:data:`AGING_SECONDS` a point).

    A job's effective priority at time ``now`` is ``priority + (now - since) /
    AGING_SECONDS``; ordering by it is ordering by ``since - priority * AGING_SECONDS``,
    which does not change as time passes -- so one heap, O(log n) per push and pop.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._counter = 0

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def push(self, job_id: str, *, priority: int = 0, since: float = 0.0) -> None:
        """Queue ``job_id``, waiting since ``since`` (its drop's time) at ``priority``."""
        self._counter += 1
        heapq.heappush(self._heap, (since - priority * AGING_SECONDS, self._counter, job_id))

    def push_front(self, job_id: str) -> None:
        """Queue ``job_id`` ahead of everyone (the probe a pause let through, a job put back)."""
        self._counter += 1
        heapq.heappush(self._heap, (-math.inf, -self._counter, job_id))

    def pop(self) -> str:
        """The job that goes next (raises IndexError when empty)."""
        return heapq.heappop(self._heap)[2]

    def order(self) -> list[str]:
        """Every queued job, next first (for status and tests)."""
        return [job_id for _, _, job_id in sorted(self._heap)]


class TimerHeap:
    """Due times of many keys in one heap; re-scheduling a key replaces its old entry.

    Ten thousand waiting tasks are ten thousand heap entries, not coroutines.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, tuple[float, int]] = {}
        self._counter = 0

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: str) -> bool:
        return key in self._due

    def schedule(self, key: str, due: float) -> None:
        self._counter += 1
        self._due[key] = (due, self._counter)
        heapq.heappush(self._heap, (due, self._counter, key))

    def due(self, key: str) -> float | None:
        """When ``key`` is due, or None when it is not scheduled."""
        entry = self._due.get(key)
        return None if entry is None else entry[0]

    def cancel(self, key: str) -> None:
        self._due.pop(key, None)

    def next_due(self) -> float | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> Iterator[str]:
        """Yield (and remove) every key due at ``now``, earliest first."""
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                return
            _, _, key = heapq.heappop(self._heap)
            del self._due[key]
            yield key

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap:
            due, counter, key = heap[0]
            if self._due.get(key) == (due, counter):
                return
            heapq.heappop(heap)


@dataclass
class TokenBucket:
    """``rate_per_minute`` tokens a minute, at most ``burst`` saved up.

    ``reserve`` takes a token now or books the next one and says how long to wait
    for it, so concurrent callers queue fairly instead of polling.
    """

    rate_per_minute: float
    burst: float = 1.0
    _tokens: float = field(default=-1.0, repr=False)
    _stamp: float | None = field(default=None, repr=False)

    def reserve(self, now: float) -> float:
        """Take one token; return the seconds to wait before using it (0 when free)."""
        rate = self.rate_per_minute / 60.0
        if self._stamp is None:
            self._tokens, self._stamp = self.burst, now
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * rate)
        self._stamp = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / rate

    def slow_down(self, factor: float = 0.5, floor_per_minute: float = 1.0) -> None:
        """Lower the rate after the gateway said 429 (adaptive limiting)."""
        self.rate_per_minute = max(floor_per_minute, self.rate_per_minute * factor)

    def recover(self, ceiling_per_minute: float, step: float = 1.1) -> None:
        """Raise the rate again after a success, up to the configured ceiling."""
        self.rate_per_minute = min(ceiling_per_minute, self.rate_per_minute * step)


def take_token(
    tokens: float | None, elapsed: float, per_minute: float, burst: float
) -> tuple[float, float]:
    """One token of a bucket kept elsewhere (the account's, in a shared store): the
    bucket held ``tokens`` (None: full) ``elapsed`` seconds ago.

    Returns ``(tokens left, 0.0)`` when a token was taken, else ``(tokens now, seconds
    until one is there)``: unlike :meth:`TokenBucket.reserve` it never books a token
    ahead, since the caller decides now or not at all.
    """
    rate = per_minute / 60.0
    held = burst if tokens is None else tokens
    now = min(burst, held + max(0.0, elapsed) * rate)
    if now >= 1.0:
        return now - 1.0, 0.0
    return now, (1.0 - now) / rate


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, capped; a peer's ``retry_after`` wins."""

    initial: float = 1.0
    cap: float = 60.0
    base: float = 2.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """The wait before retry number ``attempt`` (1 for the first retry)."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.cap * 10)
        ceiling = min(self.cap, self.initial * self.base ** min(64, max(0, attempt - 1)))
        return rng.uniform(0, ceiling)


@dataclass(frozen=True)
class RetryPolicy:
    """A stage's retry budget: at most ``attempts`` tries within ``budget`` seconds.

    ``None`` means unbounded (submits that never reached the gateway wait forever;
    polls are bounded by ``gateway.task_timeout`` in the engine instead).
    """

    backoff: Backoff = field(default_factory=Backoff)
    attempts: int | None = None
    budget: float | None = None

    def next_delay(
        self,
        attempt: int,
        elapsed: float,
        rng: random.Random,
        retry_after: float | None = None,
    ) -> float | None:
        """The wait before the next try after failed try ``attempt``; None: give up.

        ``elapsed`` is the time since the first try began.  A retry whose wait would
        end past the budget is not attempted.
        """
        if self.attempts is not None and attempt >= self.attempts:
            return None
        delay = self.backoff.delay(attempt, rng, retry_after)
        if self.budget is not None and elapsed + delay > self.budget:
            return None
        return delay


#: The retry budget of each stage (see the module docstring).
STAGE_POLICIES: dict[str, RetryPolicy] = {
    "upload": RetryPolicy(Backoff(initial=1.0, cap=30.0), attempts=4, budget=120.0),
    "submit": RetryPolicy(Backoff(initial=1.0, cap=60.0)),
    "poll": RetryPolicy(Backoff(initial=1.0, cap=60.0)),
    "download": RetryPolicy(Backoff(initial=1.0, cap=60.0), attempts=8, budget=600.0),
    # File steps of a placement or a failure (disk full, a folder gone): retried.
    "finish": RetryPolicy(Backoff(initial=1.0, cap=60.0)),
}

#: ``on_retry(attempt, delay, error)`` -- told about each retry that will happen.
RetryListener = Callable[[int, float, Exception], None]


class RetryHook:
    """A stamina backoff hook that applies a :class:`RetryPolicy` to one retry loop.

    stamina calls it with each failure: it returns ``False`` (re-raise: not
    retryable, or the budget is spent) or the seconds to wait, and tells
    ``on_retry`` about every retry that will really happen.  Make one per loop
    (it counts the attempts).  The clock is injected, so it is tested without
    sleeping.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        retry_on: type[Exception] | tuple[type[Exception], ...],
        *,
        clock: Callable[[], float],
        rng: random.Random,
        on_retry: RetryListener | None = None,
    ) -> None:
        self.policy = policy
        self.retry_on = retry_on
        self.clock = clock
        self.rng = rng
        self.on_retry = on_retry
        self.attempts = 0
        self.started = clock()

    def __call__(self, exc: Exception) -> bool | float:
        if not isinstance(exc, self.retry_on):
            return False
        self.attempts += 1
        retry_after = getattr(exc, "retry_after", None)
        delay = self.policy.next_delay(
            self.attempts,
            self.clock() - self.started,
            self.rng,
            retry_after if isinstance(retry_after, (int, float)) else None,
        )
        if delay is None:
            return False
        if self.on_retry is not None:
            self.on_retry(self.attempts, delay, exc)
        return delay


@dataclass
class CircuitBreaker:
    """Pauses a whole pipeline (submissions and polls) while an outside fault lasts.

    ``trip`` opens it until a probe time that backs off (doubling from ``initial``,
    capped at ``cap``).  Once that time comes, :meth:`acquire` lets exactly one
    request through (the probe) and holds the others: ``success`` closes the
    breaker, another ``trip`` reopens it for longer.  Failures of requests that
    were already under way when it opened do not lengthen the pause (they report
    the same fault).  A probe that ends in neither (a transient error) frees the
    way for another one after ``probe_timeout``.  Nothing is failed while open.
    """

    initial: float = 5.0
    cap: float = 300.0
    probe_timeout: float = 60.0
    reason: str | None = None
    trips: int = 0
    probe_at: float = 0.0
    since: float | None = None
    _probe_sent: float | None = field(default=None, repr=False)

    @property
    def is_open(self) -> bool:
        return self.reason is not None

    def trip(self, reason: str, now: float) -> float:
        """Open (or keep open) the breaker; return the time of the next probe."""
        if self.reason is not None and now < self.probe_at:
            self.reason = reason
            return self.probe_at
        if self.reason is None:
            self.since = now
        self.trips += 1
        self.reason = reason
        self._probe_sent = None
        self.probe_at = now + min(self.cap, self.initial * 2 ** min(64, self.trips - 1))
        return self.probe_at

    def wait(self, now: float) -> float:
        """Seconds until a request may go out (0 when closed or when the probe is due)."""
        return 0.0 if self.reason is None else max(0.0, self.probe_at - now)

    def acquire(self, now: float) -> float:
        """0: send now (closed, or this request is the probe); else seconds to wait."""
        if self.reason is None:
            return 0.0
        if now < self.probe_at:
            return self.probe_at - now
        if self._probe_sent is not None and now - self._probe_sent < self.probe_timeout:
            return min(self.initial, self.probe_timeout - (now - self._probe_sent))
        self._probe_sent = now
        return 0.0

    def success(self) -> bool:
        """A request went through; returns True when this closed an open breaker."""
        was_open = self.reason is not None
        self.reason, self.trips, self.probe_at, self.since = None, 0, 0.0, None
        self._probe_sent = None
        return was_open


@dataclass
class TaskTimeEstimator:
    """When to poll a task first, per kind (resolution, duration), learned from recent tasks.

    The daemon learns that a task ended only by polling it, and the gateway's slot
    stays idle until then, so the first poll should come just after the task can
    be done: not before (a wasted poll, then a whole ``poll_interval`` of lag),
    not long after (an idle slot).  Later polls follow every ``poll_interval``.

    The aim per kind is seeded by the first task seen to end (its detected time,
    less half a ``poll_interval`` of detection lag), then tracked from how first
    polls went, a stochastic quantile search: a first poll that found its task
    done pulls the aim to ``down`` below that poll's delay, one that found it still
    running pushes it to ``up`` above.  Each task moves the aim relative to the
    delay *it* used, so a wave of tasks submitted together counts once, not once
    per task.  In equilibrium about ``down / (up + down)`` of first polls find the
    task running (about 1 in 7 with the defaults): a steady task time is found
    within a few percent, and a drifting one is followed within a few tasks.  The
    first poll is never earlier than ``poll_interval`` after the submit.
    """

    up: float = 0.03
    down: float = 0.005
    _aim: dict[str, float] = field(default_factory=dict)
    _planned: dict[str, tuple[str, float]] = field(default_factory=dict)

    def observe(self, kind: str, seconds: float, *, poll_interval: float = 0.0) -> None:
        """A task of ``kind`` was seen done ``seconds`` after its submit."""
        if kind not in self._aim:
            self._aim[kind] = max(seconds - poll_interval / 2, seconds / 2)

    def typical(self) -> float | None:
        """The learned task time across kinds (the longest aim), or None before any."""
        return max(self._aim.values(), default=None)

    def first_poll_delay(self, kind: str, poll_interval: float, key: str | None = None) -> float:
        """Delay from submit to the first poll; with ``key``, remembered for
        :meth:`first_polled`."""
        aim = self._aim.get(kind)
        delay = poll_interval if aim is None else max(poll_interval, aim)
        if key is not None:
            self._planned[key] = (kind, delay)
        return delay

    def first_polled(self, key: str, done: bool | None) -> None:
        """The first poll of ``key`` found its task done (True), still running (False), or
        ended otherwise (None: failed, expired; nothing learned).  Later calls for the
        same key are ignored."""
        planned = self._planned.pop(key, None)
        if planned is None or done is None:
            return
        kind, delay = planned
        aim = self._aim.get(kind)
        if aim is None:
            return
        if done:
            self._aim[kind] = min(aim, delay * (1.0 - self.down))
        else:
            self._aim[kind] = max(aim, delay * (1.0 + self.up))

    def forget(self, key: str) -> None:
        """Drop what was remembered for ``key`` (its job ended without a first poll)."""
        self._planned.pop(key, None)


def task_kind(
    model: str | None, options: Mapping[str, object] | None, text: str | None = None
) -> str:
    """The polling-estimate bucket of a task: its model, resolution and duration.

    From the job's effective options; a record written before options were kept
    falls back to the resolution and duration commands in its text.
    """
    if options is None:
        words = (text or "").split()
        found = {
            w[2:]: words[i + 1]
            for i, w in enumerate(words[:-1])
            if w in ("--resolution", "--duration")
        }
    else:
        found = {k: str(options[k]) for k in ("resolution", "duration") if k in options}
    parts = [f"{k}={found[k]}" for k in ("resolution", "duration") if k in found]
    return ",".join([model or "", *parts])
