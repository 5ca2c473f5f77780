"""The pure scheduling parts, driven with plain numbers as the clock."""

from __future__ import annotations

import random

from seedance_watch.scheduling import (
    Backoff,
    CircuitBreaker,
    TaskTimeEstimator,
    TimerHeap,
    TokenBucket,
)


def test_timer_heap_orders_and_replaces() -> None:
    """Due keys come out earliest first; re-scheduling moves a key; cancel removes it."""
    heap = TimerHeap()
    heap.schedule("a", 5)
    heap.schedule("b", 3)
    heap.schedule("c", 9)
    heap.schedule("a", 1)  # replaces the entry at 5
    heap.cancel("c")
    assert heap.next_due() == 1
    assert list(heap.pop_due(4)) == ["a", "b"]
    assert len(heap) == 0 and heap.next_due() is None


def test_token_bucket_spaces_requests() -> None:
    """60 per minute with no burst: one now, the next a second later, then two."""
    bucket = TokenBucket(rate_per_minute=60, burst=1)
    assert bucket.reserve(0.0) == 0.0
    assert abs(bucket.reserve(0.0) - 1.0) < 1e-9
    assert abs(bucket.reserve(0.0) - 2.0) < 1e-9
    assert bucket.reserve(10.0) == 0.0  # refilled (capped at burst)


def test_token_bucket_adapts_to_429() -> None:
    bucket = TokenBucket(rate_per_minute=60)
    bucket.slow_down()
    assert bucket.rate_per_minute == 30
    for _ in range(20):
        bucket.recover(60)
    assert bucket.rate_per_minute == 60


def test_backoff_full_jitter_is_capped_and_honours_retry_after() -> None:
    rng = random.Random(1)
    policy = Backoff(initial=1, cap=8)
    delays = [policy.delay(n, rng) for n in range(1, 30)]
    assert all(0 <= d <= 8 for d in delays)
    assert max(delays[5:]) > 4  # the ceiling grows to the cap
    assert policy.delay(1, rng, retry_after=7.5) == 7.5


def test_circuit_breaker_backs_off_to_the_cap_and_closes() -> None:
    """Each trip doubles the pause up to 5 minutes; a success closes it."""
    breaker = CircuitBreaker(initial=5, cap=300)
    assert breaker.wait(0) == 0
    probes = [breaker.trip("401", now=0) for _ in range(10)]
    assert probes[:3] == [5, 10, 20] and probes[-1] == 300
    assert breaker.is_open and breaker.wait(100) == 200
    assert breaker.success() is True
    assert not breaker.is_open and breaker.wait(0) == 0
    assert breaker.success() is False


def test_estimator_delays_the_first_poll() -> None:
    est = TaskTimeEstimator()
    assert est.first_poll_delay("k", 1.0) == 1.0
    est.observe("k", 20.0)
    assert 17 <= est.first_poll_delay("k", 1.0) <= 18
