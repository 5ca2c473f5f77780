"""Several real daemons on one PostgreSQL database and one shared inbox act as one
account (docs/design.md, "Several hosts, one account").

Each host is ``seedance-watch run`` as a subprocess with its own name and state folder,
all sharing the inbox, outbox, done/ and failed/, the bucket (moto), the simulator and a
fresh database of the session's server.  Leases are short (a few seconds) so that
failover happens within a test.  What is checked, across the hosts together: one job
per drop, no image submitted twice, the gateway never sees more than
``gateway.max_in_flight`` tasks unfinished at once, a host killed mid-batch has its jobs
adopted and finished, a daily cap holds under concurrency, a database restart loses
nothing, and a host frozen past its lease touches none of its adopted jobs.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from seedance_watch.simulator import Simulator
from seedance_watch.testing.pgserver import PostgresServer
from seedance_watch.testing.s3emulator import EMULATOR_CREDENTIALS, S3Emulator

from .helpers import (
    DaemonProcess,
    WritePair,
    daemon_env,
    files_under,
    free_port,
    fresh_bucket,
    wait_for,
    write_pair,
)
from .simhelpers import SimFactory

pytestmark = pytest.mark.timeout(120)

SCHEMA = "seedance_watch"
LEASE = 2.0


@dataclass
class Cluster:
    """Hosts sharing one database, one set of folders, one bucket and one gateway."""

    root: Path
    url: str
    s3: S3Emulator
    sim: Simulator
    bucket: str
    max_in_flight: int = 4
    requests_per_minute: int = 600
    lease: float = LEASE
    extra: str = ""
    hosts: dict[str, DaemonProcess] = field(default_factory=dict)

    def config(self, host: str) -> Path:
        root = self.root
        path = root / f"{host}.yaml"
        path.write_text(
            f"paths: {{inbox: {root}/inbox, outbox: {root}/outbox, done: {root}/done, "
            f"failed: {root}/failed, state: {root}/state-{host}}}\n"
            f"gateway: {{base_url: '{self.sim.base_url}', poll_interval: 0.1, "
            f"task_timeout: 60, request_timeout: 5, max_in_flight: {self.max_in_flight}, "
            f"requests_per_minute: {self.requests_per_minute}}}\n"
            f"storage: {{bucket: {self.bucket}, endpoint_url: '{self.s3.endpoint_url}', "
            "region: us-east-1}\n"
            "watch: {settle_seconds: 0.2, rescan_seconds: 1, pair_timeout: 300}\n"
            "log: {format: json, level: debug}\n"
            f"cluster: {{database: '{self.url}', name: {host}, lease_seconds: {self.lease}}}\n"
            + self.extra,
            encoding="utf-8",
        )
        return path

    def start(self, *names: str) -> None:
        """Start these hosts and wait until each watches the inbox."""
        for name in names:
            self.hosts[name] = DaemonProcess(self.config(name))
        for name in names:
            daemon = self.hosts[name]
            wait_for(lambda d=daemon: d.has_event("daemon.ready") or d.proc.poll() is not None)
            assert daemon.proc.poll() is None, daemon.log_path.read_text()

    def drop(self, count: int, start: int = 0) -> list[str]:
        """``count`` drops, each with its own image (no two submits are alike)."""
        stems = []
        for n in range(start, start + count):
            stem = f"drop-{n:02d}"
            write_pair(self.root / "inbox", stem, color=(n * 37 % 256, n * 91 % 256, 120))
            stems.append(stem)
        return stems

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(query, params)
            return list(cursor.fetchall()) if cursor.description else []

    def jobs(self) -> dict[str, tuple[str, str, str]]:
        """Every job: id -> (source, state, owner)."""
        rows = self.sql(f"SELECT job_id, record->>'source', state, owner FROM {SCHEMA}.jobs")
        return {job_id: (source, state, owner) for job_id, source, state, owner in rows}

    def ended(self, count: int) -> bool:
        states = [state for _, state, _ in self.jobs().values()]
        return len(states) == count and all(s in ("done", "failed") for s in states)

    def events(self, name: str, event: str) -> list[dict[str, Any]]:
        return [e for e in self.hosts[name].events() if e.get("event") == event]

    def stop(self) -> None:
        for daemon in self.hosts.values():
            if daemon.proc.poll() is None:
                daemon.signal(signal.SIGCONT)
                daemon.signal(signal.SIGTERM)
        for daemon in self.hosts.values():
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()


@pytest.fixture
def cluster(
    tmp_path: Path, postgres_url: str, s3_server: S3Emulator, sim_factory: SimFactory
) -> Iterator[Cluster]:
    sim = sim_factory(running_seconds=0.6)
    made = Cluster(tmp_path, postgres_url, s3_server, sim, fresh_bucket(s3_server))
    for folder in ("inbox", "outbox", "done", "failed"):
        (tmp_path / folder).mkdir()
    try:
        yield made
    finally:
        made.stop()


def submitted_images(sim: Simulator) -> list[str]:
    return [record.image_sha256 for record in sim.submits]


def status_json(cluster: Cluster, host: str) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "seedance_watch",
            "status",
            "--json",
            "--config",
            str(cluster.config(host)),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=daemon_env(aws=EMULATOR_CREDENTIALS),
        check=True,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_three_hosts_one_killed_mid_batch_end_every_drop_once(cluster: Cluster) -> None:
    """The issue's done-when: three daemons, one database, one inbox; one SIGKILLed
    while it has tasks in flight.  Every drop is one job, done -- or submit_ambiguous,
    and only for a job the dead host was submitting; no image is submitted twice; the
    gateway never saw more than max_in_flight tasks at once; the dead host's tasks
    are polled again by another host; status --json from any host names every job's
    host and the dead host as not alive."""
    cluster.start("alpha", "beta", "gamma")
    stems = cluster.drop(18)

    def busy_host() -> str | None:
        """A host with two tasks in flight (which one gets them is the race's)."""
        owners = [o for _, state, o in cluster.jobs().values() if state == "submitted"]
        return next((o for o in sorted(set(owners)) if owners.count(o) >= 2), None)

    victim = wait_for(busy_host, timeout=40, interval=0.02)
    survivors = sorted(set(cluster.hosts) - {victim})
    cluster.hosts[victim].kill()
    killed = cluster.jobs()
    orphans = {j for j, (_, state, o) in killed.items() if o == victim and state != "done"}
    wait_for(lambda: cluster.ended(len(stems)), timeout=60, interval=0.1)

    jobs = cluster.jobs()
    assert sorted(source for source, _, _ in jobs.values()) == [f"{s}.jpg" for s in stems]
    failed = {j for j, (_, state, _) in jobs.items() if state == "failed"}
    codes = dict(
        cluster.sql(
            f"SELECT job_id, record->'error'->>'code' FROM {SCHEMA}.jobs WHERE state = 'failed'"
        )
    )
    assert set(codes.values()) <= {"submit_ambiguous"}
    adopted_submitting = {
        e["job_id"]
        for name in survivors
        for e in cluster.events(name, "job.adopted")
        if e["state"] == "submitting"
    }
    assert failed <= adopted_submitting
    adopted = {e["job_id"] for n in survivors for e in cluster.events(n, "job.adopted")}
    assert adopted == orphans and adopted
    assert {o for j, (_, _, o) in jobs.items() if j in adopted} <= set(survivors)
    images = submitted_images(cluster.sim)
    assert len(images) == len(set(images))
    assert cluster.sim.peak_unfinished <= cluster.max_in_flight
    videos = [f for f in files_under(cluster.root / "outbox") if f.endswith(".mp4")]
    assert len(videos) == len(stems) - len(failed)
    assert not [f for f in files_under(cluster.root / "inbox") if not f.startswith(".")]

    for host in survivors:
        report = status_json(cluster, host)
        assert {job["job_id"]: job["host"] for job in report["jobs"]} == {
            j: o for j, (_, _, o) in jobs.items()
        }
        alive = {h["name"]: h["alive"] for h in report["hosts"]}
        assert alive == {name: name != victim for name in cluster.hosts}


def test_a_daily_cap_holds_across_hosts_under_concurrency(cluster: Cluster) -> None:
    """max_submits_per_day: 5 across three hosts racing for twelve drops: exactly five
    submits, none of the other drops fails (they wait for the next day), and each host
    that reached the cap says so in status."""
    cluster.extra = "budget: {max_submits_per_day: 5}\n"
    cluster.start("alpha", "beta", "gamma")
    stems = cluster.drop(12)

    def five_done() -> bool:
        return [s for _, s, _ in cluster.jobs().values()].count("done") == 5

    wait_for(five_done, timeout=40, interval=0.1)

    # Every host has seen every drop (rescan_seconds: 1); each one holding a waiting
    # job finds the cap reached.
    def reached() -> list[str]:
        return [n for n in cluster.hosts if cluster.events(n, "budget.reached")]

    def waiting_owners() -> set[str]:
        return {owner for _, state, owner in cluster.jobs().values() if state != "done"}

    wait_for(lambda: reached() and waiting_owners() <= set(reached()), timeout=20)
    time.sleep(1.0)
    jobs = cluster.jobs()
    assert len(cluster.sim.submits) == 5
    assert len(jobs) == len(stems)
    states = sorted(state for _, state, _ in jobs.values())
    assert states.count("done") == 5
    assert "failed" not in states and "submitted" not in states
    report = status_json(cluster, reached()[0])
    assert "max_submits_per_day" in json.dumps(report["daemon"]["paused"]["budget"])


def test_the_database_restarted_mid_batch_loses_nothing(
    cluster: Cluster, postgres_server: PostgresServer
) -> None:
    """The database stopped while two hosts have tasks in flight: intake and submits
    pause (/healthz names the database), nothing fails; started again, every drop ends
    done, one job each, no image submitted twice."""
    port = free_port()
    cluster.lease = 9.0  # longer than the outage: no host is presumed dead
    cluster.extra = f"health: {{listen: '127.0.0.1:{port}'}}\n"
    cluster.start("alpha")
    cluster.extra = ""
    cluster.start("beta")
    stems = cluster.drop(10)

    def some_in_flight() -> bool:
        return any(state == "submitted" for _, state, _ in cluster.jobs().values())

    wait_for(some_in_flight, timeout=30, interval=0.05)
    postgres_server.pause("fast")
    try:
        wait_for(lambda: cluster.events("alpha", "database.paused"), timeout=20)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
        assert health["status"] == "unhealthy" and "database" in health["paused"]
        more = cluster.drop(2, start=len(stems))  # dropped while the database is away
    finally:
        postgres_server.resume()
    wait_for(lambda: cluster.events("alpha", "database.resumed"), timeout=30)
    wait_for(lambda: cluster.ended(len(stems) + len(more)), timeout=60, interval=0.1)

    jobs = cluster.jobs()
    assert {state for _, state, _ in jobs.values()} == {"done"}
    assert sorted(s for s, _, _ in jobs.values()) == [f"{s}.jpg" for s in stems + more]
    images = submitted_images(cluster.sim)
    assert len(images) == len(set(images)) == len(stems) + len(more)
    assert cluster.sim.peak_unfinished <= cluster.max_in_flight
    assert all(d.proc.poll() is None for d in cluster.hosts.values())


def test_a_host_frozen_past_its_lease_touches_none_of_its_adopted_jobs(
    cluster: Cluster, sim_factory: SimFactory
) -> None:
    """alpha is frozen (SIGSTOP) with tasks in flight; beta adopts them after the lease
    and finishes them; alpha, woken (SIGCONT), stops without writing any of them, and
    no task is submitted or downloaded twice."""
    cluster.sim = sim_factory(running_seconds=3.0)  # still running when beta adopts them
    cluster.start("alpha")
    stems = cluster.drop(4)

    def alpha_in_flight() -> bool:
        jobs = cluster.jobs().values()
        return len(jobs) == len(stems) and all(s == "submitted" for _, s, _ in jobs)

    wait_for(alpha_in_flight, timeout=30, interval=0.05)
    alpha = cluster.hosts["alpha"]
    alpha.signal(signal.SIGSTOP)
    frozen = {
        j: json.loads(r) for j, r in cluster.sql(f"SELECT job_id, record::text FROM {SCHEMA}.jobs")
    }
    cluster.start("beta")
    wait_for(lambda: len(cluster.events("beta", "job.adopted")) == len(stems), timeout=30)
    alpha.signal(signal.SIGCONT)
    assert alpha.wait(timeout=30) != 0
    wait_for(lambda: cluster.ended(len(stems)), timeout=60, interval=0.1)

    jobs = cluster.jobs()
    assert set(jobs) == set(frozen)
    assert {(state, owner) for _, state, owner in jobs.values()} == {("done", "beta")}
    assert len(cluster.sim.submits) == len(stems)
    alpha_writes = [
        e for e in alpha.events() if e.get("event") in ("job.done", "job.failed", "job.downloaded")
    ]
    assert alpha_writes == []
    assert alpha.has_event("lease.lost")
    assert len(files_under(cluster.root / "outbox")) == 2 * len(stems)


def test_run_once_exits_1_when_the_database_is_out_of_reach(
    tmp_path: Path, s3_server: S3Emulator, sim_factory: SimFactory, write_pair: WritePair
) -> None:
    """run --once with a database nobody answers at: exit 1, the drop untouched."""
    sim = sim_factory()
    cluster = Cluster(
        tmp_path,
        f"postgresql://seedance@127.0.0.1:{free_port()}/none",
        s3_server,
        sim,
        fresh_bucket(s3_server),
    )
    for folder in ("inbox", "outbox", "done", "failed"):
        (tmp_path / folder).mkdir()
    write_pair(tmp_path / "inbox", "beach")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "seedance_watch",
            "run",
            "--once",
            "--config",
            str(cluster.config("solo")),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env=daemon_env(aws=EMULATOR_CREDENTIALS),
    )
    assert done.returncode == 1, done.stderr
    assert "database" in done.stderr
    assert sorted(files_under(tmp_path / "inbox")) == ["beach.jpg", "beach.yaml"]
    assert sim.submits == []
