"""The real daemon end to end: inbox → S3 (moto server) → simulator → outbox."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import av
import pytest

from seedance_watch.simulator import Simulator
from seedance_watch.testing.s3emulator import S3Emulator

from .helpers import (
    DaemonProcess,
    WritePair,
    daemon_env,
    files_under,
    free_port,
    fresh_bucket,
    make_image_bytes,
    run_once,
    sha256,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.timeout(90), pytest.mark.sim(video_seconds=0.5, video_fps=8)]


def decoded_frames(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        return sum(1 for _ in container.decode(stream))


FORMATS = [
    ("beach", ".jpg", "JPEG", ""),
    ("plage d'été", ".png", "PNG", "sub"),
    ("dune", ".webp", "WEBP", "sub/deep"),
    ("forêt", ".bmp", "BMP", "sub"),
    ("quai", ".tiff", "TIFF", ""),
    ("nuage", ".gif", "GIF", "other"),
    ("Caps", ".JPEG", "JPEG", "other"),
]


def test_once_turns_every_pair_into_a_video(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """Pairs of every format, in subfolders with unicode names, each become an mp4 + JSON;
    the inputs move to done/, nothing is left in the bucket, one submit per job."""
    bucket = fresh_bucket(s3_server)
    config_path = write_config(tmp_path, s3_server, sim, bucket=bucket)
    inbox = tmp_path / "inbox"
    sources: dict[str, bytes] = {}
    for stem, ext, fmt, sub in FORMATS:
        image, _ = write_pair(
            inbox / sub,
            stem,
            ext=ext,
            fmt=fmt,
            sidecar=f'prompt: "Slow waves at {stem}"\nratio: 16:9\nseed: 7\n',
        )
        sources[str(image.relative_to(inbox))] = image.read_bytes()

    result, _ = run_once(config_path)

    assert result.exit_code == 0, result.summary
    assert len(result.summary.done) == len(FORMATS) and not result.summary.failed
    assert files_under(inbox) == []
    assert len(sim.submits) == len(FORMATS)
    assert s3_server.keys(bucket) == []
    by_task = {record.task_id: record for record in sim.submits}
    for source, image_bytes in sources.items():
        sub = str(Path(source).parent)
        stem = Path(source).stem
        out_dir = tmp_path / "outbox" / sub
        meta = json.loads((out_dir / f"{stem}.json").read_text())
        video = (out_dir / f"{stem}.mp4").read_bytes()
        record = by_task[meta["task_id"]]
        assert meta["source"] == source
        assert meta["source_sha256"] == sha256(image_bytes) == record.image_sha256
        assert meta["text"] == (
            f"Slow waves at {stem} --resolution 720p --ratio 16:9 --duration 5 "
            "--camerafixed false --seed 7"
        )
        assert meta["text"] == record.text
        assert meta["prompt"] == f"Slow waves at {stem}"
        assert meta["model"] == "seedance-1-0-pro-fast-251015"
        assert meta["video_sha256"] == sha256(video) and meta["video_bytes"] == len(video)
        assert video == sim.video_bytes(meta["task_id"])
        assert meta["usage"]["total_tokens"] > 0
        assert meta["submitted_at"].endswith("Z") and meta["completed_at"].endswith("Z")
        for key in ("job_id", "task_id", "submitted_at", "completed_at"):
            assert meta[key]
        assert (tmp_path / "done" / source).read_bytes() == image_bytes
        assert (tmp_path / "done" / sub / f"{stem}.yaml").exists()
    # The requests were exactly the documented shape.
    for record in sim.submits:
        assert record.headers["ocp-apim-subscription-key"] == "sim-key"
        assert record.headers["content-type"] == "application/json"
        assert record.headers["cache-control"] == "no-cache"
        assert set(record.body) == {"model", "content"}
        text_item, image_item = record.body["content"]
        assert text_item["type"] == "text" and image_item["type"] == "image_url"
        assert isinstance(image_item["image_url"], str)
        assert "X-Amz-Signature" in image_item["image_url"]
    # The video is real: PyAV decodes its H.264 frames.
    first = next(iter(by_task))
    assert decoded_frames(sim.video_bytes(first)) >= 2


def test_status_json_counts_the_jobs(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """`status --json` (the CLI) reports the jobs of a finished run by state."""
    config_path = write_config(tmp_path, s3_server, sim)
    write_pair(tmp_path / "inbox", "good")
    write_pair(tmp_path / "inbox", "bad", sidecar="prompt: x\nresolutoin: 720p\n")
    result, _ = run_once(config_path)
    assert result.exit_code == 4  # one job failed
    out = subprocess.run(
        [sys.executable, "-m", "seedance_watch", "status", "--json", "--config", str(config_path)],
        capture_output=True,
        text=True,
        env=daemon_env(),
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["counts"] == {"done": 1, "failed": 1}
    by_source = {job["source"]: job for job in report["jobs"]}
    assert by_source["good.jpg"]["state"] == "done" and by_source["good.jpg"]["task_id"]
    assert by_source["bad.jpg"]["error"]["code"] == "invalid_sidecar"
    assert set(by_source["bad.jpg"]) >= {"job_id", "source", "state", "task_id", "error"}
    report_file = json.loads((tmp_path / "failed" / "bad.error.json").read_text())
    assert report_file["code"] == "invalid_sidecar"
    assert "resolutoin" in report_file["message"]
    assert report_file["job_id"] == by_source["bad.jpg"]["job_id"]
    assert {"hint", "stage", "at", "http_status", "task_id"} <= set(report_file)
    assert len(sim.submits) == 1


def test_gateway_rejection_fails_the_job_with_a_report(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """A 404 for an unknown model is a clear report (gateway_rejected), not a crash."""
    bucket = fresh_bucket(s3_server)
    config_path = write_config(tmp_path, s3_server, sim, bucket=bucket)
    write_pair(tmp_path / "inbox", "x", sidecar="prompt: hello\nmodel: seedance-9-nope\n")
    result, _ = run_once(config_path)
    assert result.exit_code == 4
    report = json.loads((tmp_path / "failed" / "x.error.json").read_text())
    assert report["code"] == "gateway_rejected"
    assert report["http_status"] == 404
    assert "seedance-9-nope" in report["message"]
    assert (tmp_path / "failed" / "x.jpg").exists() and (tmp_path / "failed" / "x.yaml").exists()
    assert s3_server.keys(bucket) == []


def test_existing_outputs_are_never_overwritten(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """A second drop named like an earlier output gets NAME-2.mp4 and NAME-2.json."""
    config_path = write_config(tmp_path, s3_server, sim, extra="dedupe: false\n")
    (tmp_path / "outbox").mkdir(exist_ok=True)
    (tmp_path / "outbox" / "beach.mp4").write_bytes(b"someone else's file")
    write_pair(tmp_path / "inbox", "beach")
    result, _ = run_once(config_path)
    assert result.exit_code == 0
    assert (tmp_path / "outbox" / "beach.mp4").read_bytes() == b"someone else's file"
    meta = json.loads((tmp_path / "outbox" / "beach-2.json").read_text())
    assert (tmp_path / "outbox" / "beach-2.mp4").read_bytes() == sim.video_bytes(meta["task_id"])


def test_identical_drop_is_not_paid_twice(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """Dropping an identical pair again costs no submit; its video is copied, duplicate_of."""
    config_path = write_config(tmp_path, s3_server, sim)
    write_pair(tmp_path / "inbox", "beach")
    first, _ = run_once(config_path)
    write_pair(tmp_path / "inbox", "beach")
    second, _ = run_once(config_path)
    assert first.exit_code == second.exit_code == 0
    assert len(sim.submits) == 1
    meta = json.loads((tmp_path / "outbox" / "beach-2.json").read_text())
    assert meta["duplicate_of"] == first.summary.done[0]
    assert (tmp_path / "outbox" / "beach-2.mp4").read_bytes() == (
        tmp_path / "outbox" / "beach.mp4"
    ).read_bytes()
    assert (tmp_path / "done" / "beach-2.jpg").exists()
    # A third identical drop names the job that was paid for, not the copy.
    write_pair(tmp_path / "inbox", "beach")
    third, _ = run_once(config_path)
    assert third.exit_code == 0 and len(sim.submits) == 1
    meta3 = json.loads((tmp_path / "outbox" / "beach-3.json").read_text())
    assert meta3["duplicate_of"] == first.summary.done[0]


def test_once_ends_when_the_gateway_stays_unreachable(
    tmp_path: Path,
    s3_server: S3Emulator,
    sim: Simulator,
    write_pair: WritePair,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`run --once` against a gateway that refuses connections does not wait forever:
    after a few never-sent submits it exits 1, the job waits (uploaded) in the ledger and
    its inputs stay in the inbox; the daemon itself would keep retrying."""
    from seedance_watch.ledger.jsonl import read_jobs
    from seedance_watch.pipeline import once

    monkeypatch.setitem(once.ONCE_ATTEMPTS, "submit", 2)  # keep the backoff short
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config_path = write_config(tmp_path, s3_server, sim)
    config_path.write_text(config_path.read_text().replace(sim.base_url, dead))
    write_pair(tmp_path / "inbox", "beach")
    result, config = run_once(config_path)
    assert result.exit_code == 1
    assert result.summary.unfinished and "submit" in result.summary.unfinished
    assert files_under(tmp_path / "inbox") == ["beach.jpg", "beach.yaml"]
    assert [job.state.value for job in read_jobs(config.paths.state).values()] == ["uploaded"]
    assert len(sim.submits) == 0


def _slow_writer(path: Path, data: bytes, chunks: int, pause: float) -> threading.Thread:
    def write() -> None:
        step = len(data) // chunks + 1
        with open(path, "wb") as f:
            for i in range(0, len(data), step):
                f.write(data[i : i + step])
                f.flush()
                threading.Event().wait(pause)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_daemon_processes_drops_while_running_and_stops_on_sigterm(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """The long-running daemon: image-first and sidecar-first arrivals, a slowly written
    image uploaded only when complete, then SIGTERM exits 0."""
    config_path = write_config(tmp_path, s3_server, sim, settle=0.3)
    inbox = tmp_path / "inbox"
    daemon = DaemonProcess(config_path)
    try:
        wait_for(lambda: daemon.has_event("inbox.watching"), timeout=30)
        # Image first, sidecar later.
        (inbox / "first.jpg").write_bytes(make_image_bytes(700, 500))
        # Arrival order is the point here: the image sits alone past the settle time.
        threading.Event().wait(0.8)
        assert not daemon.has_event("job.created")
        (inbox / "first.yaml").write_text("prompt: image came first\n")
        # Sidecar first, image later (in a subfolder created while running).
        (inbox / "later").mkdir()
        (inbox / "later" / "second.yaml").write_text("prompt: sidecar came first\n")
        (inbox / "later" / "second.png").write_bytes(make_image_bytes(640, 640, fmt="PNG"))
        # A slowly written image: its sidecar is already there.
        big = make_image_bytes(1200, 800)
        (inbox / "slow.yaml").write_text("prompt: written slowly\n")
        writer = _slow_writer(inbox / "slow.jpg", big, chunks=8, pause=0.15)
        writer.join()
        outbox = tmp_path / "outbox"
        wait_for(
            lambda: all(
                (outbox / p).exists() for p in ("first.mp4", "later/second.mp4", "slow.mp4")
            ),
            timeout=60,
        )
        slow_meta = json.loads((outbox / "slow.json").read_text())
        assert slow_meta["source_sha256"] == sha256(big)
        by_task = {r.task_id: r for r in sim.submits}
        assert by_task[slow_meta["task_id"]].image_sha256 == sha256(big)
        assert len(sim.submits) == 3
    finally:
        if daemon.proc.poll() is None:
            daemon.signal(signal.SIGTERM)
        code = daemon.wait(timeout=40)
    assert code == 0
    assert daemon.has_event("daemon.stopped")
    assert files_under(inbox) == []


def test_second_daemon_on_the_same_state_exits_2(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """Two daemons never share a state folder: the second exits 2 naming the holder."""
    config_path = write_config(tmp_path, s3_server, sim)
    first = DaemonProcess(config_path)
    try:
        wait_for(lambda: first.has_event("inbox.watching"), timeout=30)
        second = subprocess.run(
            [sys.executable, "-m", "seedance_watch", "run", "--config", str(config_path)],
            capture_output=True,
            text=True,
            env=daemon_env(),
            timeout=30,
        )
        assert second.returncode == 2
        assert str(first.proc.pid) in second.stderr
    finally:
        first.signal(signal.SIGTERM)
        assert first.wait(timeout=40) == 0
