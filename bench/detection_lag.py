"""Benchmark: completion-detection lag, polling alone vs webhooks (docs/design.md, "The gateway
protocol").

    python bench/detection_lag.py [--jobs 20] [--task-seconds 2] [--poll-interval 5]

The simulator (in its own process) answers in today's envelope dialect and ends
each task ``--task-seconds`` after its submit.  The lag of a job runs from the
moment its task ended at the gateway to the daemon's ``task.succeeded`` event.  Run
once with polling alone (``gateway.poll_interval``), once with
``gateway.webhook_url`` set (callbacks to ``POST /webhooks/pixazo`` on
``health.listen``, with ``webhook_poll_interval`` at the same pace as a safety net).
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

from common import (
    BUCKET,
    DaemonProcess,
    S3Emulator,
    SimulatorProcess,
    drop_pairs,
    fmt_pcts,
    image_bytes,
    print_header,
    wait_until,
    write_config,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def run_mode(webhooks: bool, args: argparse.Namespace, s3: S3Emulator, root: Path) -> list[float]:
    with SimulatorProcess(
        submit_answer="envelope", queued_seconds=0.0, running_seconds=args.task_seconds
    ) as sim:
        gateway: dict[str, object] = {"poll_interval": args.poll_interval, "max_in_flight": 1000}
        extra = ""
        if webhooks:
            port = free_port()
            gateway["webhook_url"] = f"http://127.0.0.1:{port}/webhooks/pixazo"
            gateway["webhook_poll_interval"] = args.poll_interval
            extra = f"health: {{listen: '127.0.0.1:{port}'}}\n"
        config = write_config(
            root,
            sim_url=sim.base_url,
            s3_url=s3.endpoint_url,
            gateway=gateway,
            watch={"mode": "native", "settle_seconds": 0.2},
            extra=extra,
        )
        daemon = DaemonProcess(config)
        try:
            daemon.wait_ready()
            pairs = [(f"lag{i:03d}", image_bytes(i), f"Lag {i}: waves") for i in range(args.jobs)]
            drop_pairs(root / "inbox", root / "staging", pairs)
            wait_until(
                lambda: len(daemon.events({"task.succeeded"})) >= args.jobs,
                timeout=args.jobs * args.task_seconds + 4 * args.poll_interval + 60,
                what="every task to be seen done",
            )
            ended = {
                task_id: at + args.task_seconds
                for at, task_id, _ in sim.stats(submits=True)["submits"]
            }
            return [e["t"] - ended[e["task_id"]] for e in daemon.events({"task.succeeded"})]
        finally:
            daemon.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=20)
    p.add_argument("--task-seconds", type=float, default=2.0)
    p.add_argument("--poll-interval", type=float, default=5.0)
    args = p.parse_args()
    print_header(
        "seedance-watch completion-detection lag: polling vs webhooks",
        {
            "jobs": args.jobs,
            "task_seconds": args.task_seconds,
            "poll_interval_s": args.poll_interval,
            "dialect": "envelope",
        },
    )
    S3Emulator.install_credentials()
    with S3Emulator(BUCKET) as s3:
        for webhooks in (False, True):
            with tempfile.TemporaryDirectory(prefix="sw-bench-") as tmp:
                lags = run_mode(webhooks, args, s3, Path(tmp))
            name = "webhooks" if webhooks else "polling"
            print(f"{name:9} {fmt_pcts(lags)}", flush=True)
            time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
