"""Benchmark of the durable ledger: the cost of one state change, and start-up time.

    python bench/ledger.py [--sizes 1000,10000,100000] [--changes 2000] [--dir PATH]

For each size N, in a temporary folder (on the file system of ``--dir``, default
the system temp dir): a compacted ledger of N finished jobs with realistic records
is laid down, then

* ``open``: start-up time (Ledger.open) of that compacted ledger;
* ``put``: p50/p99/max of ``put()`` (write + fsync) of state changes on random jobs;
* ``put during compaction``: the same while a background compaction of all N jobs
  runs (the compaction's own duration is printed too);
* ``open worst``: start-up when the log is as long as it gets before compaction
  (a snapshot of N jobs plus N appended records, replayed);
* the ledger's bytes on disk.

Targets (docs/design.md, "The ledger and crash guarantees", from the issue): p99 of a change < 5 ms
and start-up < 2 s at 100,000 jobs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import structlog

from seedance_watch.core.jobs import Job, State
from seedance_watch.ledger.jsonl import Ledger
from seedance_watch.ledger.record import encode_record


def finished_job(n: int) -> Job:
    """A DONE job with every field a real finished job carries."""
    sha = f"{n:064x}"
    job_id = f"{n:016x}"
    return Job(
        job_id=job_id,
        state=State.DONE,
        source=f"clients/acme/batch-{n // 1000}/IMG_{n:06d}.jpg",
        sidecar=f"clients/acme/batch-{n // 1000}/IMG_{n:06d}.yaml",
        created_at=1_757_500_000.0 + n,
        updated_at=1_757_500_400.0 + n,
        image_sha256=sha,
        content_key=f"{n + 7:064x}",
        model="seedance-1-0-pro-fast-251015",
        prompt="In the sky, soft cotton-like clouds drift with subtle layered motions",
        text=(
            "In the sky, soft cotton-like clouds drift with subtle layered motions "
            "--resolution 720p --duration 5 --camerafixed false"
        ),
        s3_key=f"seedance-watch/{job_id}/IMG_{n:06d}.jpg",
        task_id=f"cgt-20250910201045-{n:05x}",
        submitted_at=1_757_500_010.0 + n,
        video_url=(
            "https://ark-content-generation.example/doubao-seedance-1-0-pro-fast/"
            f"{job_id}/video.mp4?X-Tos-Algorithm=TOS4-HMAC-SHA256&X-Tos-Expires=86400"
            "&X-Tos-Signature=3f1d0c8e9a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d"
        ),
        usage={"completion_tokens": 103818, "total_tokens": 103818},
        completed_at=1_757_500_300.0 + n,
        output=f"clients/acme/batch-{n // 1000}/IMG_{n:06d}.mp4",
        video_sha256=f"{n + 3:064x}",
        video_bytes=2_345_678 + n,
        moved_to=(
            (
                f"clients/acme/batch-{n // 1000}/IMG_{n:06d}.jpg",
                f"done/clients/acme/batch-{n // 1000}/IMG_{n:06d}.jpg",
            ),
            (
                f"clients/acme/batch-{n // 1000}/IMG_{n:06d}.yaml",
                f"done/clients/acme/batch-{n // 1000}/IMG_{n:06d}.yaml",
            ),
        ),
        seq=8,
    )


def write_file(path: Path, jobs: list[Job]) -> None:
    with path.open("wb") as f:
        for start in range(0, len(jobs), 4096):
            f.write(b"".join(encode_record(j) for j in jobs[start : start + 4096]))
        f.flush()
        os.fsync(f.fileno())


def changed(job: Job) -> Job:
    return dataclasses.replace(job, seq=job.seq + 1, updated_at=job.updated_at + 1.0)


def timed_puts(
    ledger: Ledger, ids: list[str], count: int, *, while_compacting: bool
) -> list[float]:
    """Milliseconds per put() of ``count`` changes (or while a compaction runs)."""
    rng = random.Random(1)
    out: list[float] = []
    while len(out) < count and (not while_compacting or ledger.compacting):
        job = changed(ledger.get(rng.choice(ids)))  # type: ignore[arg-type]
        t0 = time.perf_counter()
        ledger.put(job)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def summary(ms: list[float]) -> str:
    if not ms:
        return "n=0"
    ordered = sorted(ms)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)) - 1)]
    return (
        f"n={len(ms):<5} p50={statistics.median(ordered):6.3f} ms  "
        f"p99={p99:6.3f} ms  max={ordered[-1]:7.3f} ms"
    )


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def fs_type(path: Path) -> str:
    """The file system of ``path``, from the longest matching mount point."""
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                mount = parts[1]
                inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return kind


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def bench_size(root: Path, n: int, changes: int) -> None:
    state = root / f"state-{n}"
    state.mkdir()
    jobs = [finished_job(i) for i in range(n)]
    write_file(state / "snapshot-00000000.jsonl", jobs)
    ids = [j.job_id for j in jobs]
    del jobs  # the daemon holds only the ledger's copy

    t0 = time.perf_counter()
    ledger = Ledger.open(state)
    open_s = time.perf_counter() - t0
    size = disk_bytes(state)
    steady = timed_puts(ledger, ids, changes, while_compacting=False)
    # Compact again and again (up to 20 times) until enough changes ran alongside.
    during: list[float] = []
    compactions: list[float] = []
    while len(during) < changes and len(compactions) < 20:
        t0 = time.perf_counter()
        ledger.compact()
        during += timed_puts(ledger, ids, changes - len(during), while_compacting=True)
        while ledger.compacting:
            time.sleep(0.002)
        compactions.append(time.perf_counter() - t0)
    ledger.close()
    compact_s = statistics.median(compactions)

    # The longest log recovery normally replays: the snapshot plus N records (one
    # more change starts a compaction).
    worst = root / f"worst-{n}"
    worst.mkdir()
    jobs = [finished_job(i) for i in range(n)]
    write_file(worst / "snapshot-00000000.jsonl", jobs)
    write_file(worst / "ledger-00000001.jsonl", [changed(j) for j in jobs])
    del jobs
    t0 = time.perf_counter()
    Ledger.open(worst).close()
    worst_s = time.perf_counter() - t0

    print(f"\n== {n:,} jobs  (ledger on disk: {size / 1e6:.1f} MB, {size / n:.0f} B/job)")
    print(f"  open (compacted)           {open_s * 1000:9.1f} ms")
    print(f"  open worst (N + N lines)   {worst_s * 1000:9.1f} ms")
    print(f"  put                        {summary(steady)}")
    print(f"  put during compaction      {summary(during)}   (compaction {compact_s:.2f} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--changes", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=None, help="where to make the temp folder")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))

    with tempfile.TemporaryDirectory(prefix="ledger-bench-", dir=args.dir) as tmp:
        root = Path(tmp)
        print("seedance-watch ledger benchmark")
        print(f"  date      {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}")
        print(f"  machine   {platform.platform()}; {os.cpu_count()} CPUs ({cpu_model()})")
        print(f"  python    {sys.version.split()[0]} ({platform.python_implementation()})")
        print(f"  temp dir  file system {fs_type(root.resolve())}")
        for n in sizes:
            bench_size(root, n, args.changes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
