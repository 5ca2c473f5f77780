"""Helpers for the end-to-end tests: configs, a daemon subprocess, waiting for conditions."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seedance_watch.config import Config, load_config
from seedance_watch.daemon import RunResult, run_service
from seedance_watch.providers.keys import load_api_key
from seedance_watch.providers.pixazo import PROVIDER
from seedance_watch.simulator import Simulator
from seedance_watch.testing.s3emulator import EMULATOR_CREDENTIALS, S3Emulator

KEYS = PROVIDER.keys

BUCKET = "test-bucket"


def write_config(
    folder: Path,
    s3: S3Emulator,
    sim: Simulator,
    *,
    extra: str = "",
    settle: float = 0.2,
    poll_interval: float = 0.1,
    pair_timeout: float = 300,
    mode: str = "auto",
    bucket: str = BUCKET,
) -> Path:
    """A config file in ``folder`` pointing at the emulators, with fast timings."""
    path = folder / "seedance-watch.yaml"
    path.write_text(
        "paths: {inbox: ./inbox, outbox: ./outbox, done: ./done, failed: ./failed, "
        "state: ./state}\n"
        f"gateway: {{base_url: '{sim.base_url}', poll_interval: {poll_interval}, "
        "task_timeout: 60, request_timeout: 5}\n"
        f"storage: {{bucket: {bucket}, endpoint_url: '{s3.endpoint_url}', region: us-east-1}}\n"
        f"watch: {{mode: {mode}, settle_seconds: {settle}, rescan_seconds: 2, "
        f"pair_timeout: {pair_timeout}}}\n"
        "log: {format: json, level: debug}\n" + extra,
        encoding="utf-8",
    )
    for name in ("inbox", "outbox", "done", "failed"):
        (folder / name).mkdir(exist_ok=True)
    return path


def fresh_bucket(s3: S3Emulator) -> str:
    """A new empty bucket, for tests that SIGKILL daemons (they may leave objects behind)."""
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3.client().create_bucket(Bucket=name)
    return name


def run_once(config_path: Path, key: str = "sim-key") -> tuple[RunResult, Config]:
    """``run --once`` in-process (the same code path as the CLI)."""
    config = load_config(config_path, {})
    api_key = load_api_key({"PIXAZO_API_KEY": key}, KEYS)
    return asyncio.run(run_service(config, api_key, once=True)), config


def daemon_env(key: str = "sim-key", aws: dict[str, str] | None = None) -> dict[str, str]:
    """The daemon's environment: the gateway key, and the emulator's credentials (or
    ``aws``, another S3 server's) in boto3's standard chain."""
    env = dict(os.environ)
    env.update(EMULATOR_CREDENTIALS if aws is None else aws)
    env["PIXAZO_API_KEY"] = key
    env.pop("PIXAZO_API_KEY_FILE", None)
    env.pop("CREDENTIALS_DIRECTORY", None)
    return env


class DaemonProcess:
    """``seedance-watch run`` as a real subprocess, its log captured to a file."""

    def __init__(
        self,
        config_path: Path,
        *,
        key: str = "sim-key",
        once: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = config_path.parent / f"daemon-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in wait()
        args = [sys.executable, "-m", "seedance_watch", "run", "--config", str(config_path)]
        if once:
            args.append("--once")
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env=daemon_env(key, env)
        )

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def has_event(self, name: str) -> bool:
        return any(e.get("event") == name for e in self.events())

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def wait_for(condition: Callable[[], Any], timeout: float = 30, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it is truthy; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
        time.sleep(interval)


def files_under(root: Path) -> list[str]:
    """Every file below ``root``, relative and sorted (hidden files included)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
