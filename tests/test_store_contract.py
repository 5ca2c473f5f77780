"""The contract every job store keeps, run against each backend.

A backend is a :class:`JobStore` to write with and a :class:`JobReader` to look
with.  Each test here states one promise of ``ledger/base.py`` and checks it on
every entry of :data:`BACKENDS`: the JSON-lines ledger, the in-memory store, and the
shared PostgreSQL store (on the session's server, a fresh database per test); a
new backend is one more entry there, with a factory that says how to open it and
how to make its disk fail.
What only the JSON-lines ledger does (torn tails, compaction, damage, its lock)
is tested in ``tests/test_ledger.py``; what only the shared store does (migrations,
fencing, hosts) in ``tests/test_postgres.py``.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from seedance_watch.config import BudgetConfig
from seedance_watch.core.budget import BudgetPrices, BudgetTally, JobCost
from seedance_watch.core.jobs import InputFile, Job, State
from seedance_watch.errors import DurabilityError, StateError
from seedance_watch.ledger.base import JobReader, JobStore, SubmitLimits
from seedance_watch.ledger.daemonfile import DaemonStatusFile
from seedance_watch.ledger.jsonl import JsonlReader, Ledger
from seedance_watch.ledger.postgres import PostgresReader, PostgresStore
from seedance_watch.testing.memory import MemoryStore

pytestmark = pytest.mark.timeout(60)


# --- the backends -------------------------------------------------------------------------


@dataclass
class Backend:
    """One kind of store under test.

    ``open`` opens the store (again: the same place, as a restarted daemon would);
    ``reader`` gives a reader of that place; ``pause`` records a pause the way that
    store's daemon records one; ``fail_writes`` makes the store's next write fail as
    a failing disk does, for as long as the monkeypatch context lasts.
    """

    open: Callable[[], JobStore]
    reader: Callable[[], JobReader]
    pause: Callable[[str, str], None]
    fail_writes: Callable[[JobStore, pytest.MonkeyPatch], None]
    opened: list[JobStore] = field(default_factory=list)

    def open_store(self) -> JobStore:
        store = self.open()
        self.opened.append(store)
        return store


def jsonl_backend(tmp_path: Path, _request: pytest.FixtureRequest) -> Backend:
    state = tmp_path / "state"

    def fail_writes(_store: JobStore, mp: pytest.MonkeyPatch) -> None:
        def write(*_args: Any) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        mp.setattr(os, "write", write)

    return Backend(
        open=lambda: Ledger.open(state),
        reader=lambda: JsonlReader(state),
        pause=lambda reason, message: DaemonStatusFile(state, key_source="env").pause(
            reason, message
        ),
        fail_writes=fail_writes,
    )


def memory_backend(_tmp_path: Path, _request: pytest.FixtureRequest) -> Backend:
    stores: list[MemoryStore] = []

    def open_store() -> JobStore:
        # A restart keeps what was put before: the records are the durable part.
        stores.append(MemoryStore(stores[-1].snapshot() if stores else ()))
        return stores[-1]

    def fail_writes(store: JobStore, _mp: pytest.MonkeyPatch) -> None:
        assert isinstance(store, MemoryStore)
        store.fail_writes(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))

    def pause(reason: str, message: str) -> None:
        stores[-1].record_daemon(
            {"pid": os.getpid(), "key_source": "env", "paused": {reason: {"message": message}}}
        )

    return Backend(
        open=open_store,
        reader=lambda: stores[-1],
        pause=pause,
        fail_writes=fail_writes,
    )


#: The server answers every write of a job as a full disk does (SQLSTATE 53100).
DISK_FULL = """
CREATE FUNCTION seedance_watch.disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';
END $$;
CREATE TRIGGER disk_full BEFORE INSERT OR UPDATE ON seedance_watch.jobs
    FOR EACH ROW EXECUTE FUNCTION seedance_watch.disk_full();
"""


def postgres_backend(tmp_path: Path, request: pytest.FixtureRequest) -> Backend:
    url: str = request.getfixturevalue("postgres_url")
    stores: list[PostgresStore] = []
    readers: list[PostgresReader] = []

    def open_store() -> JobStore:
        stores.append(PostgresStore.open(url, host="contract-host"))
        return stores[-1]

    def reader() -> JobReader:
        readers.append(PostgresReader(url, host="contract-host"))
        return readers[-1]

    def fail_writes(_store: JobStore, _mp: pytest.MonkeyPatch) -> None:
        # Stays for the rest of the test: its database is dropped after it.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(DISK_FULL)

    def pause(reason: str, message: str) -> None:
        # The daemon's own writer of its record, pointed at the store (daemon.py wires it).
        status = DaemonStatusFile(tmp_path, key_source="env", write=stores[-1].record_daemon)
        status.pause(reason, message)

    request.addfinalizer(lambda: [r.close() for r in readers])
    return Backend(open=open_store, reader=reader, pause=pause, fail_writes=fail_writes)


#: Every store the code may run on: add a backend here (one line) and it must pass.
BACKENDS: dict[str, Callable[[Path, pytest.FixtureRequest], Backend]] = {
    "jsonl": jsonl_backend,
    "memory": memory_backend,
    "postgres": postgres_backend,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = BACKENDS[request.param](tmp_path, request)
    yield made
    for store in made.opened:
        store.close()


# --- jobs -------------------------------------------------------------------------------


def make_job(n: int, state: State = State.NEW, seq: int = 0, **changes: Any) -> Job:
    job = Job(
        job_id=f"job{n:05d}",
        state=state,
        source=f"sub/image-{n}.jpg",
        sidecar=f"sub/image-{n}.yaml",
        # Created out of id order, so that "sorted as status shows them" means something.
        created_at=1_700_000_000.0 + (n * 7) % 5,
        updated_at=1_700_000_000.0 + n + seq,
        prompt="Clouds drift slowly — «soft» light",
        seq=seq,
    )
    return dataclasses.replace(job, **changes)


def by_id(jobs: list[Job]) -> dict[str, Job]:
    return {job.job_id: job for job in jobs}


def latest(puts: list[Job]) -> dict[str, Job]:
    out: dict[str, Job] = {}
    for job in puts:
        out[job.job_id] = job
    return out


# --- the writer: put and get ----------------------------------------------------------------


def test_put_then_get_returns_the_latest_record_of_each_job(backend: Backend) -> None:
    """get() returns the last put of a job as soon as put() returned; unknown ids: None."""
    store = backend.open_store()
    a0, a1, b = make_job(1), make_job(1, State.UPLOADED, seq=1), make_job(2)
    store.put(a0)
    assert store.get("job00001") == a0
    store.put(b)
    store.put(a1)
    assert store.get("job00001") == a1 and store.get("job00002") == b
    assert store.get("job09999") is None
    assert dict(store.jobs()) == {"job00001": a1, "job00002": b}


def test_what_put_returned_for_survives_a_reopen_with_its_indexes(backend: Backend) -> None:
    """Every acknowledged put is there after the store is closed and opened again, and
    active(), counts() and find_done_by_content_key() agree with it."""
    store = backend.open_store()
    puts = [
        make_job(1),
        make_job(2, State.SUBMITTED, seq=1, content_key="k2"),
        make_job(1, State.UPLOADED, seq=1),
        make_job(3, State.DONE, seq=4, content_key="k3"),
        make_job(2, State.FAILED, seq=2, content_key="k2"),
    ]
    for job in puts:
        store.put(job)
    store.close()
    again = backend.open_store()
    assert dict(again.jobs()) == latest(puts)
    assert {job.job_id for job in again.active()} == {"job00001"}
    counts = again.counts()
    assert (counts["uploaded"], counts["done"], counts["failed"], sum(counts.values())) == (
        1,
        1,
        1,
        3,
    )
    assert again.find_done_by_content_key("k3") == puts[3]
    assert again.find_done_by_content_key("k2") is None


def test_a_closed_store_refuses_puts(backend: Backend) -> None:
    """put() after close() raises StateError and records nothing."""
    store = backend.open_store()
    store.put(make_job(1))
    store.close()
    with pytest.raises(StateError):
        store.put(make_job(2))
    assert backend.open_store().get("job00002") is None


def test_a_failed_write_is_fatal_and_leaves_the_last_durable_record(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write the disk refuses raises DurabilityError; the job keeps its last durable
    record, writable() turns False, and later puts are refused even once the disk
    works again (after a failed fsync a retry could claim a durability it lacks)."""
    store = backend.open_store()
    old = make_job(1)
    store.put(old)
    assert store.writable()
    with monkeypatch.context() as mp:
        backend.fail_writes(store, mp)
        with pytest.raises(DurabilityError):
            store.put(make_job(1, State.UPLOADED, seq=1))
    assert store.get("job00001") == old
    assert not store.writable()
    with pytest.raises(DurabilityError, match="refuses writes"):
        store.put(make_job(2))
    assert store.get("job00002") is None


def test_a_record_that_cannot_be_encoded_is_refused_before_it_is_stored(
    backend: Backend,
) -> None:
    """A NaN in a record is refused by put() (ValueError), and nothing changes."""
    store = backend.open_store()
    store.put(make_job(1))
    with pytest.raises(ValueError):
        store.put(make_job(1, State.SUCCEEDED, seq=1, usage={"seconds": float("nan")}))
    assert store.get("job00001") == make_job(1)
    assert store.writable()


# --- the writer's indexes -----------------------------------------------------------------


def test_active_holds_the_unfinished_jobs_and_follows_every_put(backend: Backend) -> None:
    """active() is every job not DONE or FAILED; a job that ends leaves it."""
    store = backend.open_store()
    store.put(make_job(1))
    store.put(make_job(2, State.SUBMITTED, seq=1))
    store.put(make_job(3, State.FAILED, seq=1))
    assert {job.job_id for job in store.active()} == {"job00001", "job00002"}
    store.put(make_job(2, State.DONE, seq=2))
    assert store.active() == [make_job(1)]


def test_counts_name_every_state_and_follow_every_put(backend: Backend) -> None:
    """counts() has every state (zeros included) and moves a job from its old state."""
    store = backend.open_store()
    assert store.counts() == {state.value: 0 for state in State}
    store.put(make_job(1))
    store.put(make_job(2))
    store.put(make_job(1, State.UPLOADED, seq=1))
    expected = {state.value: 0 for state in State} | {"new": 1, "uploaded": 1}
    assert store.counts() == expected


def test_counts_by_kind_name_every_state_of_each_kind_seen(backend: Backend) -> None:
    """counts_by_kind(): every (kind, state) of each kind in the store, zeros included."""
    store = backend.open_store()
    assert store.counts_by_kind() == {}
    store.put(make_job(1))
    store.put(make_job(2, kind="text"))
    store.put(make_job(1, State.UPLOADED, seq=1))
    counts = store.counts_by_kind()
    assert set(counts) == {(kind, state.value) for kind in ("image", "text") for state in State}
    assert counts[("image", "new")] == 0 and counts[("image", "uploaded")] == 1
    assert counts[("text", "new")] == 1 and sum(counts.values()) == 2


def test_find_done_by_content_key_is_the_newest_done_job(backend: Backend) -> None:
    """The DONE job with that key updated last (not the one put last); a failed or
    unfinished job with the key never counts."""
    store = backend.open_store()
    store.put(make_job(2, State.SUBMITTED, seq=2, content_key="k1"))
    assert store.find_done_by_content_key("k1") is None
    newer = make_job(2, State.DONE, seq=9, content_key="k1")
    older = make_job(1, State.DONE, seq=5, content_key="k1")
    store.put(newer)
    store.put(older)
    store.put(make_job(3, State.FAILED, seq=20, content_key="k1"))
    store.put(make_job(4, State.FAILED, seq=3, content_key="k2"))
    assert store.find_done_by_content_key("k1") == newer
    assert store.find_done_by_content_key("k2") is None
    assert store.find_done_by_content_key("nope") is None


def test_a_lone_host_owns_its_drops_and_its_submits(backend: Backend) -> None:
    """One host alone (the only meaning a JSON-lines or memory store has): every drop's
    claim is granted, a submit intent with room to spare is written as a put is, find
    is get, the lease renews and there is no one to adopt from."""
    store = backend.open_store()
    job = make_job(1, inputs=(InputFile("image", "sub/image-1.jpg", "ab", 3, 1, 2, 3),))
    assert store.claim(job) is None
    store.put(job)
    uploaded = make_job(1, State.UPLOADED, seq=1, inputs=job.inputs)
    store.put(uploaded)
    cost = JobCost.of("generation", Decimal("0.10")).to_dict()
    intent = dataclasses.replace(
        uploaded, state=State.SUBMITTING, seq=2, intent_at=1_700_000_100.0, cost=cost
    )
    prices = BudgetPrices.from_config(BudgetConfig())
    limits = SubmitLimits(10, 60.0, 10.0, prices, cents=10, at=1_700_000_100.0)
    assert store.put_intent(intent, limits) is None
    assert store.get(job.job_id) == intent == store.find(job.job_id)
    assert store.find("nothing") is None
    assert store.renew() and not store.lost and store.adopt() == []


def test_a_snapshot_is_a_copy_that_later_puts_do_not_change(backend: Backend) -> None:
    """snapshot() (the writer's and the reader's) is the state at that moment: later
    puts do not show in it, and changing the list changes nothing in the store."""
    store = backend.open_store()
    reader = backend.reader()
    store.put(make_job(1))
    store.put(make_job(2))
    mine, theirs = store.snapshot(), reader.snapshot()
    before = by_id(mine)
    store.put(make_job(1, State.UPLOADED, seq=1))
    store.put(make_job(3))
    assert by_id(mine) == before and by_id(theirs) == before
    mine.clear()
    theirs.clear()
    assert len(store.snapshot()) == 3 and len(reader.snapshot()) == 3


# --- the reader -------------------------------------------------------------------------


def test_the_reader_sees_every_acknowledged_put_in_status_order(backend: Backend) -> None:
    """reader.snapshot() is the latest record of every job, oldest first (created_at,
    then id), while the store is open and held."""
    store = backend.open_store()
    reader = backend.reader()
    assert reader.exists() and reader.where
    puts = [make_job(n) for n in range(1, 8)] + [make_job(4, State.UPLOADED, seq=1)]
    for job in puts:
        store.put(job)
    seen = reader.snapshot()
    assert by_id(seen) == latest(puts)
    assert [job.job_id for job in seen] == [
        job.job_id for job in sorted(latest(puts).values(), key=lambda j: (j.created_at, j.job_id))
    ]
    assert [job.job_id for job in seen] != sorted(job.job_id for job in seen)


def test_the_readers_counts_are_the_stores(backend: Backend) -> None:
    """reader.counts(): every state, zeros included, as the writer counts them."""
    store = backend.open_store()
    reader = backend.reader()
    assert reader.counts() == {state.value: 0 for state in State}
    for job in (make_job(1), make_job(2, State.DONE, seq=1), make_job(3, State.FAILED, seq=1)):
        store.put(job)
    assert reader.counts() == store.counts()
    assert reader.counts()["done"] == 1 and sum(reader.counts().values()) == 3


NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
DAY = 86_400.0


def costing(cents: int) -> dict[str, Any]:
    return JobCost.of("generation", Decimal(cents) / 100).to_dict()


def test_the_tally_counts_every_submit_on_its_day_at_its_recorded_cost(
    backend: Backend,
) -> None:
    """reader.tally(prices): each job whose submit counts, on the day of its intent, at
    the cost recorded on it; jobs never submitted and duplicates do not count."""
    store = backend.open_store()
    reader = backend.reader()
    prices = BudgetPrices.from_config(BudgetConfig(max_cost_per_day=5.0))
    jobs = [
        make_job(1, State.SUBMITTED, seq=1, intent_at=NOW - 60, cost=costing(50)),
        make_job(2, State.DONE, seq=3, intent_at=NOW - 120, cost=costing(25)),
        make_job(3, State.FAILED, seq=3, intent_at=NOW - 2 * DAY, cost=costing(100)),
        make_job(4),
        make_job(5, State.DONE, seq=2, duplicate_of="job00002"),
    ]
    for job in jobs:
        store.put(job)
    tally = reader.tally(prices)
    assert tally.spent(NOW) == (75, 2)
    assert tally.spent(NOW - 2 * DAY) == (100, 1)
    assert tally.today(NOW)["remaining"] == 4.25
    assert tally.today(NOW) == BudgetTally.from_jobs(prices, reader.snapshot()).today(NOW)


def test_the_holder_is_the_open_store_and_none_once_it_closed(backend: Backend) -> None:
    """While a store is open, holder() names this process; after close(), None."""
    store = backend.open_store()
    reader = backend.reader()
    holder = reader.holder()
    assert holder is not None and holder.pid == os.getpid()
    assert f"pid {os.getpid()}" in holder.description
    store.close()
    assert reader.holder() is None


def test_the_daemons_last_pauses_outlive_it(backend: Backend) -> None:
    """daemon_record(): None until a daemon recorded itself; then its pauses, also after
    the store was closed (the pauses a run ended with)."""
    store = backend.open_store()
    reader = backend.reader()
    assert reader.daemon_record() is None
    backend.pause("credentials", "the gateway refused the key")
    store.close()
    record = reader.daemon_record()
    assert record is not None and record["pid"] == os.getpid()
    assert record["paused"]["credentials"]["message"] == "the gateway refused the key"


def test_a_reader_racing_a_writer_always_sees_the_state_after_some_put(
    backend: Backend,
) -> None:
    """Each reader snapshot taken while another thread puts is the state after one of
    the puts (never half of one, never a later put without an earlier one)."""
    puts = [make_job(g % 5, seq=g) for g in range(150)]
    store = backend.open_store()
    reader = backend.reader()
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for job in puts:
                store.put(job)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not done.is_set() or reads == 0:
        seen = by_id(reader.snapshot())
        reads += 1
        last = max((job.seq for job in seen.values()), default=-1)
        assert seen == latest(puts[: last + 1]), last
    thread.join(timeout=30)
    assert not errors
    assert by_id(reader.snapshot()) == latest(puts)
