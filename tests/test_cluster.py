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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from seedance_watch.simulator import Simulator
from seedance_watch.testing.s3emulator import EMULATOR_CREDENTIALS, S3Emulator

from .helpers import DaemonProcess, daemon_env, files_under, fresh_bucket, wait_for, write_pair
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
    extra: str = ""
    hosts: dict[str, DaemonProcess] = field(default_factory=dict)

    def config(self, host: str) -> Path:
        root = self.root
        path = root / f"{host}.yaml"
        path.write_text(
            f"paths: {{inbox: {root}/inbox, outbox: {root}/outbox, done: {root}/done, "
            f"failed: {root}/failed, state: {root}/state-{host}}}\n"
            f"gateway: {{base_url: '{self.sim.base_url}', poll_interval: 0.1, "
            f"task_timeout: 60, request_timeout: 5, max_in_flight: {self.max_in_flight}}}\n"
            f"storage: {{bucket: {self.bucket}, endpoint_url: '{self.s3.endpoint_url}', "
            "region: us-east-1}\n"
            "watch: {settle_seconds: 0.2, rescan_seconds: 1, pair_timeout: 300}\n"
            "log: {format: json, level: debug}\n"
            f"cluster: {{database: '{self.url}', name: {host}, lease_seconds: {LEASE}}}\n"
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

    def victim_busy() -> bool:
        owners = [o for _, state, o in cluster.jobs().values() if state == "submitted"]
        return owners.count("gamma") >= 2

    wait_for(victim_busy, timeout=40, interval=0.02)
    cluster.hosts["gamma"].kill()
    killed = cluster.jobs()
    gammas = {j for j, (_, state, o) in killed.items() if o == "gamma" and state != "done"}
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
        for name in ("alpha", "beta")
        for e in cluster.events(name, "job.adopted")
        if e["state"] == "submitting"
    }
    assert failed <= adopted_submitting
    adopted = {e["job_id"] for n in ("alpha", "beta") for e in cluster.events(n, "job.adopted")}
    assert adopted == gammas and adopted
    assert {o for j, (_, _, o) in jobs.items() if j in adopted} <= {"alpha", "beta"}
    images = submitted_images(cluster.sim)
    assert len(images) == len(set(images))
    assert cluster.sim.peak_unfinished <= cluster.max_in_flight
    assert len(files_under(cluster.root / "outbox")) == 2 * (len(stems) - len(failed))
    assert not [f for f in files_under(cluster.root / "inbox") if not f.startswith(".")]

    for host in ("alpha", "beta"):
        report = status_json(cluster, host)
        assert {job["job_id"]: job["host"] for job in report["jobs"]} == {
            j: o for j, (_, _, o) in jobs.items()
        }
        assert {h["name"]: h["alive"] for h in report["hosts"]} == {
            "alpha": True,
            "beta": True,
            "gamma": False,
        }
