"""The pure scheduling parts, driven with plain numbers as the clock."""

from __future__ import annotations

import random

import stamina

from seedance_watch.core.scheduling import (
    STAGE_POLICIES,
    Backoff,
    CircuitBreaker,
    RetryHook,
    RetryPolicy,
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
    """Each failed probe doubles the pause up to 5 minutes; a success closes it."""
    breaker = CircuitBreaker(initial=5, cap=300)
    assert breaker.wait(0) == 0 and breaker.acquire(0) == 0
    now, probes = 0.0, []
    for _ in range(10):
        now = breaker.trip("401", now=now)  # each probe fails the moment it is due
        probes.append(now)
    gaps = [b - a for a, b in zip([0.0, *probes], probes, strict=False)]
    assert gaps[:4] == [5, 10, 20, 40] and gaps[-1] == 300 and max(gaps) == 300
    assert breaker.is_open and breaker.since == 0.0
    assert breaker.wait(probes[-1] - 100) == 100
    assert breaker.success() is True
    assert not breaker.is_open and breaker.wait(0) == 0 and breaker.since is None
    assert breaker.success() is False


def test_circuit_breaker_failures_in_flight_do_not_lengthen_the_pause() -> None:
    """Requests already under way when the breaker opened report the same fault:
    their failures keep the probe time instead of doubling it."""
    breaker = CircuitBreaker(initial=5, cap=300)
    assert breaker.trip("401", now=100) == 105
    for t in (100.1, 101, 104.9):
        assert breaker.trip("401", now=t) == 105
    assert breaker.trips == 1 and breaker.since == 100
    assert breaker.trip("401", now=105) == 115  # the probe itself failed


def test_circuit_breaker_lets_exactly_one_probe_through() -> None:
    """Once the probe is due one caller gets through; the others wait for its answer,
    and a probe lost to a transient error frees the way after probe_timeout."""
    breaker = CircuitBreaker(initial=5, cap=300, probe_timeout=30)
    breaker.trip("403", now=0)
    assert breaker.acquire(1) == 4  # not yet due
    assert breaker.acquire(5) == 0  # the probe
    held = breaker.acquire(5.5)
    assert 0 < held <= 5  # held while the probe is out
    assert breaker.acquire(20) > 0
    assert breaker.acquire(35.5) == 0  # the first probe never answered
    breaker.trip("403", now=36)  # this one failed: next probe later, gate reset
    assert breaker.acquire(40) > 0 and breaker.acquire(breaker.probe_at) == 0
    breaker.success()
    assert all(breaker.acquire(t) == 0 for t in (50, 50, 50))


def test_retry_policy_stops_at_its_attempts_and_budget() -> None:
    """A stage retries until its attempt count or its time budget would be spent;
    an unbounded policy never gives up; Retry-After replaces the backoff."""
    rng = random.Random(3)
    download = RetryPolicy(Backoff(initial=1, cap=60), attempts=8, budget=600)
    assert all(download.next_delay(n, 0.0, rng) is not None for n in range(1, 8))
    assert download.next_delay(8, 0.0, rng) is None
    assert download.next_delay(1, 599.5, rng, retry_after=1.0) is None  # would end past 600
    assert download.next_delay(1, 10.0, rng, retry_after=2.5) == 2.5
    forever = RetryPolicy(Backoff(initial=1, cap=60))
    assert all(0 <= (forever.next_delay(n, 1e9, rng) or -1) <= 60 for n in (1, 50, 10_000))
    for stage in ("submit", "poll"):
        assert STAGE_POLICIES[stage].attempts is None and STAGE_POLICIES[stage].budget is None
    assert STAGE_POLICIES["download"].attempts == 8
    assert STAGE_POLICIES["download"].budget == 600


class _Flaky(Exception):
    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("flaky")
        self.retry_after = retry_after


def test_retry_hook_applies_the_policy_on_a_fake_clock() -> None:
    """The stamina backoff hook returns each wait (full jitter, Retry-After first),
    reports every retry that will happen, and says stop once the budget is spent
    or the error is not retryable."""
    clock = [0.0]
    seen: list[tuple[int, float]] = []
    hook = RetryHook(
        RetryPolicy(Backoff(initial=1, cap=4), attempts=5, budget=10),
        _Flaky,
        clock=lambda: clock[0],
        rng=random.Random(7),
        on_retry=lambda n, delay, exc: seen.append((n, delay)),
    )
    first = hook(_Flaky())
    assert isinstance(first, float) and 0 <= first <= 1
    assert hook(_Flaky(retry_after=3.0)) == 3.0
    clock[0] = 9.5
    assert hook(_Flaky(retry_after=1.0)) is False  # 9.5 + 1 > the 10 s budget
    assert hook(ValueError("not ours")) is False
    assert [n for n, _ in seen] == [1, 2] and seen[1][1] == 3.0


def test_retry_hook_drives_stamina_to_the_attempt_limit() -> None:
    """With stamina's test mode (no sleeping) the loop makes exactly the policy's
    attempts, then re-raises the last error."""
    calls = 0
    hook = RetryHook(
        RetryPolicy(Backoff(initial=1, cap=4), attempts=4),
        _Flaky,
        clock=lambda: 0.0,
        rng=random.Random(1),
    )
    with stamina.set_testing(True, attempts=100, cap=True):
        try:
            for attempt in stamina.retry_context(on=hook, attempts=4, timeout=None):
                with attempt:
                    calls += 1
                    raise _Flaky()
        except _Flaky:
            pass
    assert calls == 4 and hook.attempts == 4


def test_estimator_delays_the_first_poll() -> None:
    """Unknown task kinds are polled after poll_interval; a known kind near its expected end."""
    est = TaskTimeEstimator()
    assert est.first_poll_delay("k", 1.0) == 1.0
    est.observe("k", 20.0, poll_interval=1.0)
    assert 19 <= est.first_poll_delay("k", 1.0) <= 20
    assert est.first_poll_delay("other", 1.0) == 1.0


def test_the_task_time_estimate_is_kept_per_model_resolution_and_duration() -> None:
    """Tasks are grouped for the first-poll estimate by model and the options that set
    their length (Seedance 2's are body keys, not text commands); a record from before
    options were kept falls back to the commands in its text."""
    from seedance_watch.core.scheduling import task_kind

    fast = task_kind("seedance-2-0-fast", {"resolution": "480p", "duration": 10})
    assert fast == "seedance-2-0-fast,resolution=480p,duration=10"
    assert task_kind("seedance-2-0-fast", {"duration": "auto"}) != task_kind(
        "seedance-2-0-fast", {"duration": 5}
    )
    assert task_kind("seedance-2-5", {"duration": 5}) != task_kind(
        "seedance-2-0-fast", {"duration": 5}
    )
    old = task_kind("m", None, "clouds --resolution 720p --duration 5 --camerafixed false")
    assert old == "m,resolution=720p,duration=5"


def test_the_ready_queue_takes_the_highest_priority_first_and_fifo_within_one() -> None:
    """Higher priority first; first come first served within a priority; a job put back
    in front (the probe of a pause) goes before all."""
    from seedance_watch.core.scheduling import ReadyQueue

    queue = ReadyQueue()
    for job_id, priority, since in [("a0", 0, 10.0), ("b5", 5, 11.0), ("c10", 10, 12.0)]:
        queue.push(job_id, priority=priority, since=since)
    queue.push("d0", priority=0, since=9.0)
    queue.push("e5", priority=5, since=13.0)
    assert queue.order() == ["c10", "b5", "e5", "d0", "a0"]
    queue.push_front("probe")
    assert [queue.pop() for _ in range(len(queue))] == ["probe", "c10", "b5", "e5", "d0", "a0"]


def test_waiting_raises_priority_so_a_stream_of_urgent_drops_cannot_starve_the_rest() -> None:
    """A priority-0 drop that has waited longer than 10 × AGING_SECONDS goes before a
    priority-10 drop arriving now; one that has waited less does not."""
    from seedance_watch.core.scheduling import AGING_SECONDS, ReadyQueue

    queue = ReadyQueue()
    queue.push("old", priority=0, since=0.0)
    queue.push("urgent-soon", priority=10, since=10 * AGING_SECONDS - 1)
    queue.push("urgent-late", priority=10, since=10 * AGING_SECONDS + 1)
    assert queue.order() == ["urgent-soon", "old", "urgent-late"]
