"""The daemon against a real S3 server (SeaweedFS on loopback, real credentials).

moto checks no signature and takes names a real store refuses; SeaweedFS checks
every signature, so here the presigned URLs the simulator fetches are proven good,
a wrong secret is refused as it would be by any S3, and a tampered URL fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from seedance_watch.errors import StorageUnavailable
from seedance_watch.files.storage import Storage
from seedance_watch.ledger.jsonl import read_jobs
from seedance_watch.simulator import Simulator

from .helpers import (
    DaemonProcess,
    daemon_env,
    files_under,
    make_image_bytes,
    run_once,
    wait_for,
    write_config,
)
from .seaweedfs import SeaweedFS
from .simhelpers import quick_tasks

pytestmark = pytest.mark.timeout(120)


@dataclass(frozen=True)
class Settings:
    """The ``storage:`` settings ``Storage`` reads."""

    bucket: str
    endpoint_url: str
    prefix: str = "seedance-watch/"
    region: str | None = "us-east-1"
    url_mode: str = "presigned"
    public_base_url: str | None = None
    presign_expires: int = 600


@pytest.fixture
def bucket(seaweedfs: SeaweedFS) -> str:
    """A fresh bucket per test (a name a real store takes: lower case, 3 to 63)."""
    name = f"sw-{uuid.uuid4().hex[:12]}"
    seaweedfs.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def real_credentials(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's identity in boto3's standard chain (the in-process daemon's too)."""
    for key, value in seaweedfs.credentials.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(quick_tasks()) as simulator:
        yield simulator


def _drop_every_kind(inbox: Path) -> None:
    """An image drop (with a name no key could hold), a frames drop, a text drop and a
    reference drop."""
    odd = "nl\nname " + os.fsdecode(b"caf\xe9")
    (inbox / f"{odd}.jpg").write_bytes(make_image_bytes(640, 480, color=(200, 40, 40)))
    (inbox / f"{odd}.yaml").write_text('prompt: "A red wall"\n')
    (inbox / "beach.jpg").write_bytes(make_image_bytes(640, 480, color=(40, 120, 200)))
    (inbox / "beach-end.png").write_bytes(make_image_bytes(640, 480, "PNG", (40, 200, 120)))
    (inbox / "beach.yaml").write_text('prompt: "Waves roll in"\nlast_frame: beach-end.png\n')
    (inbox / "poem.yaml").write_text('prompt: "A lighthouse at night"\nmode: text\n')
    (inbox / "shoe.jpg").write_bytes(make_image_bytes(600, 600, color=(90, 90, 30)))
    (inbox / "shoe-side.png").write_bytes(make_image_bytes(600, 600, "PNG", (30, 90, 90)))
    (inbox / "ad.yaml").write_text(
        'prompt: "The shoe turns"\nreferences: [shoe.jpg, shoe-side.png]\n'
    )


def test_every_kind_of_drop_through_a_real_s3_server(
    tmp_path: Path, seaweedfs: SeaweedFS, bucket: str, real_credentials: None, sim: Simulator
) -> None:
    """``run --once`` with four kinds of drop: every image goes up under the job id and a
    fixed name, the simulator fetches each through its presigned URL (SeaweedFS checks
    the signature: a bad one is a 403 and the task would fail), every drop becomes a
    video, and no object is left in the bucket."""
    config_path = write_config(tmp_path, seaweedfs, sim, bucket=bucket)
    _drop_every_kind(tmp_path / "inbox")
    started = time.monotonic()
    result, _ = run_once(config_path)
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result
    assert len(result.summary.done) == 4
    assert sorted(r.kind for r in sim.submits) == ["frames", "image", "reference", "text"]
    names = sorted(
        url.split("?")[0].rsplit("/", 1)[-1] for r in sim.submits for url in r.fetched_urls
    )
    assert names == ["image.jpg", "image.jpg", "last_frame.png", "reference-1.jpg",
                     "reference-2.png"]  # fmt: skip
    for record in sim.submits:
        for url in record.fetched_urls:
            assert "X-Amz-Signature=" in url and url.startswith(seaweedfs.endpoint_url)
    assert len(list((tmp_path / "outbox").glob("*.mp4"))) == 4
    assert files_under(tmp_path / "inbox") == []
    assert seaweedfs.keys(bucket) == []
    print(f"four drops through SeaweedFS in {elapsed:.1f} s")


def test_presigned_urls_are_checked_by_the_server(
    tmp_path: Path, seaweedfs: SeaweedFS, bucket: str, real_credentials: None
) -> None:
    """The daemon's presigned URL gives the exact bytes with their Content-Type; the same
    URL with its signature, its key or its expiry altered is refused (403)."""
    data = make_image_bytes()
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    storage = Storage(Settings(bucket, seaweedfs.endpoint_url))
    try:
        key = storage.key_for("job-1", "image.jpg")
        storage.upload(path, key, content_type="image/jpeg")
        storage.upload(path, storage.key_for("job-2", "image.jpg"), content_type="image/jpeg")
        url = storage.url_for(key)
    finally:
        storage.close()
    good = httpx.get(url)
    assert good.status_code == 200 and good.content == data
    assert good.headers["content-type"] == "image/jpeg"
    signature = url.rsplit("X-Amz-Signature=", 1)[1]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    tampered = {
        "signature": url.replace(signature, flipped),
        "key": url.replace("/job-1/", "/job-2/"),
        "expiry": url.replace("X-Amz-Expires=600", "X-Amz-Expires=604800"),
    }
    for what, bad in tampered.items():
        answer = httpx.get(bad)
        assert answer.status_code == 403, (what, answer.status_code, answer.text[:200])
        assert "SignatureDoesNotMatch" in answer.text, what


def test_a_wrong_secret_is_refused_and_says_so(
    tmp_path: Path, seaweedfs: SeaweedFS, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storage with the right key id and a wrong secret: the bucket check and an upload
    are StorageUnavailable (a pause), naming the server's code and the bucket."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.credentials["AWS_ACCESS_KEY_ID"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    path = tmp_path / "a.jpg"
    path.write_bytes(make_image_bytes())
    storage = Storage(Settings(bucket, seaweedfs.endpoint_url), max_retries=0)
    try:
        with pytest.raises(StorageUnavailable, match=bucket) as upload:
            storage.upload(path, storage.key_for("j", "image.jpg"), content_type="image/jpeg")
        with pytest.raises(StorageUnavailable, match="access denied"):
            storage.check()
    finally:
        storage.close()
    assert "SignatureDoesNotMatch" in str(upload.value)
    assert "not-the-secret" not in str(upload.value)
    assert seaweedfs.keys(bucket) == []


def test_the_daemon_with_a_wrong_secret_pauses_storage_and_says_why(
    tmp_path: Path, seaweedfs: SeaweedFS, bucket: str, sim: Simulator
) -> None:
    """The real daemon, a wrong secret: the first upload is refused, uploads pause (the
    log and daemon.json say why: the server's SignatureDoesNotMatch), nothing fails,
    nothing is submitted, the drop stays in the inbox, and SIGTERM stops it cleanly."""
    config_path = write_config(tmp_path, seaweedfs, sim, bucket=bucket)
    env = dict(seaweedfs.credentials, AWS_SECRET_ACCESS_KEY="not-the-secret")
    (tmp_path / "inbox" / "a.jpg").write_bytes(make_image_bytes())
    (tmp_path / "inbox" / "a.yaml").write_text('prompt: "A quiet street"\n')
    daemon = DaemonProcess(config_path, env=env)
    try:
        paused = wait_for(
            lambda: next((e for e in daemon.events() if e.get("event") == "storage.paused"), None),
            timeout=30,
        )
        status = json.loads((tmp_path / "state" / "daemon.json").read_text())
        assert daemon.proc.poll() is None
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        daemon.kill()
    assert "SignatureDoesNotMatch" in paused["reason"] and bucket in paused["reason"]
    assert "not-the-secret" not in daemon.log_path.read_text(errors="replace")
    assert "SignatureDoesNotMatch" in json.dumps(status)
    assert sim.submits == []
    assert files_under(tmp_path / "inbox") == ["a.jpg", "a.yaml"]
    assert files_under(tmp_path / "failed") == []
    assert seaweedfs.keys(bucket) == []


def test_check_and_a_run_report_a_wrong_secret_before_any_drop(
    tmp_path: Path, seaweedfs: SeaweedFS, bucket: str, sim: Simulator
) -> None:
    """The first hour's mistake, against a server that checks signatures: ``check`` with
    a wrong secret exits 1 naming the bucket and the server's refusal (never the
    secret), and ``run --once`` exits 1 at start-up, before it takes the drop waiting
    in the inbox: nothing uploaded, nothing submitted."""
    config_path = write_config(tmp_path, seaweedfs, sim, bucket=bucket)
    (tmp_path / "state").mkdir()
    (tmp_path / "inbox" / "a.jpg").write_bytes(make_image_bytes())
    (tmp_path / "inbox" / "a.yaml").write_text('prompt: "A quiet street"\n')
    env = daemon_env(aws=dict(seaweedfs.credentials, AWS_SECRET_ACCESS_KEY="not-the-secret"))
    command = [sys.executable, "-m", "seedance_watch"]
    checked = subprocess.run(
        [*command, "check", "--config", str(config_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 1, checked.stdout + checked.stderr
    (error,) = [line for line in checked.stdout.splitlines() if line.startswith("error: ")]
    assert bucket in error and "SignatureDoesNotMatch" in error, error
    assert "not-the-secret" not in checked.stdout + checked.stderr
    ran = subprocess.run(
        [*command, "run", "--once", "--config", str(config_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 1, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert "SignatureDoesNotMatch" in ran.stdout + ran.stderr
    assert files_under(tmp_path / "inbox") == ["a.jpg", "a.yaml"]
    assert sim.submit_attempts == 0 and seaweedfs.keys(bucket) == []
    assert read_jobs(tmp_path / "state") == {}  # the drop was never taken
