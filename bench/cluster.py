"""Benchmark: several hosts on one account (a shared PostgreSQL store).

    python bench/cluster.py [--jobs 60] [--concurrency 10] [--task-seconds 2]
                            [--hosts 1,2,3] [--lease 6] [--failover-jobs 16]

A throwaway PostgreSQL server (Debian's binaries: ``seedance_watch.testing.pgserver``),
moto's S3 server and the simulator (its own process: ``--concurrency`` tasks at once,
429 beyond) serve every run.  For each host count, ``seedance-watch run`` daemons
(real subprocesses, one config each: its own name and state folder, one shared
inbox, outbox, done/ and failed/, ``gateway.max_in_flight`` = ``--concurrency``)
start on a fresh database, then ``--jobs`` pairs are dropped at once.  Printed:

* slot utilisation = (task-seconds / C) / (first task accepted .. last task
  finished), from the simulator's own clock, and its peak of unfinished tasks
  (never above C: the account's limit held across hosts);
* submits per second (first to last accepted submit) and the wall time;
* database round trips per job (each daemon counts its own and logs them when it
  stops: ``store.closed``), and the share of jobs each host took.

Then failover: two hosts (lease ``--lease`` s), ``--failover-jobs`` longer tasks;
the host holding the most tasks in flight is SIGKILLed, and the time from its death
until each of its tasks is polled again by the other host is printed (a lease runs
out, then adoption at the next renewal: at most ``lease + lease / 3``).

Done-when of issue 24: utilisation with three hosts within 5 % of one host's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from common import (
    BUCKET,
    DaemonProcess,
    S3Emulator,
    SimulatorProcess,
    count_files,
    drop_pairs,
    fmt_pcts,
    image_bytes,
    print_header,
    wait_until,
)
from seedance_watch.testing.pgserver import PostgresServer, find_bindir

SCHEMA = "seedance_watch"


def write_host_config(
    root: Path,
    name: str,
    *,
    url: str,
    sim_url: str,
    s3_url: str,
    gateway: dict[str, Any],
    lease: float,
    level: str = "info",
) -> Path:
    """Host ``name``'s config in ``root/name/``: the shared folders under ``root``."""
    home = root / name
    home.mkdir(parents=True, exist_ok=True)
    paths = {k: str(root / k) for k in ("inbox", "outbox", "done", "failed")}
    paths["state"] = str(home / "state")
    gw = {"base_url": sim_url, "task_timeout": 600, "request_timeout": 10, **gateway}
    lines = [
        "paths: " + json.dumps(paths),
        "gateway: " + json.dumps(gw),
        "storage: " + json.dumps({"bucket": BUCKET, "endpoint_url": s3_url, "region": "us-east-1"}),
        "watch: " + json.dumps({"mode": "native", "settle_seconds": 0.2, "rescan_seconds": 60}),
        "dedupe: false",
        f"log: {{format: json, level: {level}}}",
        "cluster: " + json.dumps({"database": url, "name": name, "lease_seconds": lease}),
    ]
    path = home / "seedance-watch.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for folder in ("inbox", "outbox", "done", "failed"):
        (root / folder).mkdir(exist_ok=True)
    return path


def start_hosts(
    count: int,
    root: Path,
    url: str,
    sim: SimulatorProcess,
    s3: S3Emulator,
    gateway: dict[str, Any],
    lease: float,
    level: str = "info",
) -> dict[str, DaemonProcess]:
    hosts = {}
    for i in range(count):
        name = f"host-{i + 1}"
        config = write_host_config(
            root,
            name,
            url=url,
            sim_url=sim.base_url,
            s3_url=s3.endpoint_url,
            gateway=gateway,
            lease=lease,
            level=level,
        )
        hosts[name] = DaemonProcess(config)
    for daemon in hosts.values():
        daemon.wait_ready()
    return hosts


def owners(url: str) -> dict[str, tuple[str, str]]:
    """Every job: id -> (state, owner)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(f"SELECT job_id, state, owner FROM {SCHEMA}.jobs").fetchall()
    return {job_id: (state, owner) for job_id, state, owner in rows}


def run_hosts(
    count: int,
    args: argparse.Namespace,
    server: PostgresServer,
    s3: S3Emulator,
    knobs: dict[str, Any],
) -> dict[str, float]:
    n, c, t = args.jobs, args.concurrency, args.task_seconds
    url = server.fresh_database()
    gateway = {"max_in_flight": c, "requests_per_minute": 6000, "poll_interval": round(t / 12, 3)}
    with tempfile.TemporaryDirectory(prefix="sw-cluster-") as tmp, SimulatorProcess(**knobs) as sim:
        root = Path(tmp)
        hosts = start_hosts(count, root, url, sim, s3, gateway, args.lease)
        try:
            pairs = [(f"job{i:04d}", image_bytes(i), f"Cluster job {i}") for i in range(n)]
            drops = drop_pairs(root / "inbox", root / "staging", pairs)
            wait_until(
                lambda: (
                    count_files(root / "outbox", ".mp4") + count_files(root / "failed", ".json")
                    >= n
                ),
                timeout=60 + 4 * n * t / c,
                interval=0.1,
                what=f"{n} jobs on {count} hosts",
            )
            wall = time.time() - drops[0]
            taken = owners(url)
            failed = count_files(root / "failed", ".json")
        finally:
            for daemon in hosts.values():
                daemon.stop()
        trips = sum(
            e.get("round_trips", 0) for d in hosts.values() for e in d.events({"store.closed"})
        )
        spans, peak = sim.spans()
        stats = sim.stats()
    finished = [(a, f) for a, f in spans if f is not None]
    starts = sorted(a for a, _ in finished)
    window = max(f for _, f in finished) - starts[0]
    busy = sum(f - a for a, f in finished)
    util = busy / (c * window)
    rate = (len(starts) - 1) / (starts[-1] - starts[0]) if len(starts) > 1 else 0.0
    share = {name: sum(1 for _, o in taken.values() if o == name) for name in hosts}
    server.drop_database(url)
    print(
        f"hosts={count}  util {util:.3f} of {c} slots (peak {peak}/{c}), "
        f"{rate:.2f} submits/s, wall {wall:.2f} s, {trips / n:.1f} db round trips/job, "
        f"429s {stats['submit_429']}, failed {failed}, jobs per host {share}"
    )
    return {"util": util, "peak": peak, "rate": rate, "trips": trips / n, "failed": failed}


def run_failover(
    args: argparse.Namespace, server: PostgresServer, s3: S3Emulator, knobs: dict[str, Any]
) -> list[float]:
    """Two hosts; the busier one SIGKILLed; seconds from its death to each of its tasks'
    first poll by the survivor."""
    n, c = args.failover_jobs, args.concurrency
    url = server.fresh_database()
    slow = {**knobs, "running_seconds": 3 * args.lease}  # still running when adopted
    gateway = {"max_in_flight": c, "requests_per_minute": 6000, "poll_interval": 0.2}
    with tempfile.TemporaryDirectory(prefix="sw-failover-") as tmp, SimulatorProcess(**slow) as sim:
        root = Path(tmp)
        hosts = start_hosts(2, root, url, sim, s3, gateway, args.lease, level="debug")
        try:
            pairs = [(f"job{i:04d}", image_bytes(500 + i), f"Failover job {i}") for i in range(n)]
            drop_pairs(root / "inbox", root / "staging", pairs)

            def in_flight() -> dict[str, list[str]]:
                held: dict[str, list[str]] = {}
                for job_id, (state, owner) in owners(url).items():
                    if state == "submitted":
                        held.setdefault(owner, []).append(job_id)
                return held

            held = wait_until(
                lambda: (lambda h: h if sum(map(len, h.values())) >= min(n, c) else None)(
                    in_flight()
                ),
                timeout=60,
                interval=0.05,
                what="the tasks in flight",
            )
            victim = max(held, key=lambda name: len(held[name]))
            orphans = set(held[victim])
            hosts[victim].proc.send_signal(signal.SIGKILL)
            died = time.time()
            survivor = next(name for name in hosts if name != victim)

            def polled() -> dict[str, float] | None:
                seen: dict[str, float] = {}
                for e in hosts[survivor].events({"task.polled"}):
                    if e.get("job_id") in orphans and e["t"] >= died:
                        seen.setdefault(e["job_id"], e["t"])
                return seen if len(seen) == len(orphans) else None

            first = wait_until(polled, timeout=10 * args.lease, interval=0.1, what="adoption")
            wait_until(
                lambda: (
                    count_files(root / "outbox", ".mp4") + count_files(root / "failed", ".json")
                    >= n
                ),
                timeout=60 + 20 * args.lease,
                interval=0.2,
                what="the adopted jobs to end",
            )
            states = owners(url)
        finally:
            for daemon in hosts.values():
                daemon.stop()
        peak = sim.spans()[1]
    server.drop_database(url)
    delays = sorted(t - died for t in first.values())
    done = sum(1 for s, _ in states.values() if s == "done")
    print(
        f"killed {victim} with {len(orphans)} tasks in flight (lease {args.lease:g} s, "
        f"renewals every {args.lease / 3:g} s); {survivor} polled them again after "
        f"{fmt_pcts(delays, unit='s', scale=1.0)}; {done}/{n} done, peak {peak}/{c}"
    )
    return delays


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=60)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--task-seconds", type=float, default=2.0)
    p.add_argument("--hosts", default="1,2,3")
    p.add_argument("--lease", type=float, default=6.0)
    p.add_argument("--failover-jobs", type=int, default=16)
    args = p.parse_args()
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("bench: PostgreSQL's server binaries are missing (Debian's postgresql)")
    counts = [int(x) for x in args.hosts.split(",")]
    print_header(
        "seedance-watch cluster: several hosts, one account",
        {
            "jobs": args.jobs,
            "concurrency": f"{args.concurrency} (max_in_flight; the simulator answers 429 beyond)",
            "task_seconds": args.task_seconds,
            "hosts": args.hosts,
            "lease_seconds": args.lease,
            "failover_jobs": args.failover_jobs,
        },
    )
    knobs = {
        "queued_seconds": 0.0,
        "running_seconds": args.task_seconds,
        "max_concurrent": args.concurrency,
        "concurrency_mode": "reject",
        "video_seconds": 0.25,
        "video_fps": 8,
        "video_max_side": 64,
    }
    S3Emulator.install_credentials()
    results: dict[int, dict[str, float]] = {}
    with PostgresServer(bindir) as server, S3Emulator(BUCKET) as s3:
        print(f"postgres  {bindir} (fsync off: a throwaway server)")
        print("\n== throughput by host count")
        for count in counts:
            results[count] = run_hosts(count, args, server, s3, knobs)
        print("\n== failover")
        run_failover(args, server, s3, knobs)
    ok = all(r["peak"] <= args.concurrency and not r["failed"] for r in results.values())
    if 1 in results and len(results) > 1:
        base = results[1]["util"]
        for count, r in results.items():
            if count != 1:
                print(f"ratio     util {count} hosts / 1 host = {r['util'] / base:.3f}")
        within = all(r["util"] >= 0.95 * base for r in results.values())
        ok = ok and within
        print(
            f"target    every host count within 5 % of one host's utilisation: "
            f"{'met' if within else 'NOT met'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
