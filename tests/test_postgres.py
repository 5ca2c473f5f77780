"""What only the shared PostgreSQL store does: migrations, sessions and fencing, hosts
and leases, the database URL and its password, ``ledger import``.

Every test runs on the session's own server (``postgres_server`` in conftest), in a
fresh database.  What every store does is in ``tests/test_store_contract.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog

from seedance_watch import cli
from seedance_watch.commands.status import status_report
from seedance_watch.config import BudgetConfig, load_config
from seedance_watch.core.budget import BudgetPrices, BudgetTally, JobCost
from seedance_watch.core.jobs import Job, State
from seedance_watch.errors import (
    DurabilityError,
    JobFenced,
    LedgerLocked,
    SchemaTooNew,
    StoreUnavailable,
)
from seedance_watch.ledger import open_reader, open_store
from seedance_watch.ledger.jsonl import JsonlReader, Ledger
from seedance_watch.ledger.postgres import PostgresReader, PostgresStore
from seedance_watch.ledger.postgres.schema import MIGRATION_LOCK, migrations
from seedance_watch.logs import CHATTY_LOGGERS, clear_secrets, configure_logging
from seedance_watch.simulator import Simulator, SimulatorConfig
from seedance_watch.testing.pgserver import PostgresServer
from seedance_watch.testing.s3emulator import S3Emulator

from .helpers import run_once, write_config

pytestmark = pytest.mark.timeout(60)

DEADLINE = 20.0


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


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def stores(postgres_url: str) -> Iterator[list[PostgresStore]]:
    """Stores a test opens, closed after it (also when it fails)."""
    opened: list[PostgresStore] = []
    yield opened
    for store in opened:
        store.close()


@pytest.fixture
def open_host(postgres_url: str, stores: list[PostgresStore]) -> Any:
    def _open(host: str, **kwargs: Any) -> PostgresStore:
        store = PostgresStore.open(postgres_url, host=host, **kwargs)
        stores.append(store)
        return store

    return _open


def sql(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return list(cursor.fetchall()) if cursor.description else []


# --- migrations -------------------------------------------------------------------------


def test_migrations_are_applied_once_and_recorded(postgres_url: str, open_host: Any) -> None:
    """The first open creates the schema and records each migration; later opens
    change nothing and log no migration."""
    with structlog.testing.capture_logs() as first:
        open_host("a").close()
    applied = sql(postgres_url, "SELECT version, name FROM seedance_watch.schema_migrations")
    assert applied == [(m.version, m.name) for m in migrations()]
    assert [e["version"] for e in first if e["event"] == "store.migrated"] == [
        m.version for m in migrations()
    ]
    with structlog.testing.capture_logs() as again:
        open_host("a")
    assert not [e for e in again if e["event"] == "store.migrated"]
    assert sql(postgres_url, "SELECT count(*) FROM seedance_watch.schema_migrations") == [
        (len(migrations()),)
    ]


def test_two_hosts_opening_a_new_database_at_once_migrate_it_once(
    postgres_url: str, open_host: Any
) -> None:
    """Migrations wait for the advisory lock: while another session holds it, an open
    waits (nothing is created); once it is released, both of two opens started at the
    same moment succeed and each migration is recorded once."""
    holder = psycopg.connect(postgres_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    results: dict[str, Any] = {}
    start = threading.Barrier(2)

    def open_one(host: str) -> None:
        start.wait()
        try:
            results[host] = open_host(host)
        except BaseException as exc:
            results[host] = exc

    threads = [threading.Thread(target=open_one, args=(h,)) for h in ("a", "b")]
    for thread in threads:
        thread.start()
    try:
        wait_for(
            lambda: (
                sql(
                    postgres_url,
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                )
                == [(2,)]
            ),
            "both opens to wait for the migration lock",
        )
        assert sql(postgres_url, "SELECT to_regclass('seedance_watch.jobs')") == [(None,)]
    finally:
        holder.close()
    for thread in threads:
        thread.join(timeout=DEADLINE)
    assert all(isinstance(results[h], PostgresStore) for h in ("a", "b")), results
    assert sql(postgres_url, "SELECT version FROM seedance_watch.schema_migrations") == [
        (m.version,) for m in migrations()
    ]


def test_a_schema_newer_than_the_code_is_refused(postgres_url: str, open_host: Any) -> None:
    """A database migrated by a newer seedance-watch: the store refuses to open and
    the reader to read, saying which version and what to do; nothing is written."""
    open_host("a").close()
    newer = len(migrations()) + 1
    sql(
        postgres_url,
        "INSERT INTO seedance_watch.schema_migrations (version, name) VALUES (%s, 'future')",
        (newer,),
    )
    before = sql(postgres_url, "SELECT name, epoch FROM seedance_watch.hosts")
    with pytest.raises(SchemaTooNew, match=rf"version {newer}, newer than .*upgrade this host"):
        PostgresStore.open(postgres_url, host="a")
    reader = PostgresReader(postgres_url, host="a")
    try:
        with pytest.raises(SchemaTooNew):
            reader.snapshot()
    finally:
        reader.close()
    assert sql(postgres_url, "SELECT name, epoch FROM seedance_watch.hosts") == before


def test_a_reader_of_a_database_without_the_store_sees_nothing(postgres_url: str) -> None:
    """Before any daemon ran: the reader neither fails nor creates anything."""
    reader = PostgresReader(postgres_url, host="a")
    try:
        assert not reader.exists()
        assert reader.snapshot() == [] and reader.hosts() == [] and reader.owners() == {}
        assert reader.holder() is None and reader.daemon_record() is None
        assert sum(reader.counts().values()) == 0
    finally:
        reader.close()
    assert sql(postgres_url, "SELECT to_regnamespace('seedance_watch')") == [(None,)]


# --- sessions and fencing -----------------------------------------------------------------


def test_a_second_daemon_under_the_same_host_name_is_refused(
    postgres_url: str, open_host: Any
) -> None:
    """One live daemon per host name (the session holds its lock); after it closed, the
    next session of that name opens with a newer epoch."""
    first = open_host("a")
    with pytest.raises(LedgerLocked, match=rf"'a' is in use .*pid {os.getpid()}"):
        PostgresStore.open(postgres_url, host="a")
    first.close()
    assert open_host("a").epoch == first.epoch + 1


def test_a_write_of_a_job_another_host_owns_is_fenced(postgres_url: str, open_host: Any) -> None:
    """Host b cannot write a job host a owns: JobFenced names the owner, and the
    record and its owner stay as host a wrote them."""
    a, b = open_host("a"), open_host("b")
    mine = make_job(1)
    a.put(mine)
    with pytest.raises(JobFenced, match="host 'a' owns it now") as info:
        b.put(make_job(1, State.UPLOADED, seq=1))
    assert (info.value.job_id, info.value.host, info.value.owner) == ("job00001", "b", "a")
    assert b.get("job00001") is None
    reader = PostgresReader(postgres_url, host="a")
    try:
        assert reader.snapshot() == [mine] and reader.owners() == {"job00001": "a"}
    finally:
        reader.close()


def test_a_host_whose_job_was_adopted_changes_nothing_of_it(
    postgres_url: str, open_host: Any
) -> None:
    """Once another host took a job over (as adoption does: owner and epoch in one
    update), the old owner's late write is refused and the adopter's goes through."""
    a, b = open_host("a"), open_host("b")
    a.put(make_job(1, State.SUBMITTED, seq=1))
    sql(
        postgres_url,
        "UPDATE seedance_watch.jobs SET owner = 'b', owner_epoch = %s WHERE job_id = 'job00001'",
        (b.epoch,),
    )
    late = make_job(1, State.SUCCEEDED, seq=2)
    with pytest.raises(JobFenced, match="host 'b' owns it now"):
        a.put(late)
    adopted = make_job(1, State.SUCCEEDED, seq=2, video_url="https://v/1.mp4")
    b.put(adopted)
    assert sql(postgres_url, "SELECT record->>'video_url' FROM seedance_watch.jobs") == [
        ("https://v/1.mp4",)
    ]


def test_a_superseded_session_is_fenced_and_loses_its_lease(
    postgres_url: str, open_host: Any
) -> None:
    """When the host's epoch moves on (a host declaring it dead, or a newer session),
    its writes -- of its own jobs and of new ones -- are refused, its lease is not
    renewed and it is no longer writable."""
    a = open_host("a", renew=False)
    a.put(make_job(1))
    assert a.renew() and a.writable()
    sql(postgres_url, "UPDATE seedance_watch.hosts SET epoch = epoch + 1 WHERE name = 'a'")
    with pytest.raises(JobFenced, match="superseded"):
        a.put(make_job(1, State.UPLOADED, seq=1))
    with pytest.raises(JobFenced, match="superseded"):
        a.put(make_job(2))
    assert not a.renew() and not a.writable()
    assert sql(postgres_url, "SELECT job_id, state FROM seedance_watch.jobs") == [
        ("job00001", "new")
    ]


def test_a_new_session_takes_its_hosts_unfinished_jobs_over(
    postgres_url: str, open_host: Any
) -> None:
    """A restarted host loads the jobs it owns; its unfinished ones move to the new
    session's epoch, so that a late write of the older session would be fenced."""
    first = open_host("a")
    first.put(make_job(1, State.SUBMITTED, seq=1))
    first.put(make_job(2, State.DONE, seq=3))
    first.close()
    again = open_host("a")
    assert set(again.jobs()) == {"job00001", "job00002"}
    assert [job.job_id for job in again.active()] == ["job00001"]
    epochs = dict(sql(postgres_url, "SELECT job_id, owner_epoch FROM seedance_watch.jobs"))
    assert epochs == {"job00001": again.epoch, "job00002": first.epoch}


def test_dedupe_finds_a_done_job_of_any_host(open_host: Any) -> None:
    """find_done_by_content_key spans the hosts: host b finds what host a finished."""
    a, b = open_host("a"), open_host("b")
    done = make_job(1, State.DONE, seq=4, content_key="k1")
    a.put(done)
    assert b.find_done_by_content_key("k1") == done


def test_a_lost_connection_is_unavailable_and_nothing_is_latched(
    postgres_url: str, open_host: Any
) -> None:
    """The database dropping the store's connections: the put raises StoreUnavailable
    (not a durability failure), and the next put goes through on a new connection."""
    store = open_host("a", renew=False)
    store.put(make_job(1))
    terminate_connections(postgres_url)
    with pytest.raises(StoreUnavailable, match="out of reach"):
        store.put(make_job(1, State.UPLOADED, seq=1))
    store.put(make_job(1, State.UPLOADED, seq=1))
    assert store.get("job00001") == make_job(1, State.UPLOADED, seq=1)
    assert store.writable()


def test_after_a_failed_renewal_writes_wait_for_the_next_one(
    postgres_url: str, open_host: Any
) -> None:
    """A renewal of the lease that did not reach the database makes every write fail at
    once as StoreUnavailable (the daemon's loop never waits for a pooled connection to
    a database that is away); the next renewal that reaches it lets them through."""
    store = open_host("a", renew=False)
    terminate_connections(postgres_url)
    assert not store.renew()
    with pytest.raises(StoreUnavailable, match="the last renewal of the lease failed"):
        store.put(make_job(1))
    assert store.get("job00001") is None and not store.writable()
    assert store.renew()
    store.put(make_job(1))
    assert store.get("job00001") == make_job(1) and store.writable()


def test_a_write_the_server_refuses_is_a_durability_error(
    postgres_url: str, open_host: Any
) -> None:
    """A server that answers a write with an error (here: the table is read-only to
    us) is a DurabilityError, and the store refuses writes from then on."""
    store = open_host("a", renew=False)
    sql(
        postgres_url,
        "CREATE FUNCTION seedance_watch.no() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'read only' USING ERRCODE = 'read_only_sql_transaction'; END $$; "
        "CREATE TRIGGER no BEFORE INSERT ON seedance_watch.jobs "
        "FOR EACH ROW EXECUTE FUNCTION seedance_watch.no()",
    )
    with pytest.raises(DurabilityError, match="refused to write job job00001"):
        store.put(make_job(1))
    with pytest.raises(DurabilityError, match="refuses writes"):
        store.put(make_job(2))


def test_puts_commit_synchronously_where_the_server_does_not(open_host: Any) -> None:
    """The test server runs with synchronous_commit off; the store's sessions turn it
    back on, so that a put is durable when it returns."""
    store = open_host("a", renew=False)
    with store._connection() as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        conn.execute("SET synchronous_commit = off")  # a pool connection reused...
    store._pool.close()  # type: ignore[union-attr]
    store._pool = store._open_pool(1)
    with store._connection() as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)


# --- hosts and leases --------------------------------------------------------------------


def test_hosts_are_listed_with_their_leases_by_the_databases_clock(
    postgres_url: str, open_host: Any
) -> None:
    """hosts() names every host that joined: alive while its lease runs, not alive once
    it stopped or its lease ran out (renewed_at by the database's clock)."""
    open_host("a")
    gone = open_host("b")
    gone.close()
    open_host("c", lease_seconds=0.3, renew=False)
    reader = PostgresReader(postgres_url, host="a")
    try:
        wait_for(
            lambda: (
                {h.name: h.alive for h in reader.hosts() or []}
                == {"a": True, "b": False, "c": False}
            ),
            "c's lease to run out",
        )
        hosts = reader.hosts() or []
        now = sql(postgres_url, "SELECT now()")[0][0]
        for host in hosts:
            renewed = host.to_dict()["renewed_at"]
            assert abs((now - _parse(renewed)).total_seconds()) < DEADLINE
        assert reader.holder() is not None
        dead = PostgresReader(postgres_url, host="c")
        assert dead.holder() is None
        dead.close()
    finally:
        reader.close()


def _parse(iso: str) -> dt.datetime:
    return dt.datetime.fromisoformat(iso)


def test_the_lease_is_renewed_while_the_store_is_open(postgres_url: str, open_host: Any) -> None:
    """The store's own thread renews the lease every lease_seconds / 3: a host with a
    short lease is renewed again and again, and is alive at every look."""
    open_host("a", lease_seconds=0.6)
    reader = PostgresReader(postgres_url, host="a")
    seen: set[Any] = set()

    def renewed_while_alive() -> bool:
        assert reader.holder() is not None
        seen.add(sql(postgres_url, "SELECT renewed_at FROM seedance_watch.hosts")[0][0])
        return len(seen) >= 4

    try:
        wait_for(renewed_while_alive, "three renewals")
    finally:
        reader.close()


def terminate_connections(url: str) -> None:
    """End every connection to the test's database but the caller's (as a restarted
    server or a network cut does)."""
    sql(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )


def test_a_renewal_after_a_lost_connection_takes_the_lease_back(
    postgres_url: str, open_host: Any
) -> None:
    """The session's connection lost: one renewal fails, the next reconnects and takes
    the host lock back.  When another daemon took the name meanwhile, this session is
    over: no renewal succeeds and the store is no longer writable."""
    store = open_host("a", renew=False)
    terminate_connections(postgres_url)
    assert not store.renew()
    assert store.renew() and store.writable()
    terminate_connections(postgres_url)
    other = open_host("a")
    assert not store.renew() and not store.renew()
    assert not store.writable() and other.writable()
    with pytest.raises(JobFenced, match="superseded"):
        for _ in range(5):  # the pooled connections were cut too: each fails once
            with contextlib.suppress(StoreUnavailable):
                store.put(make_job(1))


def test_the_tally_summed_by_the_database_is_the_one_from_the_jobs(open_host: Any) -> None:
    """tally() groups by day in budget.timezone in SQL, across a DST change, and prices
    the records without a recorded cost: the same as BudgetTally.from_jobs."""
    store = open_host("a", renew=False)
    prices = BudgetPrices.from_config(BudgetConfig(timezone="Europe/Paris"))
    base = 1_711_839_600.0  # 2024-03-31 00:00 Paris, the night the clocks go forward
    jobs = []
    for n in range(40):
        at = base - 3 * 3600 + n * 1799.7
        cost = JobCost.of("generation", prices.cost_of(make_job(n)).rate).to_dict()
        jobs.append(make_job(n, State.SUBMITTED, seq=1, intent_at=at, cost=cost if n % 7 else None))
    jobs.append(make_job(99, State.DONE, seq=2, duplicate_of="job00001"))
    for job in jobs:
        store.put(job)
    reader = PostgresReader(store.database, host="a")
    try:
        tally = reader.tally(prices)
    finally:
        reader.close()
    expected = BudgetTally.from_jobs(prices, jobs)
    for n in range(-2, 24):
        at = base + n * 3600
        assert tally.spent(at) == expected.spent(at), n


# --- the database URL ---------------------------------------------------------------------


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """Everything logged (ours and psycopg's), rendered as the daemon renders it."""
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    chatty = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    configure_logging(fmt="json", level="debug", stream=out)
    yield out
    structlog.reset_defaults()
    clear_secrets()
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    for name, lvl in chatty.items():
        logging.getLogger(name).setLevel(lvl)


def test_a_database_url_is_never_logged_or_shown_with_its_password(
    postgres_server: PostgresServer, postgres_url: str, logged: io.StringIO
) -> None:
    """Opening, writing, closing, reading and failing to connect, with a password in the
    URL: no log line, no error message and no reader location holds the password."""
    secret = "hunter2-s3cret"
    database = postgres_url.rsplit("/", 1)[1]
    url = postgres_server.url(database, password=secret)
    store = PostgresStore.open(url, host="a")
    store.put(make_job(1))
    store.close()
    reader = PostgresReader(url, host="a")
    try:
        assert secret not in reader.where and "***" in reader.where
        assert reader.snapshot() == [make_job(1)]
    finally:
        reader.close()
    unreachable = f"postgresql://postgres:{secret}@127.0.0.1:1/{database}"
    with pytest.raises(StoreUnavailable) as info:
        PostgresStore.open(unreachable, host="a")
    assert secret not in info.value.message and "127.0.0.1:1" in info.value.message
    structlog.get_logger("test").info("probe", text=f"conninfo password={secret} host=h")
    text = logged.getvalue()
    assert "store.opened" in text and "probe" in text
    assert secret not in text


def config_for(tmp_path: Path, **cluster: Any) -> Any:
    folder = tmp_path / "cfg"
    folder.mkdir(exist_ok=True)
    path = folder / "sw.yaml"
    path.write_text(
        json.dumps({"storage": {"bucket": "b"}, "cluster": cluster, "log": {"format": "json"}})
    )
    return path


def test_the_url_may_come_from_the_credentials_directory(
    tmp_path: Path, postgres_server: PostgresServer, postgres_url: str
) -> None:
    """$CREDENTIALS_DIRECTORY/database-url (the whole URL, password included) chooses
    the shared store even without cluster.database, and wins over it; without the
    file the JSON-lines ledger is opened, as always."""
    config = load_config(config_for(tmp_path, name="a"), {})
    creds = tmp_path / "creds"
    creds.mkdir()
    environ = {"CREDENTIALS_DIRECTORY": str(creds)}
    plain = open_store(config, environ=environ)
    assert isinstance(plain, Ledger)
    plain.close()
    database = postgres_url.rsplit("/", 1)[1]
    (creds / "database-url").write_text(postgres_server.url(database, password="pw-x") + "\n")
    store = open_store(config, environ=environ)
    try:
        assert isinstance(store, PostgresStore) and store.host == "a"
        reader = open_reader(config, environ=environ)
        assert isinstance(reader, PostgresReader) and "pw-x" not in reader.where
        reader.close()
    finally:
        store.close()
    elsewhere = load_config(
        config_for(tmp_path, name="a", database="postgresql://nobody@127.0.0.1:1/none"), {}
    )
    store = open_store(elsewhere, environ=environ)
    assert isinstance(store, PostgresStore)
    store.close()


# --- ledger import and status ---------------------------------------------------------------


def test_ledger_import_copies_the_ledger_once(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ledger import` copies every record of paths.state, owned by cluster.name;
    importing again changes nothing; a daemon started as that host takes the
    unfinished jobs on."""
    path = config_for(tmp_path, database=postgres_url, name="importer")
    config = load_config(path, {})
    ledger = Ledger.open(config.paths.state)
    for job in (
        make_job(1),
        make_job(2, State.SUBMITTED, seq=2, task_id="t2", intent_at=1.7e9),
        make_job(3, State.DONE, seq=5, content_key="k3"),
        make_job(1, State.UPLOADED, seq=1),
    ):
        ledger.put(job)
    ledger.close()
    assert cli.main(["ledger", "import", "--config", str(path)]) == 0
    assert "imported 3 job(s)" in capsys.readouterr().out
    table = "SELECT job_id, revision, record::text FROM seedance_watch.jobs ORDER BY job_id"
    first = sql(postgres_url, table)
    reader = PostgresReader(postgres_url, host="importer")
    try:
        assert reader.snapshot() == JsonlReader(config.paths.state).snapshot()
        assert set(reader.owners().values()) == {"importer"}
    finally:
        reader.close()
    assert cli.main(["ledger", "import", "--config", str(path)]) == 0
    assert "imported 0 job(s)" in capsys.readouterr().out
    assert sql(postgres_url, table) == first
    store = PostgresStore.open(postgres_url, host="importer", renew=False)
    try:
        assert {job.job_id for job in store.active()} == {"job00001", "job00002"}
        store.put(make_job(2, State.SUCCEEDED, seq=3))
    finally:
        store.close()


def test_ledger_import_refuses_while_a_daemon_holds_the_ledger(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A running daemon's ledger is not copied (exit 2, naming it); no ledger at all:
    nothing to import (exit 1); no database configured: a config error (exit 2)."""
    path = config_for(tmp_path, database=postgres_url, name="importer")
    config = load_config(path, {})
    assert cli.main(["ledger", "import", "--config", str(path)]) == 1
    assert "nothing to import" in capsys.readouterr().err
    ledger = Ledger.open(config.paths.state)
    try:
        assert cli.main(["ledger", "import", "--config", str(path)]) == 2
        assert f"pid {os.getpid()}" in capsys.readouterr().err
    finally:
        ledger.close()
    assert cli.main(["ledger", "import", "--config", str(config_for(tmp_path))]) == 2
    assert "cluster.database" in capsys.readouterr().err


def test_status_json_names_each_jobs_host_and_every_host(
    tmp_path: Path, postgres_url: str, open_host: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status --json` on a shared store: "host" on each job, "hosts" with every host's
    name, last renewal and whether it is alive; the daemon is this host's."""
    a, b = open_host("a"), open_host("b")
    a.put(make_job(1))
    b.put(make_job(2))
    b.close()
    path = config_for(tmp_path, database=postgres_url, name="a")
    assert cli.main(["status", "--json", "--config", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(j["job_id"], j["host"]) for j in report["jobs"]] == [
        ("job00001", "a"),
        ("job00002", "b"),
    ]
    assert [(h["name"], h["alive"]) for h in report["hosts"]] == [("a", True), ("b", False)]
    assert all(set(h) == {"name", "renewed_at", "alive"} for h in report["hosts"])
    assert report["daemon"]["running"] and report["daemon"]["pid"] == os.getpid()
    assert cli.main(["status", "--config", str(path)]) == 0
    assert "hosts: a (alive" in capsys.readouterr().out


# --- the daemon on the shared store ---------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(queued_seconds=0.05, running_seconds=0.2, video_seconds=0.5)
    with Simulator(config) as simulator:
        yield simulator


def test_the_daemon_runs_on_the_shared_store(
    tmp_path: Path,
    postgres_url: str,
    s3_server: S3Emulator,
    sim: Simulator,
    write_pair: Any,
) -> None:
    """`run --once` with cluster.database: the jobs are in the database (owned by this
    host), none in paths.state; an identical drop in a later run is a duplicate found
    in the database (one submit); `status` shows the jobs and the stopped host."""
    extra = f"cluster: {{database: '{postgres_url}', name: alpha}}\n"
    config_path = write_config(tmp_path, s3_server, sim, extra=extra)
    write_pair(tmp_path / "inbox", "beach")
    first, config = run_once(config_path)
    write_pair(tmp_path / "inbox", "beach")
    second, _ = run_once(config_path)
    assert first.exit_code == second.exit_code == 0 and len(sim.submits) == 1
    assert not list(config.paths.state.glob("*.jsonl"))
    reader = open_reader(config)
    try:
        report = status_report(reader)
    finally:
        reader.close()
    assert report["counts"] == {"done": 2}
    assert {job["host"] for job in report["jobs"]} == {"alpha"}
    assert [(h["name"], h["alive"]) for h in report["hosts"]] == [("alpha", False)]
    duplicate = json.loads((tmp_path / "outbox" / "beach-2.json").read_text())
    assert duplicate["duplicate_of"] == first.summary.done[0]


def test_a_pause_is_kept_in_the_database_for_this_host(
    tmp_path: Path,
    postgres_url: str,
    s3_server: S3Emulator,
    sim: Simulator,
    write_pair: Any,
) -> None:
    """A refused key on the shared store: the pause goes to this host's record in the
    database (status shows it), not to a daemon.json beside a ledger."""
    extra = f"cluster: {{database: '{postgres_url}', name: alpha}}\n"
    config_path = write_config(tmp_path, s3_server, sim, extra=extra)
    write_pair(tmp_path / "inbox", "beach")
    result, config = run_once(config_path, key="wrong-key-123")
    assert result.exit_code == 3
    assert not (config.paths.state / "daemon.json").exists()
    reader = open_reader(config)
    try:
        paused = status_report(reader)["daemon"]["paused"]
    finally:
        reader.close()
    assert paused["credentials"]["key_source"] == "PIXAZO_API_KEY"
