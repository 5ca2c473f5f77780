"""The shared store as one account across hosts: claims, the submit decision (slots,
rate, budget), adoption of a dead host's jobs, the slot NOTIFY, retry requests.

Each host is a :class:`PostgresStore` session in this process, on a fresh database of
the session's server; the daemons themselves are ``tests/test_cluster.py``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from seedance_watch.config import BudgetConfig
from seedance_watch.core.budget import BudgetPrices, JobCost
from seedance_watch.core.jobs import InputFile, Job, State
from seedance_watch.core.scheduling import take_token
from seedance_watch.errors import JobFenced, StoreUnavailable
from seedance_watch.ledger.base import SubmitLimits, SubmitRefusal, Taken
from seedance_watch.ledger.postgres import PostgresRetryBook, PostgresStore
from seedance_watch.ledger.postgres.schema import SCHEMA, Database, connect, migrations
from seedance_watch.ledger.retries import RetryFile

pytestmark = pytest.mark.timeout(60)

DEADLINE = 20.0
PRICES = BudgetPrices.from_config(BudgetConfig(default_price=0.10))


def make_job(n: int, state: State = State.NEW, seq: int = 0, **changes: Any) -> Job:
    job = Job(
        job_id=f"job{n:05d}",
        state=state,
        source=f"image-{n}.jpg",
        sidecar=f"image-{n}.yaml",
        created_at=1_700_000_000.0 + n,
        updated_at=1_700_000_000.0 + n + seq,
        prompt="A quiet harbour",
        seq=seq,
    )
    return dataclasses.replace(job, **changes)


def files(*names: str, mtime: int = 1) -> tuple[InputFile, ...]:
    return tuple(InputFile("image", name, f"sha-{name}", 100, 1, 1, mtime) for name in names)


def intent(n: int, at: float | None = None) -> Job:
    """Job n as its submit intent writes it (at ``at``, now by default)."""
    at = time.time() if at is None else at
    cost = JobCost.of("generation", PRICES.cost_of(make_job(n)).rate).to_dict()
    return make_job(n, State.SUBMITTING, seq=2, intent_at=at, cost=cost)


def limits(
    max_in_flight: int = 10, per_minute: float = 600.0, burst: float = 10.0, **budget: Any
) -> SubmitLimits:
    prices = BudgetPrices.from_config(BudgetConfig(default_price=0.10, **budget))
    return SubmitLimits(max_in_flight, per_minute, burst, prices, cents=10, at=time.time())


def wait_for(condition: Any, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


def sql(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return list(cursor.fetchall()) if cursor.description else []


@pytest.fixture
def open_host(postgres_url: str) -> Iterator[Any]:
    opened: list[PostgresStore] = []

    def _open(host: str, **kwargs: Any) -> PostgresStore:
        kwargs.setdefault("renew", False)
        store = PostgresStore.open(postgres_url, host=host, **kwargs)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


# --- claims ---------------------------------------------------------------------------------


def test_a_drop_is_claimed_with_its_job_and_another_host_leaves_it(
    postgres_url: str, open_host: Any
) -> None:
    """Host a's claim writes the job and its files' claims in one go; host b, seeing the
    same files (under its own job id, or the same one), gets Taken naming a's job, and
    nothing of b's is written."""
    a, b = open_host("a"), open_host("b")
    mine = make_job(1, inputs=files("x.jpg", "x.yaml"))
    assert a.claim(mine) is None and a.get("job00001") == mine
    assert sql(postgres_url, f"SELECT path, job_id, host FROM {SCHEMA}.claims ORDER BY path") == [
        ("x.jpg", "job00001", "a"),
        ("x.yaml", "job00001", "a"),
    ]
    assert b.claim(make_job(2, inputs=files("x.yaml"))) == Taken("job00001", "a", False)
    assert b.claim(make_job(1, inputs=files("x.jpg", "x.yaml"))) == Taken("job00001", "a", False)
    assert b.get("job00002") is None and b.get("job00001") is None
    assert sql(postgres_url, f"SELECT job_id, owner FROM {SCHEMA}.jobs") == [("job00001", "a")]
    # Other bytes, another mtime or another size under the name: another drop.
    assert b.claim(make_job(3, inputs=files("x.jpg", mtime=2))) is None


def test_a_claim_whose_answer_was_lost_is_the_hosts_own_when_made_again(
    open_host: Any,
) -> None:
    """Host a's claim committed but its answer never came back (the store went away):
    claiming the same job again finds a's own job and gives the drop to a, as
    recorded then, instead of parking it for ever as another's."""
    a = open_host("a")
    mine = make_job(1, inputs=files("x.jpg", "x.yaml"))
    assert a.claim(mine) is None
    a.forget("job00001")  # as if the answer had been lost: the job is not in a's view
    assert a.get("job00001") is None
    assert a.claim(mine) is None and a.get("job00001") == mine
    assert open_host("b").claim(make_job(2, inputs=files("x.jpg"))) == Taken("job00001", "a", False)


def test_files_of_a_finished_job_are_taken_over_only_when_asked(open_host: Any) -> None:
    """Files claimed by a job that ended are Taken(finished=True); with
    replace_finished (the caller saw them in the inbox again: a retry) the new job
    gets them, and a job still running never gives them up."""
    a, b = open_host("a"), open_host("b")
    a.claim(make_job(1, inputs=files("x.jpg", "x.yaml")))
    a.put(make_job(1, State.FAILED, seq=3, inputs=files("x.jpg", "x.yaml")))
    again = make_job(2, inputs=files("x.jpg", "x.yaml", "x-ref.jpg"))
    assert b.claim(again) == Taken("job00001", "a", True)
    assert b.claim(again, replace_finished=True) is None
    a.claim(make_job(3, inputs=files("y.jpg")))
    assert b.claim(make_job(4, inputs=files("y.jpg")), replace_finished=True) == Taken(
        "job00003", "a", False
    )
    reader_rows = sql(
        b.database.url, f"SELECT path, job_id, host FROM {SCHEMA}.claims ORDER BY path"
    )
    assert reader_rows == [
        ("x-ref.jpg", "job00002", "b"),
        ("x.jpg", "job00002", "b"),
        ("x.yaml", "job00002", "b"),
        ("y.jpg", "job00003", "a"),
    ]


def race(
    hosts: list[PostgresStore], claim: Callable[[int, PostgresStore, int], Taken | None]
) -> tuple[dict[int, list[str]], list[Taken]]:
    """Every host calls ``claim(index, store, n)`` for drops 0..29 at once (each in a
    thread, started together): the hosts that won each drop, and every Taken the
    others got."""
    won: dict[int, list[str]] = {n: [] for n in range(30)}
    lost: list[Taken] = []
    start = threading.Barrier(len(hosts))

    def run(index: int, store: PostgresStore) -> None:
        start.wait()
        for n in range(30):
            taken = claim(index, store, n)
            if taken is None:
                won[n].append(store.host)
            else:
                lost.append(taken)

    threads = [threading.Thread(target=run, args=(i, s)) for i, s in enumerate(hosts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won, lost


def test_hosts_claiming_the_same_drops_at_once_get_one_job_each(open_host: Any) -> None:
    """Three hosts race for the same 30 drops (each under its own job id): every drop
    is claimed exactly once."""
    hosts = [open_host(name) for name in ("a", "b", "c")]

    def claim(index: int, store: PostgresStore, n: int) -> Taken | None:
        files_n = files(f"drop-{n}.jpg", f"drop-{n}.yaml")
        return store.claim(make_job(1000 * index + n, inputs=files_n))

    won, lost = race(hosts, claim)
    assert all(len(winners) == 1 for winners in won.values()), won
    assert len(lost) == 60


def test_hosts_taking_over_the_same_put_back_drops_at_once_get_one_job_each(
    open_host: Any,
) -> None:
    """30 drops whose jobs failed are put back into the inbox (a retry); three hosts
    see them in place and race to take them over (replace_finished, each under its
    own job id): every drop goes to exactly one of them, the others told who won."""
    first = open_host("first")
    for n in range(30):
        first.claim(make_job(n, inputs=files(f"drop-{n}.jpg")))
        first.put(make_job(n, State.FAILED, seq=3, inputs=files(f"drop-{n}.jpg")))
    hosts = [open_host(name) for name in ("a", "b", "c")]

    def claim(index: int, store: PostgresStore, n: int) -> Taken | None:
        job = make_job(1000 * (index + 1) + n, inputs=files(f"drop-{n}.jpg"))
        return store.claim(job, replace_finished=True)

    won, lost = race(hosts, claim)
    assert all(len(winners) == 1 for winners in won.values()), won
    assert len(lost) == 60
    assert all(t.host in ("a", "b", "c") and not t.finished for t in lost), lost


# --- the submit decision --------------------------------------------------------------------


def test_a_submit_takes_a_slot_of_the_account_and_a_task_that_ends_frees_it(
    open_host: Any,
) -> None:
    """max_in_flight counts every host's tasks (submitting or submitted): a third intent
    is refused while two are in flight on two hosts, and written once one ended."""
    a, b = open_host("a"), open_host("b")
    for store, n in ((a, 1), (b, 2), (a, 3)):
        store.put(make_job(n, State.UPLOADED, seq=1))
    assert a.put_intent(intent(1), limits(max_in_flight=2)) is None
    assert b.put_intent(intent(2), limits(max_in_flight=2)) is None
    b.put(dataclasses.replace(intent(2), state=State.SUBMITTED, seq=3, task_id="t2"))
    refused = a.put_intent(intent(3), limits(max_in_flight=2))
    assert refused == SubmitRefusal("slots", in_flight=2)
    assert a.get("job00003") == make_job(3, State.UPLOADED, seq=1)
    b.put(make_job(2, State.SUCCEEDED, seq=4, task_id="t2", video_url="https://v/2"))
    assert a.put_intent(intent(3), limits(max_in_flight=2)) is None
    assert a.get("job00003") is not None and a.get("job00003").state is State.SUBMITTING  # type: ignore[union-attr]


def test_concurrent_submits_of_several_hosts_never_pass_max_in_flight(
    postgres_url: str, open_host: Any
) -> None:
    """Four hosts, each trying 10 intents at once against max_in_flight 5: exactly five
    are written."""
    hosts = [open_host(name) for name in "abcd"]
    for i, store in enumerate(hosts):
        for n in range(10):
            store.put(make_job(100 * i + n, State.UPLOADED, seq=1))
    admitted: list[int] = []
    start = threading.Barrier(len(hosts))

    def submit(i: int, store: PostgresStore) -> None:
        start.wait()
        for n in range(10):
            if store.put_intent(intent(100 * i + n), limits(max_in_flight=5)) is None:
                admitted.append(100 * i + n)

    threads = [threading.Thread(target=submit, args=(i, s)) for i, s in enumerate(hosts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 5
    rows = sql(postgres_url, f"SELECT count(*) FROM {SCHEMA}.jobs WHERE state = 'submitting'")
    assert rows == [(5,)]


def test_the_accounts_token_bucket_spans_hosts(open_host: Any) -> None:
    """requests_per_minute across hosts: a burst of 2 at 60 a minute lets two intents
    of two hosts through, and the third waits for the next token (about a second)."""
    a, b = open_host("a"), open_host("b")
    for store, n in ((a, 1), (b, 2), (a, 3)):
        store.put(make_job(n, State.UPLOADED, seq=1))
    rate = limits(per_minute=60, burst=2)
    assert a.put_intent(intent(1), rate) is None
    assert b.put_intent(intent(2), rate) is None
    refused = a.put_intent(intent(3), rate)
    assert refused is not None and refused.reason == "rate"
    assert 0.5 < refused.retry_in <= 1.0


def test_take_token_refills_by_the_elapsed_time_and_never_books_ahead() -> None:
    """The account's bucket: full when never used, refilled at per_minute / 60 a second
    up to the burst, and an empty one says how long until a token."""
    assert take_token(None, 0.0, 60, 3) == (2.0, 0.0)
    assert take_token(0.25, 0.5, 60, 3) == (0.75, 0.25)
    assert take_token(0.0, 100.0, 60, 3) == (2.0, 0.0)
    left, wait = take_token(0.5, -5.0, 120, 3)
    assert (left, wait) == (0.5, 0.25)


def test_the_days_submit_cap_holds_across_hosts_under_concurrency(
    postgres_url: str, open_host: Any
) -> None:
    """max_submits_per_day 3 across three hosts trying four each at once: three intents
    are written, every other one refused with the cap's hold; a refused submit (the
    gateway said no) gives its submit back."""
    hosts = [open_host(name) for name in "abc"]
    for i, store in enumerate(hosts):
        for n in range(4):
            store.put(make_job(10 * i + n, State.UPLOADED, seq=1))
    refusals: list[SubmitRefusal] = []
    start = threading.Barrier(len(hosts))

    def submit(i: int, store: PostgresStore) -> None:
        start.wait()
        for n in range(4):
            refused = store.put_intent(intent(10 * i + n), limits(max_submits_per_day=3))
            if refused is not None:
                refusals.append(refused)

    threads = [threading.Thread(target=submit, args=(i, s)) for i, s in enumerate(hosts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(refusals) == 9
    assert {(r.reason, r.hold.cap if r.hold else None) for r in refusals} == {
        ("budget", "max_submits_per_day")
    }
    submitting = sql(
        postgres_url, f"SELECT job_id, owner FROM {SCHEMA}.jobs WHERE state = 'submitting'"
    )
    assert len(submitting) == 3
    by_name = {store.host: store for store in hosts}
    job_id, owner = submitting[0]
    refused_job = by_name[owner].get(job_id)
    assert refused_job is not None
    by_name[owner].put(
        dataclasses.replace(refused_job, state=State.UPLOADED, seq=5, intent_at=None, cost=None)
    )
    waiting = [job for store in hosts for job in store.active() if job.job_id != job_id]
    waiting = [job for job in waiting if job.state is State.UPLOADED]
    n = int(waiting[0].job_id[3:])
    store = next(store for store in hosts if store.get(waiting[0].job_id) is not None)
    assert store.put_intent(intent(n), limits(max_submits_per_day=3)) is None


def test_the_days_cost_cap_counts_every_hosts_spend(open_host: Any) -> None:
    """max_cost_per_day 0.20 at 0.10 a submit: two intents on two hosts, then the hold
    names the cost cap and when it lifts (the next midnight)."""
    a, b = open_host("a"), open_host("b")
    for store, n in ((a, 1), (b, 2), (a, 3)):
        store.put(make_job(n, State.UPLOADED, seq=1))
    cap = limits(max_cost_per_day=0.20)
    assert a.put_intent(intent(1), cap) is None
    assert b.put_intent(intent(2), cap) is None
    refused = a.put_intent(intent(3), cap)
    assert refused is not None and refused.hold is not None
    assert (refused.hold.cap, refused.hold.spent, refused.hold.limit) == (
        "max_cost_per_day",
        20,
        20,
    )
    assert refused.hold.lifts_at > time.time()


def test_a_decision_that_cannot_get_the_accounts_lock_is_busy_not_fatal(
    postgres_url: str, open_host: Any
) -> None:
    """A host frozen inside its decision holds the account's row: another host's
    decision gives up after the lock timeout with a 'busy' refusal, writes nothing, and
    decides normally once the lock is free."""
    a = open_host("a")
    a.put(make_job(1, State.UPLOADED, seq=1))
    holder = psycopg.connect(postgres_url)
    holder.execute(f"SELECT * FROM {SCHEMA}.account FOR UPDATE")
    try:
        begun = time.monotonic()
        refused = a.put_intent(intent(1), limits())
        assert refused is not None and refused.reason == "busy"
        assert 1.5 < time.monotonic() - begun < 10
        assert a.get("job00001").state is State.UPLOADED  # type: ignore[union-attr]
    finally:
        holder.rollback()
        holder.close()
    assert a.put_intent(intent(1), limits()) is None


def test_an_intent_of_a_superseded_session_is_fenced(postgres_url: str, open_host: Any) -> None:
    a = open_host("a")
    a.put(make_job(1, State.UPLOADED, seq=1))
    sql(postgres_url, f"UPDATE {SCHEMA}.hosts SET epoch = epoch + 1 WHERE name = 'a'")
    with pytest.raises(JobFenced, match="superseded"):
        a.put_intent(intent(1), limits())
    assert sql(postgres_url, f"SELECT state FROM {SCHEMA}.jobs") == [("uploaded",)]


# --- adoption -------------------------------------------------------------------------------


def test_a_dead_hosts_unfinished_jobs_are_adopted_in_one_go(
    postgres_url: str, open_host: Any
) -> None:
    """Host b stops renewing: once its lease ran out, host a adopts its unfinished jobs
    (not its finished ones), b's epoch moves on, so b's late writes and renewals are
    refused and b knows its session is lost."""
    a = open_host("a", lease_seconds=0.5)
    b = open_host("b", lease_seconds=0.5)
    b.put(make_job(1, State.SUBMITTED, seq=1, task_id="t1"))
    b.put(make_job(2, State.NEW))
    b.put(make_job(3, State.DONE, seq=5))
    epoch = b.epoch

    def adopted() -> list[Job]:
        a.renew()
        return a.adopt()

    jobs = wait_for(adopted, "b's lease to run out")
    assert sorted(job.job_id for job in jobs) == ["job00001", "job00002"]
    assert a.get("job00001") == make_job(1, State.SUBMITTED, seq=1, task_id="t1")
    owners = dict(sql(postgres_url, f"SELECT job_id, owner FROM {SCHEMA}.jobs"))
    assert owners == {"job00001": "a", "job00002": "a", "job00003": "b"}
    assert sql(postgres_url, f"SELECT epoch FROM {SCHEMA}.hosts WHERE name = 'b'") == [(epoch + 1,)]
    with pytest.raises(JobFenced):
        b.put(make_job(1, State.SUCCEEDED, seq=2, task_id="t1", video_url="https://v/1"))
    assert not b.renew() and b.lost
    assert a.adopt() == []


def test_no_host_is_presumed_dead_right_after_an_outage(postgres_url: str, open_host: Any) -> None:
    """After one of its own renewals failed, a host adopts nothing until it renewed
    for a whole lease again: every host gets that time to renew after the database
    came back."""
    a = open_host("a", lease_seconds=1.0)
    b = open_host("b", lease_seconds=0.3)
    b.put(make_job(1, State.SUBMITTED, seq=1, task_id="t1"))
    time.sleep(1.1)  # a's own first lease: adoption is allowed from now on
    sql(
        postgres_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    assert not a.renew()
    assert a.renew() and a.adopt() == []
    begun = time.monotonic()

    def adopted() -> list[Job]:
        with contextlib.suppress(StoreUnavailable):  # a pooled connection cut: once
            return a.adopt() if a.renew() else []
        return []

    jobs = wait_for(adopted, "a whole healthy lease")
    assert time.monotonic() - begun >= 0.8
    assert [job.job_id for job in jobs] == ["job00001"]


def test_a_finished_job_of_another_host_may_be_written_as_retried(
    postgres_url: str, open_host: Any
) -> None:
    """put_finished: host b's failed job becomes host a's when a writes it (a retry),
    while a job still running stays fenced; find reads any host's job."""
    a, b = open_host("a"), open_host("b")
    failed = make_job(1, State.FAILED, seq=4)
    b.put(failed)
    b.put(make_job(2, State.SUBMITTED, seq=1))
    assert a.get("job00001") is None and a.find("job00001") == failed
    retried = make_job(1, State.RETRIED, seq=5, retried_as="job00009")
    a.put_finished(retried)
    assert a.get("job00001") == retried
    assert sql(
        postgres_url, f"SELECT owner, state FROM {SCHEMA}.jobs WHERE job_id = 'job00001'"
    ) == [("a", "retried")]
    with pytest.raises(JobFenced):
        a.put_finished(make_job(2, State.RETRIED, seq=5))
    a.forget("job00001")
    assert a.get("job00001") is None and a.counts()["retried"] == 0


# --- waiting for a slot ---------------------------------------------------------------------


def test_a_task_ending_on_any_host_is_notified(open_host: Any) -> None:
    """watch_account calls back once listening starts, then each time a job of any
    host leaves submitting or submitted, and not for other changes."""
    a, b = open_host("a"), open_host("b")
    b.put(make_job(1, State.SUBMITTED, seq=1, task_id="t1"))
    b.put(make_job(2, State.NEW))

    async def main() -> int:
        calls: list[float] = []
        watcher = asyncio.create_task(a.watch_account(lambda: calls.append(time.monotonic())))
        try:
            await _until(lambda: len(calls) == 1)
            b.put(make_job(2, State.UPLOADED, seq=1))
            await asyncio.sleep(0.3)
            assert len(calls) == 1
            b.put(make_job(1, State.SUCCEEDED, seq=2, task_id="t1", video_url="https://v/1"))
            await _until(lambda: len(calls) == 2)
            return len(calls)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    assert asyncio.run(main()) == 2


async def _until(condition: Any) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


# --- retry requests and the schema ----------------------------------------------------------


def test_retry_requests_are_kept_for_every_host(postgres_url: str, open_host: Any) -> None:
    """A request written by one host's `retry` is matched by another host's intake:
    same path and size, and the bytes when both know them, newest first."""
    open_host("a")
    one, two = PostgresRetryBook(postgres_url), PostgresRetryBook(postgres_url)
    try:
        one.request("job1", [RetryFile("x.jpg", 10, "aa"), RetryFile("x.yaml", 3, "bb")])
        one.request("job2", [RetryFile("x.jpg", 10, "aa")])
        assert two.match([RetryFile("x.jpg", 10, "aa")]) == "job2"
        assert two.match([RetryFile("x.jpg", 10, "aa")], usable=lambda j: j != "job2") == "job1"
        assert two.match([RetryFile("x.jpg", 11, "aa")]) is None
        assert two.match([RetryFile("x.yaml", 3, "")]) == "job1"
        assert two.pending() == {"job1", "job2"}
    finally:
        one.close()
        two.close()


def test_a_database_at_version_1_is_migrated_to_the_account(
    postgres_url: str, open_host: Any
) -> None:
    """A store made by the first version (jobs written) is brought to the current
    schema at the next start: the account row, the slot trigger and the retry
    requests appear; the jobs stay."""
    conn = connect(Database(postgres_url))
    with conn.transaction():
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.execute(
            f"CREATE TABLE {SCHEMA}.schema_migrations (version integer PRIMARY KEY, "
            "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        first = migrations()[0]
        conn.execute(first.sql.encode())
        conn.execute(f"INSERT INTO {SCHEMA}.schema_migrations VALUES (1, %s)", (first.name,))
    conn.close()
    a = open_host("a")
    a.put(make_job(1, State.UPLOADED, seq=1))
    assert sql(postgres_url, f"SELECT max(version) FROM {SCHEMA}.schema_migrations") == [
        (len(migrations()),)
    ]
    assert sql(postgres_url, f"SELECT id, tokens FROM {SCHEMA}.account") == [(1, None)]
    assert a.put_intent(intent(1), limits()) is None
