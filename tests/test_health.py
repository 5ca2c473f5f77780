"""/healthz and /metrics (health.listen) over loopback, with values checked against a run."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from seedance_watch.config import Config
from seedance_watch.daemon import health_check
from seedance_watch.ledger.jsonl import Ledger
from seedance_watch.providers.pixazo import PROVIDER
from seedance_watch.service.http import HealthServer, Heartbeat, PageSources, probe
from seedance_watch.service.metrics import Metrics
from seedance_watch.simulator import Simulator
from seedance_watch.testing.s3emulator import S3Emulator

from .helpers import DaemonProcess, WritePair, wait_for, write_config

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.sim(seed=3, error_5xx_rate=0.3, faults_on=frozenset({"poll"})),
]

POLL_PATH = "/bytedance-polling/getVideoResult"


def get(address: tuple[str, int], path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(*address, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_healthz_and_metrics_answer_during_a_run_with_true_values(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """During a real run /healthz is 200 with its checks, and /metrics counts exactly the
    submits, polls, 5xx retries, bytes and finished jobs that happened."""
    config = write_config(tmp_path, s3_server, sim, extra="health: {listen: '127.0.0.1:0'}\n")
    daemon = DaemonProcess(config)
    try:
        listening = wait_for(
            lambda: [e for e in daemon.events() if e.get("event") == "health.listening"],
            timeout=20,
        )
        address = (listening[0]["host"], listening[0]["port"])
        wait_for(lambda: daemon.has_event("daemon.ready"), timeout=20)
        status, body = get(address, "/healthz")
        health = json.loads(body)
        assert status == 200, health
        assert health["status"] == "ok" and health["loop_alive"] and health["ledger_writable"]
        assert health["ready"] is True and health["paused"] == {}
        assert probe(address)[0] == 200

        images = [write_pair(tmp_path / "inbox", stem)[0] for stem in ("beach", "dune")]
        image_bytes = sum(p.stat().st_size for p in images)
        wait_for(lambda: len(list((tmp_path / "outbox").glob("*.json"))) == 2, timeout=30)
        wait_for(lambda: json.loads(get(address, "/healthz")[1])["jobs"]["done"] == 2, timeout=10)
        status, body = get(address, "/metrics")
        assert status == 200
        m = samples(body.decode())
        assert get(address, "/nope")[0] == 404
    finally:
        daemon.signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        daemon.kill()

    polls = [r for r in sim.requests if r.path == POLL_PATH]
    poll_5xx = [r for r in polls if r.status is not None and r.status >= 500]
    assert poll_5xx, "the fault dice produced no 5xx; pick another seed"
    videos = sum(len(sim.video_bytes(s.task_id)) for s in sim.submits)

    def value(name: str, **labels: str) -> float:
        return m[(name, tuple(sorted(labels.items())))]

    assert value("seedance_submits_total") == len(sim.submits) == 2
    assert value("seedance_polls_total") == len(polls)
    assert value("seedance_retries_total", stage="poll") == len(poll_5xx)
    assert value("seedance_http_responses_total", operation="submit", status="200") == 2
    assert sum(
        value("seedance_http_responses_total", operation="poll", status=str(code))
        for code in {r.status for r in poll_5xx}
    ) == len(poll_5xx)
    assert value("seedance_upload_bytes_total") == image_bytes
    assert value("seedance_download_bytes_total") == videos
    assert (
        value("seedance_upload_seconds_total") > 0 and value("seedance_download_seconds_total") > 0
    )
    assert value("seedance_jobs", state="done") == 2 and value("seedance_jobs", state="failed") == 0
    assert value("seedance_jobs_finished_total", state="done") == 2
    assert value("seedance_job_latency_seconds_count") == 2
    assert 0 <= value("seedance_seconds_since_last_gateway_success") < 30


class StoreOnlyView:
    """What /healthz reads of an engine, for a bare ledger: ready, nothing paused."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def writable(self) -> bool:
        return self.ledger.writable()

    def counts(self) -> dict[str, int]:
        return self.ledger.counts()

    def fatal(self) -> None:
        return None

    def ready(self) -> bool:
        return True

    def pauses(self) -> dict[str, str]:
        return {}


def test_healthz_names_every_recorded_pause_with_its_message(tmp_path: Path) -> None:
    """/healthz's ``paused`` holds the engine's pauses and every other pause the daemon
    records (the budget, the database, any reason), each with its message."""

    class Paused(StoreOnlyView):
        def pauses(self) -> dict[str, str]:
            return {"storage": "the bucket b does not exist"}

    recorded = {
        "storage": {"message": "older words for the same pause"},
        "database": {"message": "the database db.example.net is out of reach", "since": "x"},
        "budget": {"message": "USD 5.00 of 5.00 spent today"},
    }
    with Ledger.open(tmp_path / "state") as ledger:
        check = health_check(Heartbeat(), Paused(ledger), lambda: recorded)  # type: ignore[arg-type]
        assert check()[1]["paused"] == {
            "storage": "the bucket b does not exist",
            "database": "the database db.example.net is out of reach",
            "budget": "USD 5.00 of 5.00 spent today",
        }
        unpaused = health_check(Heartbeat(), StoreOnlyView(ledger))  # type: ignore[arg-type]
        assert unpaused()[1]["paused"] == {}


def test_healthz_is_503_when_the_loop_is_stuck_or_the_ledger_cannot_be_written(
    tmp_path: Path,
) -> None:
    """A loop that stops beating, or a ledger that cannot take a write, turns /healthz 503."""
    ledger = Ledger.open(tmp_path / "state")
    heartbeat = Heartbeat(period=0.02, stale_after=0.3)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stop = asyncio.Event()

    async def beat_until_stopped() -> None:
        task = asyncio.create_task(heartbeat.run())
        await stop.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    beating = asyncio.run_coroutine_threadsafe(beat_until_stopped(), loop)
    check = health_check(heartbeat, StoreOnlyView(ledger))  # type: ignore[arg-type]
    paths = {name: str(tmp_path / name) for name in ("inbox", "outbox", "done", "failed")}
    config = Config.model_validate(
        {
            "paths": {**paths, "state": str(tmp_path / "state")},
            "storage": {"bucket": "b"},
            "health": {"listen": "127.0.0.1:0"},
        }
    )
    server = HealthServer(
        config,
        PageSources(check=check, metrics=Metrics().render, jobs=ledger.snapshot),
        webhook_path=PROVIDER.webhook_path,
    )
    server.start()
    try:
        assert get(server.address, "/healthz")[0] == 200
        release = threading.Event()
        loop.call_soon_threadsafe(release.wait, 10)  # the event loop is stuck in this call

        def stuck() -> dict[str, Any] | None:
            status, body = get(server.address, "/healthz")
            return json.loads(body) if status == 503 else None

        body = wait_for(stuck, timeout=5)
        assert body["loop_alive"] is False and body["ledger_writable"] is True
        release.set()
        wait_for(lambda: get(server.address, "/healthz")[0] == 200, timeout=5)
        ledger.close()
        status, raw = get(server.address, "/healthz")
        assert status == 503 and json.loads(raw)["ledger_writable"] is False
    finally:
        server.close()
        loop.call_soon_threadsafe(stop.set)
        beating.result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()
        ledger.close()
    # The port is released: probing it now fails.
    with pytest.raises(OSError):
        probe(server.address, timeout=1)


def test_health_command_probes_the_server_and_fails_once_it_is_gone(tmp_path: Path) -> None:
    """``seedance-watch health`` (the container's HEALTHCHECK) exits 0 with the /healthz
    body while the server answers 200, and 1 when nothing listens any more."""
    ledger = Ledger.open(tmp_path / "state")
    config = Config.model_validate(
        {
            "paths": {"state": str(tmp_path / "state")},
            "storage": {"bucket": "b"},
            "health": {"listen": "127.0.0.1:0"},
        }
    )
    server = HealthServer(
        config,
        PageSources(
            check=lambda: (True, {"ready": True}), metrics=Metrics().render, jobs=ledger.snapshot
        ),
        webhook_path=PROVIDER.webhook_path,
    )
    server.start()
    config_file = tmp_path / "seedance-watch.yaml"
    config_file.write_text(
        f"storage: {{bucket: b}}\nhealth: {{listen: '127.0.0.1:{server.address[1]}'}}\n"
    )

    def health() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "seedance_watch", "health", "--config", str(config_file)],
            capture_output=True,
            text=True,
            timeout=30,
        )

    try:
        answer = health()
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout) == {"status": "ok", "ready": True}
    finally:
        server.close()
        ledger.close()
    assert health().returncode == 1


def test_with_a_token_the_health_command_sends_it_and_others_get_the_status_alone(
    tmp_path: Path,
) -> None:
    """With ``health.token`` (a page reachable from outside), an anonymous GET /healthz
    gets the status code and ``{"status": ...}`` only, while ``seedance-watch health``
    (the container's HEALTHCHECK) sends the token and prints the details; a 503 stays
    a 503 for both (item 9 of the third hardening round)."""
    token = "health-test-token-0123456789"
    ledger = Ledger.open(tmp_path / "state")
    config = Config.model_validate(
        {
            "paths": {"state": str(tmp_path / "state")},
            "storage": {"bucket": "b"},
            "health": {"listen": "127.0.0.1:0", "token": token},
        }
    )
    healthy = [True]
    details = {"paused": {"storage": "bucket b at http://s3.internal refused beach.jpg"}}
    server = HealthServer(
        config,
        PageSources(
            check=lambda: (healthy[0], details), metrics=Metrics().render, jobs=ledger.snapshot
        ),
        webhook_path=PROVIDER.webhook_path,
    )
    server.start()
    config_file = tmp_path / "seedance-watch.yaml"
    config_file.write_text(
        "storage: {bucket: b}\n"
        f"health: {{listen: '127.0.0.1:{server.address[1]}', token: '{token}'}}\n"
    )

    def health() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "seedance_watch", "health", "--config", str(config_file)],
            capture_output=True,
            text=True,
            timeout=30,
        )

    try:
        assert get(server.address, "/healthz") == (200, b'{"status":"ok"}')
        answer = health()
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout) == {"status": "ok", **details}
        healthy[0] = False
        assert get(server.address, "/healthz") == (503, b'{"status":"unhealthy"}')
        sick = health()
        assert sick.returncode == 1 and json.loads(sick.stdout)["paused"] == details["paused"]
    finally:
        server.close()
        ledger.close()
