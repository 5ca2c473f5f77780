"""Shared parts of the benchmarks: the machine header, a simulator in its own process,
the S3 emulator, the daemon as a subprocess (with its CPU time and RSS read from
``/proc``), drops, daemon logs and percentiles.

The daemon always runs as a real ``seedance-watch run`` subprocess, so its CPU time
and memory are measured alone; the simulator runs in another process (so its work
is not billed to the daemon) and answers queries over a pipe.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import math
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from PIL import Image

from seedance_watch.testing.s3emulator import EMULATOR_CREDENTIALS, S3Emulator

__all__ = [
    "BUCKET",
    "DaemonProcess",
    "S3Emulator",
    "SimulatorProcess",
    "drop_pairs",
    "image_bytes",
    "log_events",
    "percentiles",
    "print_header",
    "wait_until",
    "write_config",
]

BUCKET = "bench-bucket"
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# --- the machine ---------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_header(title: str, params: dict[str, Any]) -> None:
    """The bench's name, the machine, the parameters and the date."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# {title}")
    print(f"date      {now}")
    print(f"machine   {platform.platform()}, {os.cpu_count()} CPUs ({cpu_model()})")
    print(f"python    {platform.python_implementation()} {platform.python_version()}")
    print("params    " + ", ".join(f"{k}={v}" for k, v in params.items()))
    print(flush=True)


def percentiles(values: Iterable[float], qs: Iterable[int] = (50, 95, 99)) -> dict[int, float]:
    """Nearest-rank percentiles (``nan`` for an empty list)."""
    data = sorted(values)
    out: dict[int, float] = {}
    for q in qs:
        if not data:
            out[q] = math.nan
        else:
            out[q] = data[min(len(data) - 1, max(0, math.ceil(q / 100 * len(data)) - 1))]
    return out


def fmt_pcts(values: list[float], unit: str = "ms", scale: float = 1000.0) -> str:
    p = percentiles(values)
    top = max(values) * scale if values else math.nan
    mean = sum(values) / len(values) * scale if values else math.nan
    return (
        f"mean {mean:7.1f} {unit}  p50 {p[50] * scale:7.1f} {unit}  "
        f"p95 {p[95] * scale:7.1f} {unit}  "
        f"p99 {p[99] * scale:7.1f} {unit}  max {top:7.1f} {unit}  (n={len(values)})"
    )


def wait_until(
    condition: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# --- the simulator in its own process ------------------------------------------------------


def _serve_simulator(conn: Connection, knobs: dict[str, Any]) -> None:
    import structlog

    from seedance_watch.simulator import Simulator, SimulatorConfig
    from seedance_watch.simulator.app import SUBMIT_PATH

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    sim = Simulator(SimulatorConfig(**knobs)).start()
    conn.send(sim.base_url)
    while True:
        command, arg = conn.recv()
        if command == "stop":
            sim.stop()
            conn.send(None)
            return
        if command == "configure":
            sim.configure(**arg)
            conn.send(None)
        elif command == "stats":
            submits = [(r.at, r.task_id, r.text) for r in sim.submits] if arg else []
            limited = sum(1 for r in sim.requests if r.path == SUBMIT_PATH and r.status == 429)
            conn.send(
                {
                    "polls": sim.polls,
                    "submit_attempts": sim.submit_attempts,
                    "submits": submits,
                    "submit_429": limited,
                }
            )
        elif command == "counts":
            conn.send(sim.tasks_by_status())
        elif command == "spans":
            conn.send({"spans": sim.task_spans(), "peak": sim.peak_unfinished})


class SimulatorProcess:
    """The Pixazo simulator in a separate process; queries go over a pipe."""

    def __init__(self, **knobs: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_simulator, args=(child, knobs), daemon=True)
        self._proc.start()
        self.base_url: str = self._conn.recv()

    def _ask(self, command: str, arg: Any = None) -> Any:
        self._conn.send((command, arg))
        return self._conn.recv()

    def stats(self, *, submits: bool = False) -> dict[str, Any]:
        """Polls, submit attempts, 429s on submit and (optionally) every submit record."""
        return self._ask("stats", submits)  # type: ignore[no-any-return]

    def counts(self) -> dict[str, int]:
        """Tasks by status now."""
        return self._ask("counts")  # type: ignore[no-any-return]

    def spans(self) -> tuple[list[tuple[float, float | None]], int]:
        """Each task's (accepted, finished) in the simulator's monotonic clock, and the
        most tasks ever unfinished at once."""
        answer = self._ask("spans")
        return answer["spans"], answer["peak"]

    def configure(self, **changes: Any) -> None:
        self._ask("configure", changes)

    def stop(self) -> None:
        if self._proc.is_alive():
            self._ask("stop")
            self._proc.join(timeout=30)

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the daemon as a subprocess -----------------------------------------------------------


def write_config(
    folder: Path,
    *,
    sim_url: str,
    s3_url: str,
    gateway: dict[str, Any],
    watch: dict[str, Any],
    extra: str = "",
) -> Path:
    """A config file in ``folder`` with the five paths below it."""
    gw = {"base_url": sim_url, "task_timeout": 600, "request_timeout": 10, **gateway}
    lines = [
        "paths: {inbox: ./inbox, outbox: ./outbox, done: ./done, failed: ./failed, state: ./state}",
        "gateway: " + json.dumps(gw),
        "storage: " + json.dumps({"bucket": BUCKET, "endpoint_url": s3_url, "region": "us-east-1"}),
        "watch: " + json.dumps(watch),
        "dedupe: false",
        "log: {format: json, level: info}",
    ]
    path = folder / "seedance-watch.yaml"
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    for name in ("inbox", "outbox", "done", "failed"):
        (folder / name).mkdir(exist_ok=True)
    return path


class DaemonProcess:
    """``seedance-watch run`` as a subprocess; JSON logs in a file; CPU and RSS from /proc."""

    def __init__(self, config_path: Path) -> None:
        self.log_path = config_path.parent / "daemon.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ)
        env.update(EMULATOR_CREDENTIALS)
        env["PIXAZO_API_KEY"] = "sim-key"  # the simulator's placeholder key
        env.pop("PIXAZO_API_KEY_FILE", None)
        env.pop("CREDENTIALS_DIRECTORY", None)
        args = [sys.executable, "-m", "seedance_watch", "run", "--config", str(config_path)]
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the daemon so far (all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK

    def memory_mb(self) -> tuple[float, float]:
        """(RSS now, peak RSS) in MB."""
        rss = peak = 0.0
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
        return rss, peak

    def events(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        return log_events(self.log_path, names)

    def wait_ready(self, timeout: float = 60) -> None:
        wait_until(
            lambda: (
                self.proc.poll() is not None
                or any(True for _ in log_events(self.log_path, {"inbox.watching"}))
            ),
            timeout,
            what="the daemon to watch its inbox",
        )
        if self.proc.poll() is not None:
            raise SystemExit(f"bench: the daemon exited early; see {self.log_path}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def log_events(path: Path, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The JSON events of a daemon log (only ``names`` when given), with ``t`` (epoch s)."""
    wanted = None if names is None else set(names)
    out: list[dict[str, Any]] = []
    with open(path, "rb") as f:
        for raw in f:
            if wanted is not None and not any(n.encode() in raw for n in wanted):
                continue
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if wanted is not None and event.get("event") not in wanted:
                continue
            stamp = event.get("timestamp")
            if isinstance(stamp, str):
                event["t"] = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
            out.append(event)
    return out


# --- drops --------------------------------------------------------------------------------


def image_bytes(n: int, size: tuple[int, int] = (640, 480)) -> bytes:
    """A small JPEG, different for each ``n``."""
    img = Image.new("RGB", size, ((n * 37) % 256, (n * 91) % 256, (n * 53) % 256))
    img.putpixel((n % size[0], (n // size[0]) % size[1]), (255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def drop_pairs(inbox: Path, staging: Path, pairs: Iterable[tuple[str, bytes, str]]) -> list[float]:
    """Write each (stem, image, prompt) to ``staging``, then rename both files into the
    inbox (as a careful uploader does); returns each pair's drop time (epoch seconds)."""
    staging.mkdir(parents=True, exist_ok=True)
    times = []
    for stem, data, prompt in pairs:
        image, sidecar = staging / f"{stem}.jpg", staging / f"{stem}.yaml"
        image.write_bytes(data)
        sidecar.write_text(f"prompt: {json.dumps(prompt)}\n", encoding="utf-8")
        image.rename(inbox / image.name)
        sidecar.rename(inbox / sidecar.name)
        times.append(time.time())
    return times


def count_files(folder: Path, suffix: str) -> int:
    with os.scandir(folder) as entries:
        return sum(1 for e in entries if e.name.endswith(suffix))
