"""Pure scheduling parts of the engine: timers, rate limits, backoff, the circuit breaker.

Nothing here sleeps, reads a clock or does I/O: every method takes ``now`` and
returns a decision (a time, a delay, a yes/no).  The engine owns the clock and the
sleeping, so these are tested with plain numbers.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = [
    "Backoff",
    "CircuitBreaker",
    "TaskTimeEstimator",
    "TimerHeap",
    "TokenBucket",
]


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
        ceiling = min(self.cap, self.initial * self.base ** max(0, attempt - 1))
        return rng.uniform(0, ceiling)


@dataclass
class CircuitBreaker:
    """Pauses a whole pipeline (submissions and polls) while an outside fault lasts.

    ``trip`` opens it until a probe time that backs off (capped at ``cap``); the
    first request after that time is the probe: ``success`` closes the breaker,
    another ``trip`` reopens it for longer.  Nothing is failed while it is open.
    """

    initial: float = 5.0
    cap: float = 300.0
    reason: str | None = None
    trips: int = 0
    probe_at: float = 0.0

    @property
    def is_open(self) -> bool:
        return self.reason is not None

    def trip(self, reason: str, now: float) -> float:
        """Open (or keep open) the breaker; return the time of the next probe."""
        self.trips += 1
        self.reason = reason
        self.probe_at = now + min(self.cap, self.initial * 2 ** (self.trips - 1))
        return self.probe_at

    def wait(self, now: float) -> float:
        """Seconds until a request may go out (0 when closed or when the probe is due)."""
        return 0.0 if self.reason is None else max(0.0, self.probe_at - now)

    def success(self) -> bool:
        """A request went through; returns True when this closed an open breaker."""
        was_open = self.reason is not None
        self.reason, self.trips, self.probe_at = None, 0, 0.0
        return was_open


@dataclass
class TaskTimeEstimator:
    """Learns how long tasks take, per kind (resolution, duration), from recent tasks.

    Polling starts when a task could plausibly be done, not before: this halves
    the polls per job without adding lag.
    """

    alpha: float = 0.3
    _ewma: dict[str, float] = field(default_factory=dict)

    def observe(self, kind: str, seconds: float) -> None:
        old = self._ewma.get(kind)
        self._ewma[kind] = seconds if old is None else old + self.alpha * (seconds - old)

    def first_poll_delay(self, kind: str, poll_interval: float) -> float:
        """Delay from submit to the first poll: a little before the expected end."""
        expected = self._ewma.get(kind)
        if expected is None:
            return poll_interval
        return max(poll_interval, 0.9 * expected - poll_interval / 2)
