"""Benchmark: how full the daemon keeps the gateway's slots.

    python bench/throughput.py [--jobs 150] [--concurrency 10] [--task-seconds 3]
                               [--sequential-jobs 12] [--real-task-seconds 60]

The simulator (its own process) plays a gateway that runs ``--concurrency`` tasks
at once and answers 429 to any submit beyond that (``concurrency_mode=reject``);
each task takes ``--task-seconds``.  Times are scaled: a real Seedance task takes
about ``--real-task-seconds``, so the daemon's ``poll_interval`` is 5 s scaled
(5 * T / real T) and its ``requests_per_minute`` 60 scaled up by the same factor.

Phase 1: the daemon (a real ``seedance-watch run`` subprocess, native watching)
gets ``--jobs`` pairs dropped at once.  Printed: utilisation of the gateway's
slots = (task-seconds / C) / (first task start .. last task end), polls per job,
the slot refill gap (a slot freed → the next submit reaching the gateway),
completion-detection lag (task end → the daemon's poll seeing it), 429s, the
daemon's CPU per job.

Phase 2: a plain sequential client written the way the Pixazo document's example
goes (upload, submit, sleep-poll every 5 s scaled, download), on
``--sequential-jobs`` jobs; then the ratio of the two throughputs.

Done-when of issue 7: 150 jobs, C = 10, ~3 s tasks → utilisation ≥ 0.90, no 429 storm.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import boto3
import httpx

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
    write_config,
)
from seedance_watch.testing.s3emulator import EMULATOR_CREDENTIALS

MODEL = "seedance-1-0-pro-fast-251015"
SUFFIX = " --resolution 720p --duration 5 --camerafixed false"


def run_daemon(
    args: argparse.Namespace, sim: SimulatorProcess, s3: S3Emulator, root: Path, scale: float
) -> dict[str, float]:
    n, c, t = args.jobs, args.concurrency, args.task_seconds
    poll_interval = round(5.0 * scale, 4)
    rpm = max(1, round(60 / scale))
    config = write_config(
        root,
        sim_url=sim.base_url,
        s3_url=s3.endpoint_url,
        gateway={"max_in_flight": c, "requests_per_minute": rpm, "poll_interval": poll_interval},
        watch={"mode": "native", "settle_seconds": 0.2, "rescan_seconds": 60},
    )
    print(f"daemon    max_in_flight={c} poll_interval={poll_interval:g}s rpm={rpm} settle=0.2s")
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        before = sim.stats()
        cpu0 = daemon.cpu_seconds()
        pairs = [(f"job{i:04d}", image_bytes(i), f"Bench job {i}: clouds drift") for i in range(n)]
        drops = drop_pairs(root / "inbox", root / "staging", pairs)
        outbox = root / "outbox"
        wait_until(
            lambda: count_files(outbox, ".mp4") + count_files(root / "failed", ".json") >= n,
            timeout=30 + 4 * n * t / c,
            interval=0.1,
            what=f"{n} jobs",
        )
        finished = time.time()
        cpu = daemon.cpu_seconds() - cpu0
        rss, peak = daemon.memory_mb()
    finally:
        daemon.stop()
    after = sim.stats(submits=True)
    failed = count_files(root / "failed", ".json")
    submits = sorted(after["submits"])[-n:]  # this phase's (only daemon submits so far)
    starts = [at for at, _, _ in submits]
    ends = sorted(at + t for at in starts)
    end_of = {task_id: at + t for at, task_id, _ in submits}
    window = ends[-1] - starts[0]
    util = (len(submits) * t / c) / window
    # In reject mode the (C + i)-th submit takes the slot the i-th task to end freed.
    refill = [starts[c + i] - ends[i] for i in range(len(starts) - c)]
    succeeded = daemon.events({"task.succeeded"})
    lag = [e["t"] - end_of[e["task_id"]] for e in succeeded if e.get("task_id") in end_of]
    polls = after["polls"] - before["polls"]
    limited = after["submit_429"] - before["submit_429"]
    attempts = after["submit_attempts"] - before["submit_attempts"]
    wall = finished - drops[0]
    print(f"jobs      {n} done={n - failed} failed={failed}  submits={len(submits)}")
    print(
        f"util      {util:.3f} of {c} slots  (task-seconds {len(submits) * t:.0f} / {c} "
        f"over {window:.2f} s from first task start to last task end; ideal "
        f"{len(submits) * t / c:.2f} s)"
    )
    print(f"wall      {wall:.2f} s from the drop to the last mp4 ({n / wall * 60:.1f} jobs/min)")
    print(f"polls     {polls / n:.2f} per job ({polls} polls)")
    print(f"refill    {fmt_pcts(refill)}   (slot freed -> next submit at the gateway)")
    print(f"detect    {fmt_pcts(lag)}   (task end -> daemon sees it; T = {t * 1000:.0f} ms)")
    print(f"429       {limited} of {attempts} submit attempts")
    print(
        f"daemon    CPU {cpu:.2f} s ({cpu / n * 1000:.1f} ms/job), "
        f"RSS {rss:.0f} MB (peak {peak:.0f} MB)"
    )
    return {"util": util, "jobs_per_min": n / wall * 60, "failed": failed, "limited": limited}


def run_sequential(
    args: argparse.Namespace, sim: SimulatorProcess, s3: S3Emulator, scale: float
) -> float:
    """The Pixazo document's example, one job after the other; returns jobs/minute."""
    poll_every = 5.0 * scale
    s3c = boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        aws_access_key_id=EMULATOR_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=EMULATOR_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    headers = {
        "Ocp-Apim-Subscription-Key": "sim-key",
        "Content-Type": "application/json",
        "Cache-Control": "no-cache",
    }
    n = args.sequential_jobs
    polls = 0
    started = time.time()
    with httpx.Client(base_url=sim.base_url, headers=headers, timeout=30) as http:
        for i in range(n):
            key = f"sequential/{i}.jpg"
            s3c.put_object(Bucket=BUCKET, Key=key, Body=image_bytes(10_000 + i))
            url = s3c.generate_presigned_url(
                "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=3600
            )
            body = {
                "model": MODEL,
                "content": [
                    {"type": "text", "text": f"Sequential job {i}{SUFFIX}"},
                    {"type": "image_url", "image_url": url},
                ],
            }
            reply = http.post("/byteplus/v1/generateImage2VideoTask", json=body)
            reply.raise_for_status()
            task_id = reply.json()["id"]
            while True:
                time.sleep(poll_every)
                polls += 1
                result = http.post("/bytedance-polling/getVideoResult", json={"task_id": task_id})
                result.raise_for_status()
                data = result.json()
                if data["status"] == "succeeded":
                    break
                if data["status"] in ("failed", "expired", "cancelled"):
                    raise SystemExit(f"bench: sequential task {task_id} {data['status']}")
            video = http.get(data["content"]["video_url"])
            video.raise_for_status()
    wall = time.time() - started
    t, c = args.task_seconds, args.concurrency
    print(
        f"jobs      {n} in {wall:.2f} s ({n / wall * 60:.1f} jobs/min), "
        f"{polls / n:.2f} polls per job, util {(n * t / c) / wall:.3f} of {c} slots"
    )
    return n / wall * 60


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=150)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--task-seconds", type=float, default=3.0)
    p.add_argument("--sequential-jobs", type=int, default=12)
    p.add_argument("--real-task-seconds", type=float, default=60.0)
    args = p.parse_args()
    scale = args.task_seconds / args.real_task_seconds
    print_header(
        "seedance-watch throughput: keeping the gateway's slots full",
        {
            "jobs": args.jobs,
            "concurrency": f"{args.concurrency} (429 beyond)",
            "task_seconds": args.task_seconds,
            "time_scale": f"{scale:g} (real task {args.real_task_seconds:g} s)",
            "sequential_jobs": args.sequential_jobs,
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
    with (
        tempfile.TemporaryDirectory(prefix="sw-bench-") as tmp,
        S3Emulator(BUCKET) as s3,
        SimulatorProcess(**knobs) as sim,
    ):
        print("== daemon")
        result = run_daemon(args, sim, s3, Path(tmp), scale)
        print("\n== sequential client (the Pixazo example: submit, sleep-poll, download)")
        sequential = run_sequential(args, sim, s3, scale)
    ratio = result["jobs_per_min"] / sequential
    print(f"\nratio     daemon / sequential throughput = {ratio:.1f}x")
    ok = result["util"] >= 0.90 and not result["failed"] and result["limited"] <= 1
    print(f"target    utilisation >= 0.90, no 429 storm: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
