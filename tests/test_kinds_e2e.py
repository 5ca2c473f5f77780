"""The three kinds of drop end to end (docs/design.md, "Pairing", "Outputs", "Identity and
duplicates"): image, first and last frame, text to video, with the real daemon (``run --once``
in-process, or a subprocess where timing matters), the simulator and moto; every bad case of a
frames or text drop ends in failed/ with its code, and the gateway sees exactly the bodies of "The
sidecar"."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import time
from calendar import timegm
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from seedance_watch.simulator import Simulator, SubmitRecord
from seedance_watch.testing.s3emulator import S3Emulator

from .helpers import (
    DaemonProcess,
    daemon_env,
    files_under,
    fresh_bucket,
    run_once,
    sha256,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.timeout(60)

PRO_FAST = "seedance-1-0-pro-fast-251015"  # gateway.model and text_model by default
PRO = "seedance-1-0-pro-250528"  # Seedance 1.0: no first and last frame
RETIRED = "seedance-1-0-lite-t2v-250428"  # switched off on 2026-05-13
#: gateway.frames_model's default, seedance-2-0-fast: frames are a Seedance 2 feature.
FRAMES_ENDPOINT = "/seedance-2-0-fast/v1/first-last-frame-to-video-fast"
TEXT_ENDPOINT = "/byteplus/v1/generateVideoTask"
IMAGE_ENDPOINT = "/byteplus/v1/generateImage2VideoTask"
#: The commands the harness config's defaults add to every prompt.
COMMANDS = "--resolution 720p --duration 5 --camerafixed false"


def image(path: Path, size: tuple[int, int] = (640, 480), shade: int = 0) -> bytes:
    """Write a decodable image (format from the suffix) unlike any other ``shade``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    picture = Image.new("RGB", size, ((37 * shade) % 256, (91 * shade + 40) % 256, 160))
    for x in range(0, width, 16):
        picture.putpixel((x, (x * height) // width), ((x * 255) // width, shade % 256, 90))
    buf = io.BytesIO()
    picture.save(buf, format="PNG" if path.suffix == ".png" else "JPEG")
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def sidecar(path: Path, text: str) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path.read_bytes()


def frames_drop(folder: Path, stem: str, *, shade: int, extra: str = "") -> dict[str, bytes]:
    """``stem.jpg`` + ``stem-end.png`` + ``stem.yaml`` naming the end image."""
    return {
        "image": image(folder / f"{stem}.jpg", shade=shade),
        "last_frame": image(folder / f"{stem}-end.png", shade=shade + 1),
        "sidecar": sidecar(
            folder / f"{stem}.yaml",
            f'prompt: "From {stem} to its end"\nlast_frame: {stem}-end.png\n{extra}',
        ),
    }


def report(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def at_epoch(iso: str) -> int:
    """``2026-01-02T03:04:05Z`` as whole Unix seconds."""
    return timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))


def age(paths: list[Path], seconds: float) -> None:
    """Set the files' mtimes ``seconds`` into the past (as if dropped long ago)."""
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then), follow_symlinks=False)


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seedance_watch", args[0], "--config", str(config), *args[1:]],
        capture_output=True,
        text=True,
        env=daemon_env(),
        timeout=60,
        check=False,
    )


def by_endpoint(submits: list[SubmitRecord]) -> dict[str, list[SubmitRecord]]:
    out: dict[str, list[SubmitRecord]] = {}
    for record in submits:
        out.setdefault(record.endpoint, []).append(record)
    return out


def created(daemon: DaemonProcess, source: str) -> bool:
    return any(
        e.get("event") == "job.created" and e.get("source") == source for e in daemon.events()
    )


def stop(daemon: DaemonProcess) -> None:
    if daemon.proc.poll() is None:
        daemon.signal(signal.SIGTERM)
    try:
        daemon.wait(timeout=30)
    finally:
        daemon.kill()


# --- 1. the "done when" test ----------------------------------------------------------------


def test_one_inbox_with_every_kind_and_every_bad_case_ends_as_three_videos(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """One good drop of each kind and every refused frames/text drop, in one inbox:
    ``run --once`` makes exactly three videos (one submit each, with exactly the "The sidecar"
    bodies, both frames fetched by the gateway byte for byte), three JSONs with the
    right kind and hashes, every bad drop in failed/ with its code and a message that
    names the culprit, nothing left in the inbox or the bucket, no link followed."""
    bucket = fresh_bucket(s3_server)
    config = write_config(tmp_path, s3_server, sim, bucket=bucket, pair_timeout=30)
    inbox = tmp_path / "inbox"
    # The good drops.
    sunset = image(inbox / "sunset.jpg", shade=1)
    sidecar(inbox / "sunset.yaml", 'prompt: "The sun sets"\n')
    beach = frames_drop(inbox / "sub", "beach", shade=3)
    poem = sidecar(inbox / "poem.yaml", 'prompt: "Ink spreads into a poem"\nmode: text\n')
    # The bad ones.
    outside = tmp_path / "outside.png"
    outside_bytes = image(outside, shade=9)
    image(inbox / "dotdot.jpg", shade=11)
    sidecar(inbox / "dotdot.yaml", "prompt: up\nlast_frame: ../outside.png\n")
    image(inbox / "slash.jpg", shade=13)
    sidecar(inbox / "slash.yaml", "prompt: down\nlast_frame: sub/x.png\n")
    image(inbox / "link.jpg", shade=15)
    sidecar(inbox / "link.yaml", "prompt: linked\nlast_frame: link-end.png\n")
    (inbox / "link-end.png").symlink_to(outside)
    image(inbox / "clash.jpg", shade=17)
    sidecar(inbox / "clash.yaml", "prompt: words only\nmode: text\n")
    frames_drop(inbox, "wrongmodel", shade=19, extra=f"model: {PRO}\n")
    sidecar(inbox / "textmodel.yaml", f"prompt: words\nmode: text\nmodel: {RETIRED}\n")
    image(inbox / "small.jpg", shade=21)
    image(inbox / "small-end.png", size=(200, 150), shade=22)
    sidecar(inbox / "small.yaml", "prompt: tiny end\nlast_frame: small-end.png\n")
    image(inbox / "lonely.jpg", shade=23)
    sidecar(inbox / "lonely.yaml", "prompt: alone\nlast_frame: lonely-end.png\n")
    age([inbox / "lonely.jpg", inbox / "lonely.yaml"], 120)  # past watch.pair_timeout

    result, _ = run_once(config)
    submits = sim.submits

    assert result.exit_code == 4, result.summary  # some jobs failed
    assert len(result.summary.done) == 3
    assert files_under(inbox) == []
    assert s3_server.keys(bucket) == []
    outbox = tmp_path / "outbox"
    assert files_under(outbox) == sorted(
        ["poem.json", "poem.mp4", "sub/beach.json", "sub/beach.mp4", "sunset.json", "sunset.mp4"]
    )
    # Exactly one submit per good drop, each with the body of its kind.
    endpoints = by_endpoint(submits)
    assert {k: len(v) for k, v in endpoints.items()} == {
        IMAGE_ENDPOINT: 1,
        FRAMES_ENDPOINT: 1,
        TEXT_ENDPOINT: 1,
    }
    (image_sub,) = endpoints[IMAGE_ENDPOINT]
    (frames_sub,) = endpoints[FRAMES_ENDPOINT]
    (text_sub,) = endpoints[TEXT_ENDPOINT]
    assert set(image_sub.body) == {"model", "content"} and image_sub.fetched_sha256s == (
        sha256(sunset),
    )
    # Seedance 2: no model key, the prompt alone, roles, the defaults it takes as keys
    # (camerafixed, a Seedance 1.0 option of the harness's defaults, left out).
    text_item, first, last = frames_sub.body["content"]
    assert frames_sub.body == {
        "content": [text_item, first, last],
        "resolution": "720p",
        "duration": 5,
    }
    assert frames_sub.model == "seedance-2-0-fast" and frames_sub.kind == "frames"
    assert text_item == {"type": "text", "text": "From beach to its end"}
    assert (first["role"], last["role"]) == ("first_frame", "last_frame")
    assert frames_sub.fetched_urls == (first["image_url"]["url"], last["image_url"]["url"])
    assert frames_sub.fetched_sha256s == (sha256(beach["image"]), sha256(beach["last_frame"]))
    assert set(text_sub.body) == {"model", "text"}
    assert text_sub.body == {"model": PRO_FAST, "text": f"Ink spreads into a poem {COMMANDS}"}
    assert text_sub.fetched_urls == ()
    # The outputs: kind, hashes, the video the gateway served.
    metas = {rel: report(outbox / f"{rel}.json") for rel in ("sunset", "sub/beach", "poem")}
    for rel, meta in metas.items():
        assert (outbox / f"{rel}.mp4").read_bytes() == sim.video_bytes(meta["task_id"])
    assert metas["sunset"]["kind"] == "image" and "last_frame_sha256" not in metas["sunset"]
    assert metas["sunset"]["source_sha256"] == sha256(sunset)
    frames = metas["sub/beach"]
    assert frames["kind"] == "frames" and frames["task_id"] == frames_sub.task_id
    assert frames["source"] == "sub/beach.jpg"
    assert frames["source_sha256"] == sha256(beach["image"])
    assert frames["last_frame"] == "sub/beach-end.png"
    assert frames["last_frame_sha256"] == sha256(beach["last_frame"])
    text = metas["poem"]
    assert text["kind"] == "text" and text["task_id"] == text_sub.task_id
    assert text["source"] == "poem.yaml" and text["source_sha256"] == sha256(poem)
    assert text["model"] == PRO_FAST and "last_frame_sha256" not in text
    # The good drops' inputs in done/, all of them.
    assert files_under(tmp_path / "done") == sorted(
        [
            "poem.yaml",
            "sub/beach-end.png",
            "sub/beach.jpg",
            "sub/beach.yaml",
            "sunset.jpg",
            "sunset.yaml",
        ]
    )
    assert (tmp_path / "done" / "sub" / "beach-end.png").read_bytes() == beach["last_frame"]
    # Every bad drop in failed/, all its files beside one report with its code.
    failed = tmp_path / "failed"
    expected = {
        "dotdot": ("invalid_sidecar", ["dotdot.jpg", "dotdot.yaml"], ["../outside.png"]),
        "slash": ("invalid_sidecar", ["slash.jpg", "slash.yaml"], ["sub/x.png"]),
        "link": ("unsafe_path", ["link.jpg", "link-end.png", "link.yaml"], ["link-end.png"]),
        "clash": ("invalid_sidecar", ["clash.jpg", "clash.yaml"], ["clash.yaml", "clash.jpg"]),
        "wrongmodel": (
            "invalid_sidecar",
            ["wrongmodel.jpg", "wrongmodel-end.png", "wrongmodel.yaml"],
            [PRO, "does not offer first and last frame", "seedance-2-0-fast"],
        ),
        "textmodel": (
            "invalid_sidecar",
            ["textmodel.yaml"],
            [RETIRED, "switched off on 2026-05-13", f"use {PRO_FAST}"],
        ),
        "small": (
            "invalid_image",
            ["small.jpg", "small-end.png", "small.yaml"],
            ["small-end.png"],
        ),
        "lonely": ("missing_image", ["lonely.jpg", "lonely.yaml"], ["lonely-end.png"]),
    }
    reports = {p.name.removesuffix(".error.json") for p in failed.glob("*.error.json")}
    assert reports == set(expected)
    failed_inputs = [f for f in files_under(failed) if not f.endswith(".error.json")]
    assert failed_inputs == sorted(f for _, files, _ in expected.values() for f in files)
    failed_ids = set(result.summary.failed)
    for stem, (code, _files, words) in expected.items():
        got = report(failed / f"{stem}.error.json")
        assert got["code"] == code, (stem, got)
        assert got["job_id"] in failed_ids
        for word in words:
            assert word in got["message"], (stem, word, got["message"])
    # The link moved as a link; its target was never read nor moved.
    assert (failed / "link-end.png").is_symlink()
    assert (failed / "link-end.png").readlink() == outside
    assert outside.read_bytes() == outside_bytes
    assert sha256(outside_bytes) not in {s for r in submits for s in r.fetched_sha256s}


# --- 2. frames timing with a running daemon -------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_late_or_early_end_image_joins_its_drop_in_a_running_daemon(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """Late: image + sidecar first, the end image once the daemon has seen them wait;
    early: the end image first (long enough to be a lone image), then its image and
    sidecar.  Each is one frames video; the early end image is never an orphan."""
    config = write_config(tmp_path, s3_server, sim, pair_timeout=5)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = DaemonProcess(config)
    try:
        wait_for(lambda: daemon.has_event("inbox.watching"), timeout=30)
        late_image = image(inbox / "dusk.jpg", shade=1)
        sidecar(inbox / "dusk.yaml", 'prompt: "Dusk falls"\nlast_frame: dusk-end.png\n')
        early_end = image(inbox / "dawn-end.png", shade=4)
        # A marker drop written after those: once it is taken, the files above were
        # stable (they settled first), and the daemon holds them waiting.
        image(inbox / "marker.jpg", shade=6)
        sidecar(inbox / "marker.yaml", "prompt: marker\n")
        wait_for(lambda: created(daemon, "marker.jpg"), timeout=20)
        assert not any(created(daemon, s) for s in ("dusk.jpg", "dawn-end.png", "dawn.jpg"))
        late_end = image(inbox / "dusk-end.png", shade=2)
        early_image = image(inbox / "dawn.jpg", shade=3)
        sidecar(inbox / "dawn.yaml", 'prompt: "Dawn breaks"\nlast_frame: dawn-end.png\n')
        wait_for(
            lambda: all((outbox / f"{s}.json").exists() for s in ("dusk", "dawn", "marker")),
            timeout=40,
        )
        wait_for(lambda: files_under(inbox) == [], timeout=10)
    finally:
        stop(daemon)
    metas = {s: report(outbox / f"{s}.json") for s in ("dusk", "dawn")}
    assert metas["dusk"]["kind"] == metas["dawn"]["kind"] == "frames"
    assert metas["dusk"]["source_sha256"] == sha256(late_image)
    assert metas["dusk"]["last_frame_sha256"] == sha256(late_end)
    assert metas["dawn"]["source_sha256"] == sha256(early_image)
    assert metas["dawn"]["last_frame_sha256"] == sha256(early_end)
    frames = by_endpoint(sim.submits)[FRAMES_ENDPOINT]
    assert len(sim.submits) == 3 and len(frames) == 2
    assert {r.fetched_sha256s for r in frames} == {
        (sha256(late_image), sha256(late_end)),
        (sha256(early_image), sha256(early_end)),
    }
    assert files_under(tmp_path / "failed") == []
    assert not [e for e in daemon.events() if e.get("event") == "job.failed"]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_an_end_image_that_never_arrives_fails_the_drop_as_missing_image(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """With watch.pair_timeout 2 s, a frames drop whose end image never comes fails as
    missing_image naming it, no sooner than pair_timeout after the sidecar's mtime;
    the image and the sidecar move to failed/ and nothing is submitted."""
    config = write_config(tmp_path, s3_server, sim, pair_timeout=2)
    inbox, failed = tmp_path / "inbox", tmp_path / "failed"
    daemon = DaemonProcess(config)
    try:
        wait_for(lambda: daemon.has_event("inbox.watching"), timeout=30)
        image(inbox / "beach.jpg", shade=1)
        sidecar(inbox / "beach.yaml", 'prompt: "Waves"\nlast_frame: beach-end.png\n')
        mtime = (inbox / "beach.yaml").stat().st_mtime
        wait_for(lambda: (failed / "beach.error.json").exists(), timeout=20)
        wait_for(lambda: files_under(inbox) == [], timeout=10)
    finally:
        stop(daemon)
    got = report(failed / "beach.error.json")
    assert got["code"] == "missing_image" and "beach-end.png" in got["message"]
    assert at_epoch(got["at"]) >= int(mtime + 2)
    assert files_under(failed) == ["beach.error.json", "beach.jpg", "beach.yaml"]
    assert sim.submits == []


# --- 3. a text sidecar and an image of the same name ----------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_an_image_landing_while_its_text_sidecar_settles_fails_both(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """poem.yaml (mode: text), then poem.jpg a moment later, within settle_seconds: the
    two are one drop, refused as invalid_sidecar naming both; nothing is submitted."""
    config = write_config(tmp_path, s3_server, sim, settle=1.0)
    inbox, failed = tmp_path / "inbox", tmp_path / "failed"
    daemon = DaemonProcess(config)
    try:
        wait_for(lambda: daemon.has_event("inbox.watching"), timeout=30)
        sidecar(inbox / "poem.yaml", 'prompt: "A poem"\nmode: text\n')
        image(inbox / "poem.jpg", shade=1)
        assert time.time() - (inbox / "poem.yaml").stat().st_mtime < 1.0  # within settle
        wait_for(lambda: (failed / "poem.error.json").exists(), timeout=20)
        wait_for(lambda: files_under(inbox) == [], timeout=10)
    finally:
        stop(daemon)
    got = report(failed / "poem.error.json")
    assert got["code"] == "invalid_sidecar"
    assert "poem.yaml" in got["message"] and "poem.jpg" in got["message"]
    assert files_under(failed) == ["poem.error.json", "poem.jpg", "poem.yaml"]
    assert sim.submits == [] and files_under(tmp_path / "outbox") == []


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.sim(running_seconds=1.5)
def test_an_image_landing_after_its_text_job_was_taken_stays_apart(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """poem.jpg lands after the text job of poem.yaml was taken: the text video is made
    (one text submit) and the image is never paired with it; alone, it fails as
    missing_sidecar once watch.pair_timeout (2 s) has passed from its mtime."""
    config = write_config(tmp_path, s3_server, sim, pair_timeout=2)
    inbox, failed, outbox = tmp_path / "inbox", tmp_path / "failed", tmp_path / "outbox"
    daemon = DaemonProcess(config)
    try:
        wait_for(lambda: daemon.has_event("inbox.watching"), timeout=30)
        poem = sidecar(inbox / "poem.yaml", 'prompt: "A poem"\nmode: text\n')
        wait_for(lambda: created(daemon, "poem.yaml"), timeout=20)
        image(inbox / "poem.jpg", shade=1)
        mtime = (inbox / "poem.jpg").stat().st_mtime
        wait_for(lambda: (outbox / "poem.json").exists(), timeout=30)
        wait_for(lambda: (failed / "poem.error.json").exists(), timeout=20)
        wait_for(lambda: files_under(inbox) == [], timeout=10)
    finally:
        stop(daemon)
    submits = sim.submits
    assert [r.endpoint for r in submits] == [TEXT_ENDPOINT]
    meta = report(outbox / "poem.json")
    assert meta["kind"] == "text" and meta["source_sha256"] == sha256(poem)
    assert files_under(tmp_path / "done") == ["poem.yaml"]
    got = report(failed / "poem.error.json")
    assert got["code"] == "missing_sidecar" and got["source"] == "poem.jpg"
    assert at_epoch(got["at"]) >= int(mtime + 2)
    assert files_under(failed) == ["poem.error.json", "poem.jpg"]


# --- 4. identity ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_frames_and_text_drops_dedupe_on_every_input(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """The same three frames files again: no submit, duplicate_of; the same image and
    sidecar with another end image: a new submit.  The same text sidecar under another
    name: no submit, duplicate_of."""
    config = write_config(tmp_path, s3_server, sim)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    first = frames_drop(inbox, "beach", shade=1)
    text = sidecar(inbox / "poem.yaml", 'prompt: "A poem"\nmode: text\n')
    one, _ = run_once(config)
    assert one.exit_code == 0 and len(sim.submits) == 2
    beach_id = report(outbox / "beach.json")["job_id"]
    poem_id = report(outbox / "poem.json")["job_id"]

    for role, name in (("image", "beach.jpg"), ("last_frame", "beach-end.png")):
        (inbox / name).write_bytes(first[role])
    (inbox / "beach.yaml").write_bytes(first["sidecar"])
    (inbox / "verse.yaml").write_bytes(text)
    two, _ = run_once(config)
    assert two.exit_code == 0, two.summary
    assert len(sim.submits) == 2  # nothing paid twice
    again = report(outbox / "beach-2.json")
    assert again["duplicate_of"] == beach_id and again["kind"] == "frames"
    assert again["last_frame_sha256"] == sha256(first["last_frame"])
    assert (outbox / "beach-2.mp4").read_bytes() == (outbox / "beach.mp4").read_bytes()
    verse = report(outbox / "verse.json")
    assert verse["duplicate_of"] == poem_id and verse["kind"] == "text"
    assert verse["source"] == "verse.yaml" and verse["source_sha256"] == sha256(text)
    assert (outbox / "verse.mp4").read_bytes() == (outbox / "poem.mp4").read_bytes()

    (inbox / "beach.jpg").write_bytes(first["image"])
    (inbox / "beach.yaml").write_bytes(first["sidecar"])
    other_end = image(inbox / "beach-end.png", shade=7)
    three, _ = run_once(config)
    assert three.exit_code == 0, three.summary
    assert len(sim.submits) == 3
    (new,) = sim.submits[2:]
    assert new.endpoint == FRAMES_ENDPOINT
    assert new.fetched_sha256s == (sha256(first["image"]), sha256(other_end))
    fresh = report(outbox / "beach-3.json")
    assert "duplicate_of" not in fresh and fresh["task_id"] == new.task_id
    assert fresh["last_frame_sha256"] == sha256(other_end)
    assert files_under(inbox) == []


# --- 5. collision suffixes ------------------------------------------------------------------


def test_a_frames_drop_colliding_in_done_or_failed_takes_one_suffix_for_all_three(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """When done/ already holds the drop's names (all of them, or only the end image's),
    the three inputs all move as NAME-2, the same suffix for every file; so do a failed
    frames drop's three files and its report when failed/ holds its end image's name."""
    config = write_config(tmp_path, s3_server, sim)
    inbox, done, failed = tmp_path / "inbox", tmp_path / "done", tmp_path / "failed"
    for name in ("beach.jpg", "beach-end.png", "beach.yaml", "only/cove-end.png"):
        (done / name).parent.mkdir(parents=True, exist_ok=True)
        (done / name).write_bytes(b"an earlier drop's file")
    (failed / "wrong-end.png").write_bytes(b"an earlier failure's file")
    beach = frames_drop(inbox, "beach", shade=1)
    cove = frames_drop(inbox / "only", "cove", shade=3)
    wrong = frames_drop(inbox, "wrong", shade=5, extra=f"model: {PRO}\n")
    result, _ = run_once(config)
    assert result.exit_code == 4, result.summary  # the wrong model fails
    assert len(result.summary.done) == 2
    assert files_under(failed) == sorted(
        ["wrong-end.png", "wrong-2.jpg", "wrong-end-2.png", "wrong-2.yaml", "wrong-2.error.json"]
    )
    assert report(failed / "wrong-2.error.json")["code"] == "invalid_sidecar"
    assert (failed / "wrong-end-2.png").read_bytes() == wrong["last_frame"]
    assert files_under(inbox) == []
    assert files_under(done) == sorted(
        [
            "beach.jpg",
            "beach-end.png",
            "beach.yaml",
            "beach-2.jpg",
            "beach-end-2.png",
            "beach-2.yaml",
            "only/cove-end.png",
            "only/cove-2.jpg",
            "only/cove-end-2.png",
            "only/cove-2.yaml",
        ]
    )
    assert (done / "beach-2.jpg").read_bytes() == beach["image"]
    assert (done / "beach-end-2.png").read_bytes() == beach["last_frame"]
    assert (done / "beach-2.yaml").read_bytes() == beach["sidecar"]
    assert (done / "only" / "cove-end-2.png").read_bytes() == cove["last_frame"]
    assert (done / "beach.jpg").read_bytes() == b"an earlier drop's file"


# --- 6. retry -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_retry_brings_a_failed_frames_drop_back_and_it_is_made(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """A frames drop whose task failed at the gateway (task_failed, all three files in
    failed/): ``seedance-watch retry JOB_ID`` moves the three back under their names and
    removes the report; the next run makes the video with a new submit."""
    sim.configure(fail_task_rate=1.0)
    config = write_config(tmp_path, s3_server, sim)
    inbox, failed = tmp_path / "inbox", tmp_path / "failed"
    beach = frames_drop(inbox / "sub", "beach", shade=1)
    first, _ = run_once(config)
    assert first.exit_code == 4 and len(sim.submits) == 1
    got = report(failed / "sub" / "beach.error.json")
    assert got["code"] == "task_failed"
    assert files_under(failed) == sorted(
        ["sub/beach.error.json", "sub/beach.jpg", "sub/beach-end.png", "sub/beach.yaml"]
    )

    sim.configure(fail_task_rate=0.0)
    out = cli(config, "retry", got["job_id"])
    assert out.returncode == 0, out.stderr
    assert files_under(failed) == []
    assert files_under(inbox) == ["sub/beach-end.png", "sub/beach.jpg", "sub/beach.yaml"]
    assert (inbox / "sub" / "beach-end.png").read_bytes() == beach["last_frame"]

    second, _ = run_once(config)
    assert second.exit_code == 0, second.summary
    assert len(sim.submits) == 2 and sim.submits[1].endpoint == FRAMES_ENDPOINT
    meta = report(tmp_path / "outbox" / "sub" / "beach.json")
    assert meta["kind"] == "frames" and meta["task_id"] == sim.submits[1].task_id
    assert meta["last_frame_sha256"] == sha256(beach["last_frame"])
    assert files_under(inbox) == [] and files_under(failed) == []
    assert files_under(tmp_path / "done") == [
        "sub/beach-end.png",
        "sub/beach.jpg",
        "sub/beach.yaml",
    ]


# --- 7. status and metrics ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_status_json_and_metrics_show_each_jobs_kind(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """With a running daemon: ``status --json`` gives each job's kind, and /metrics
    counts ``seedance_jobs_by_kind`` by kind and state (a refused frames drop included)."""
    config = write_config(tmp_path, s3_server, sim, extra="health: {listen: '127.0.0.1:0'}\n")
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = DaemonProcess(config)
    try:
        listening = wait_for(
            lambda: [e for e in daemon.events() if e.get("event") == "health.listening"],
            timeout=30,
        )
        host, port = listening[0]["host"], listening[0]["port"]
        image(inbox / "sunset.jpg", shade=1)
        sidecar(inbox / "sunset.yaml", "prompt: sun\n")
        frames_drop(inbox, "beach", shade=2)
        frames_drop(inbox, "wrong", shade=4, extra=f"model: {PRO}\n")
        sidecar(inbox / "poem.yaml", "prompt: words\nmode: text\n")
        wait_for(
            lambda: all((outbox / f"{s}.json").exists() for s in ("sunset", "beach", "poem")),
            timeout=30,
        )
        wait_for(lambda: files_under(inbox) == [], timeout=10)

        def metrics() -> dict[tuple[str, str], float]:
            conn = http.client.HTTPConnection(host, port, timeout=5)
            try:
                conn.request("GET", "/metrics")
                body = conn.getresponse().read().decode()
            finally:
                conn.close()
            return {
                (s.labels["kind"], s.labels["state"]): s.value
                for family in text_string_to_metric_families(body)
                for s in family.samples
                if s.name == "seedance_jobs_by_kind"
            }

        def settled() -> dict[tuple[str, str], float] | None:
            """The non-zero samples, once all four jobs have ended (done or failed)."""
            counts = {k: v for k, v in metrics().items() if v}
            ended = all(state in ("done", "failed") for _, state in counts)
            return counts if ended and sum(counts.values()) == 4 else None

        by_kind = wait_for(settled, timeout=10)
        status = cli(config, "status", "--json")
    finally:
        stop(daemon)
    assert by_kind == {
        ("image", "done"): 1,
        ("frames", "done"): 1,
        ("frames", "failed"): 1,
        ("text", "done"): 1,
    }
    assert status.returncode == 0, status.stderr
    jobs = {job["source"]: job for job in json.loads(status.stdout)["jobs"]}
    assert {source: (job["kind"], job["state"]) for source, job in jobs.items()} == {
        "sunset.jpg": ("image", "done"),
        "beach.jpg": ("frames", "done"),
        "wrong.jpg": ("frames", "failed"),
        "poem.yaml": ("text", "done"),
    }
