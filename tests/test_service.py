"""Signals and sd_notify on the real daemon subprocess (docs/design.md, "Exit codes", "The status
page")."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from seedance_watch.commands.status import status_report
from seedance_watch.ledger.jsonl import JsonlReader
from seedance_watch.simulator import Simulator
from seedance_watch.testing.s3emulator import S3Emulator

from .helpers import DaemonProcess, WritePair, wait_for, write_config
from .sdnotify_socket import NotifySocket

pytestmark = pytest.mark.timeout(60)

SUBMITTING = re.compile(r'"state":\s*"submitting"')


def _submitting(state: Path) -> bool:
    """True once a submit intent is durable (the submit call is in flight)."""
    return any(SUBMITTING.search(p.read_text(errors="replace")) for p in state.glob("*.jsonl"))


def _slow_submits(sim: Simulator, seconds: float) -> None:
    sim.configure(slow_reply_rate=1.0, slow_reply_seconds=seconds, faults_on={"submit"})


@pytest.mark.slow
def test_sigterm_drains_a_submit_in_flight_exits_0_and_the_next_start_resumes_it(
    tmp_path: Path,
    s3_server: S3Emulator,
    sim: Simulator,
    write_pair: WritePair,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM during a submit lets it finish, exits 0; the next start sends READY=1 only
    after recovering the job, pings the watchdog, reports STATUS=, polls the task it
    already has (one submit in all) and says STOPPING=1 on the next SIGTERM."""
    config = write_config(tmp_path, s3_server, sim)
    _slow_submits(sim, 1.5)
    first = DaemonProcess(config)
    try:
        write_pair(tmp_path / "inbox", "beach")
        wait_for(lambda: _submitting(tmp_path / "state"), timeout=20)
        first.signal(signal.SIGTERM)
        started = time.monotonic()
        assert first.wait(timeout=25) == 0
        assert time.monotonic() - started < 20  # the drain bound
    finally:
        first.kill()
    names = [e.get("event") for e in first.events()]
    assert "daemon.draining" in names
    assert "job.submitted" in names, "the in-flight submit was not allowed to finish"
    assert names.index("daemon.draining") < names.index("job.submitted")
    assert len(sim.submits) == 1
    assert not list((tmp_path / "outbox").glob("*.mp4"))

    sim.configure(slow_reply_rate=0.0)
    notify = NotifySocket(f"@seedance-watch-svc-{time.monotonic_ns()}")
    monkeypatch.setenv("NOTIFY_SOCKET", notify.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    log_at_ready: list[str] = []
    second = DaemonProcess(config)
    try:

        def ready() -> bool:
            if any(text.startswith("READY=1") for text in notify.texts()):
                if not log_at_ready:
                    log_at_ready.append(second.log_path.read_text())
                return True
            return False

        wait_for(ready, timeout=20)
        wait_for(lambda: list((tmp_path / "outbox").glob("beach.mp4")), timeout=20)
        wait_for(lambda: any("1 done" in t for t in notify.texts()), timeout=10)
        wait_for(lambda: notify.texts().count("WATCHDOG=1") >= 2, timeout=10)
        second.signal(signal.SIGTERM)
        assert second.wait(timeout=25) == 0
    finally:
        second.kill()
        notify.close()
    # READY came after recovery took up the job and after the inbox was watched.
    assert '"job.recovered"' in log_at_ready[0] and '"inbox.watching"' in log_at_ready[0]
    assert len(sim.submits) == 1, "the job was submitted again after the restart"
    texts = notify.texts()
    assert "STOPPING=1" in texts
    assert "STATUS=jobs: 0 active, 1 done, 0 failed" in texts


def test_a_second_sigint_exits_at_once_with_130(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """SIGINT starts the drain; a second SIGINT exits 130 at once, not after the slow
    submit, and the ledger stays readable."""
    config = write_config(tmp_path, s3_server, sim)
    _slow_submits(sim, 4.0)
    daemon = DaemonProcess(config)
    try:
        write_pair(tmp_path / "inbox", "beach")
        wait_for(lambda: _submitting(tmp_path / "state"), timeout=20)
        daemon.signal(signal.SIGINT)
        wait_for(lambda: daemon.has_event("daemon.draining"), timeout=10)
        daemon.signal(signal.SIGINT)
        started = time.monotonic()
        assert daemon.wait(timeout=10) == 130
        assert time.monotonic() - started < 2.0
    finally:
        daemon.kill()
    assert daemon.has_event("daemon.second_sigint")
    assert not daemon.has_event("job.submitted")
    report = status_report(JsonlReader(tmp_path / "state"))
    assert sum(report["counts"].values()) == 1


def test_sighup_applies_log_settings_names_what_needs_a_restart_and_sigint_exits_130(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """After SIGHUP the new log format and level apply at once; a changed gateway key is
    reported as needing a restart; a single SIGINT on an idle daemon exits 130."""
    config = write_config(tmp_path, s3_server, sim)
    daemon = DaemonProcess(config)
    try:
        wait_for(lambda: daemon.has_event("daemon.ready"), timeout=20)
        text = config.read_text()
        text = text.replace(
            "log: {format: json, level: debug}", "log: {format: console, level: warning}"
        )
        text = text.replace("poll_interval: 0.1", "poll_interval: 0.3")
        config.write_text(text)
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: "config.reload_needs_restart" in daemon.log_path.read_text(), timeout=10)
        daemon.signal(signal.SIGINT)
        assert daemon.wait(timeout=25) == 130
    finally:
        daemon.kill()
    assert daemon.has_event("config.reloaded")  # said in JSON, before the switch
    after = daemon.log_path.read_text().split('"config.reloaded"', 1)[1].splitlines()[1:]
    restart = [line for line in after if "config.reload_needs_restart" in line]
    assert restart and not restart[0].startswith("{"), "the new format did not apply"
    assert "gateway.poll_interval" in restart[0]
    # Info events (daemon.signal, daemon.stopped) are below the new level.
    assert not any("daemon.signal" in line or "daemon.stopped" in line for line in after)
