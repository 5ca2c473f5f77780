"""The API key stays secret: where it is read from, and a canary that must leak nowhere."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from seedance_watch.providers.keys import load_api_key
from seedance_watch.providers.pixazo import PROVIDER
from seedance_watch.simulator import Simulator, SimulatorConfig
from seedance_watch.testing.s3emulator import S3Emulator

from .helpers import DaemonProcess, daemon_env, wait_for, write_config

KEYS = PROVIDER.keys

pytestmark = pytest.mark.timeout(60)

CANARY = "pk-canary-5e1f0c9a7b3d4e2f"
#: A session token in boto3's chain, so that signed S3 requests carry X-Amz-Security-Token.
SESSION_CANARY = "st-canary-0b8e2d4f6a1c3e5g"


@dataclass
class CanaryRun:
    root: Path
    log_text: str
    events: list[dict[str, Any]]
    sim: Simulator


@pytest.fixture(scope="module")
def canary_run(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Emulator
) -> Iterator[CanaryRun]:
    """The real daemon with the canary key (and an AWS session token) at debug level: a
    401 phase (wrong key on the gateway), then 5xx faults on submits and polls, until
    two jobs are done."""
    root = tmp_path_factory.mktemp("canary")
    sim_config = SimulatorConfig(
        api_key="a-different-key",
        queued_seconds=0.05,
        running_seconds=0.2,
        video_seconds=0.5,
        seed=11,
    )
    with Simulator(sim_config) as sim:
        config = write_config(root, s3_server, sim)
        for stem in ("beach", "dune"):
            (root / "inbox" / f"{stem}.jpg").write_bytes(_image())
            (root / "inbox" / f"{stem}.yaml").write_text(f'prompt: "Waves at {stem}"\n')
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_SESSION_TOKEN", SESSION_CANARY)  # moto accepts any token
            daemon = DaemonProcess(config, key=CANARY)
        try:
            wait_for(lambda: daemon.has_event("gateway.credentials_refused"), timeout=20)
            sim.configure(
                api_key=CANARY, error_5xx_rate=0.4, faults_on=frozenset({"submit", "poll"})
            )
            wait_for(lambda: len(list((root / "outbox").glob("*.mp4"))) == 2, timeout=40)
        finally:
            daemon.signal()
            daemon.wait(timeout=30)
            daemon.kill()
        yield CanaryRun(root, daemon.log_path.read_text(errors="replace"), daemon.events(), sim)


def _image() -> bytes:
    from .helpers import make_image_bytes

    return make_image_bytes()


def test_the_canary_key_appears_nowhere_through_a_401_phase_and_5xx_retries(
    canary_run: CanaryRun,
) -> None:
    """Not in the debug log, the ledger, the outputs or the moved inputs (nor the AWS
    session token); signed URL queries are not logged either.  The run really went
    through refusals and retries."""
    names = [e.get("event") for e in canary_run.events]
    assert "gateway.credentials_refused" in names and "gateway.credentials_accepted" in names
    assert "job.retry" in names, "the fault dice produced no retry; pick another seed"
    assert any(e.get("logger", "").startswith("httpx") for e in canary_run.events)
    assert any(s.headers.get("ocp-apim-subscription-key") == CANARY for s in canary_run.sim.submits)
    assert "X-Amz-Signature" not in canary_run.log_text
    assert "X-Amz-Credential" not in canary_run.log_text
    leaks = [
        str(path.relative_to(canary_run.root))
        for path in canary_run.root.rglob("*")
        if path.is_file() and any(c.encode() in path.read_bytes() for c in (CANARY, SESSION_CANARY))
    ]
    assert leaks == []
    assert CANARY not in canary_run.log_text  # (the log is one of the files above)


def test_signed_s3_requests_leave_no_credential_in_the_debug_log(canary_run: CanaryRun) -> None:
    """botocore's debug dumps of signed requests are in the log, but without the
    Authorization value (``Credential=`` access key id, ``Signature=``) and without the
    session token: X-Amz-Security-Token appears, if at all, only with a masked value."""
    text = canary_run.log_text
    assert "Sending http request" in text, "no S3 request dump at debug: the test saw nothing"
    assert "Signature=" not in text
    assert "Credential=" not in text
    assert SESSION_CANARY not in text
    unmasked = re.search(r"X-Amz-Security-Token(?!': '\*\*\*')", text, re.IGNORECASE)
    assert unmasked is None, text[unmasked.start() - 200 : unmasked.end() + 200]


def test_every_job_event_carries_its_job_id(canary_run: CanaryRun) -> None:
    """job.* and task.* events name their job, so one job's story can be filtered."""
    job_events = [
        e for e in canary_run.events if str(e.get("event", "")).startswith(("job.", "task."))
    ]
    assert len(job_events) >= 8
    assert [e for e in job_events if not e.get("job_id")] == []


def test_the_key_is_read_in_spec_order_and_its_repr_is_masked(tmp_path: Path) -> None:
    """$CREDENTIALS_DIRECTORY, then PIXAZO_API_KEY_FILE, then PIXAZO_API_KEY, then
    ~/.pixazo/api-key; repr() and str() never show the key."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "pixazo-api-key").write_text("from-credential\n")
    (tmp_path / "file-key").write_text("from-file\n")
    (tmp_path / ".pixazo").mkdir()
    (tmp_path / ".pixazo" / "api-key").write_text("from-home\n")
    env = {
        "CREDENTIALS_DIRECTORY": str(creds),
        "PIXAZO_API_KEY_FILE": str(tmp_path / "file-key"),
        "PIXAZO_API_KEY": "from-env",
    }
    order = []
    for drop in (None, "CREDENTIALS_DIRECTORY", "PIXAZO_API_KEY_FILE", "PIXAZO_API_KEY"):
        env.pop(drop or "", None)
        key = load_api_key(env, KEYS, home=tmp_path)
        order.append(key.reveal())
        assert key.reveal() not in repr(key) and key.reveal() not in str(key)
        assert key.source in repr(key)
    assert order == ["from-credential", "from-file", "from-env", "from-home"]


def test_a_missing_key_is_a_clear_start_up_error_naming_the_sources(tmp_path: Path) -> None:
    """`run` without any key exits 2 and names the four places it looked."""
    config = tmp_path / "seedance-watch.yaml"
    config.write_text("storage: {bucket: b}\nlog: {format: json}\n")
    env = daemon_env()
    env.pop("PIXAZO_API_KEY")
    env["HOME"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "seedance_watch", "run", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=os.fspath(tmp_path),
    )
    assert proc.returncode == 2, proc.stderr
    for source in (
        "$CREDENTIALS_DIRECTORY/pixazo-api-key",
        "PIXAZO_API_KEY_FILE",
        "PIXAZO_API_KEY",
        "~/.pixazo/api-key",
    ):
        assert source in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "state").exists(), "nothing should start without a key"
