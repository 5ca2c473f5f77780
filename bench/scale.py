"""Benchmark: 10,000 tasks in flight at once -- memory, CPU and poll rate.

    python bench/scale.py [--jobs 10000] [--running-seconds 90] [--poll-interval 5]

The simulator (its own process) runs every task at once (no concurrency limit),
each for ``--running-seconds``, with tiny videos; the S3 emulator (moto) runs in
this process.  A real ``seedance-watch run`` subprocess (huge ``max_in_flight`` and
``requests_per_minute``) gets ``--jobs`` pairs dropped at once.  Printed, from
``/proc`` for the daemon alone:

* the peak number of tasks in flight at the gateway, and the daemon's RSS then
  (and its peak RSS over the run) -- target < 150 MB at 10,000;
* poll requests per second while every task is in flight;
* CPU-seconds per job over the whole batch (intake, upload, submit, polls,
  download, placement);
* CPU while idle after the batch (target: near zero).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import (
    BUCKET,
    DaemonProcess,
    S3Emulator,
    SimulatorProcess,
    count_files,
    drop_pairs,
    image_bytes,
    print_header,
    wait_until,
    write_config,
)


def in_flight(sim: SimulatorProcess) -> int:
    counts = sim.counts()
    return counts.get("queued", 0) + counts.get("running", 0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--running-seconds", type=float, default=90.0)
    p.add_argument("--poll-interval", type=float, default=5.0)
    p.add_argument("--idle-seconds", type=float, default=10.0)
    args = p.parse_args()
    n = args.jobs
    print_header(
        "seedance-watch scale: tasks in flight",
        {
            "jobs": n,
            "running_seconds": args.running_seconds,
            "poll_interval": args.poll_interval,
            "idle_window_s": args.idle_seconds,
        },
    )
    knobs = {
        "queued_seconds": 0.0,
        "running_seconds": args.running_seconds,
        "video_seconds": 0.25,
        "video_fps": 8,
        "video_max_side": 32,
    }
    S3Emulator.install_credentials()
    with (
        tempfile.TemporaryDirectory(prefix="sw-bench-") as tmp,
        S3Emulator(BUCKET) as s3,
        SimulatorProcess(**knobs) as sim,
    ):
        root = Path(tmp)
        config = write_config(
            root,
            sim_url=sim.base_url,
            s3_url=s3.endpoint_url,
            gateway={
                "max_in_flight": 2 * n,
                "requests_per_minute": 100 * n,
                "poll_interval": args.poll_interval,
                "task_timeout": 3600,
            },
            watch={"mode": "native", "settle_seconds": 0.2, "rescan_seconds": 60},
        )
        daemon = DaemonProcess(config)
        try:
            daemon.wait_ready()
            rss0, _ = daemon.memory_mb()
            cpu0 = daemon.cpu_seconds()
            image = image_bytes(1)  # one image: the simulator encodes one tiny video
            pairs = ((f"job{i:05d}", image, f"Scale job {i}: waves") for i in range(n))
            start = time.time()
            drop_pairs(root / "inbox", root / "staging", pairs)
            print(f"dropped   {n} pairs in {time.time() - start:.1f} s", flush=True)
            peak_flight, rss_at_peak, last_report = 0, 0.0, 0.0
            while True:
                flying = in_flight(sim)
                rss, _ = daemon.memory_mb()
                if flying >= peak_flight:
                    peak_flight, rss_at_peak = flying, rss
                if time.time() - last_report > 10:
                    print(
                        f"  t={time.time() - start:5.0f}s in flight {flying:6d}  RSS {rss:.0f} MB",
                        flush=True,
                    )
                    last_report = time.time()
                if flying >= n or (peak_flight and flying < peak_flight * 0.98):
                    break
                if time.time() - start > args.running_seconds + 600:
                    raise SystemExit("bench: the batch never got fully in flight")
                time.sleep(0.5)
            ramp = time.time() - start
            polls0, t0 = sim.stats()["polls"], time.time()
            time.sleep(min(10.0, args.running_seconds / 4))
            poll_rate = (sim.stats()["polls"] - polls0) / (time.time() - t0)
            flying_now = in_flight(sim)
            rss_window, _ = daemon.memory_mb()
            wait_until(
                lambda: (
                    count_files(root / "outbox", ".mp4") + count_files(root / "failed", ".json")
                    >= n
                ),
                timeout=args.running_seconds + 900,
                interval=1.0,
                what=f"{n} jobs",
            )
            batch = time.time() - start
            cpu = daemon.cpu_seconds() - cpu0
            rss_end, peak = daemon.memory_mb()
            time.sleep(1.0)  # let the last deletions of S3 objects finish
            idle0, t0 = daemon.cpu_seconds(), time.time()
            time.sleep(args.idle_seconds)
            idle = (daemon.cpu_seconds() - idle0) / (time.time() - t0)
            stats = sim.stats()
            failed = count_files(root / "failed", ".json")
        finally:
            daemon.stop()
    print(f"in flight peak {peak_flight} tasks, reached {ramp:.1f} s after the drop")
    print(
        f"RSS       {rss_at_peak:.0f} MB at the peak ({rss_window:.0f} MB with {flying_now} in "
        f"flight; idle before the batch {rss0:.0f} MB; after {rss_end:.0f} MB; "
        f"peak over the run {peak:.0f} MB)"
    )
    print(
        f"polls     {poll_rate:.0f} requests/s with every task in flight "
        f"({stats['polls']} total, {stats['polls'] / n:.2f} per job)"
    )
    print(
        f"CPU       {cpu:.1f} s for the batch = {cpu / n * 1000:.2f} ms per job "
        f"(batch wall {batch:.0f} s; done {n - failed}, failed {failed})"
    )
    print(f"idle      {idle * 100:.2f} % of one CPU over {args.idle_seconds:g} s after the batch")
    ok = peak < 150 and failed == 0 and peak_flight >= n
    print(f"target    {n} in flight under 150 MB RSS: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
