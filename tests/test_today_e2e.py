"""Videos with the Seedance of today, end to end: the real daemon (``run --once``
in-process), the simulator speaking today's gateway and the S3 emulator.

A config that names no model makes every kind of drop with today's defaults, sends
each family's exact body to its endpoint, prices each job as its model is billed
(per generation or per second, reserved at the intent and settled at the video's
real length), and refuses a model that was switched off before anything is
uploaded or paid (docs/design.md, "Models" and "Money")."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from seedance_watch.config import load_config
from seedance_watch.core.jobs import Job, State
from seedance_watch.files.drop import examine_drop
from seedance_watch.files.mp4 import video_seconds
from seedance_watch.files.storage import Storage
from seedance_watch.ledger.jsonl import Ledger, read_jobs
from seedance_watch.ledger.record import decode_record
from seedance_watch.simulator import Simulator
from seedance_watch.testing.s3emulator import S3Emulator

from .helpers import daemon_env, files_under, fresh_bucket, run_once, sha256, write_config
from .simhelpers import image_item

PRO_FAST = "seedance-1-0-pro-fast-251015"
FAST2 = "seedance-2-0-fast"
RETIRED = "seedance-1-0-lite-i2v-250428"
#: The commands the built-in defaults add to a Seedance 1.0 prompt.
COMMANDS = "--resolution 720p --duration 5 --camerafixed false"
AUTO_SECONDS = 7
pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.sim(video_seconds=None, auto_seconds=AUTO_SECONDS),
]


def image(path: Path, shade: int) -> bytes:
    picture = Image.new("RGB", (640, 480), ((53 * shade) % 256, (29 * shade + 70) % 256, 140))
    for x in range(0, 640, 16):
        picture.putpixel((x, (x * 3) // 4), (x % 256, shade % 256, 60))
    buf = io.BytesIO()
    picture.save(buf, format="PNG" if path.suffix == ".png" else "JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def text(path: Path, content: str) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path.read_bytes()


def meta(outbox: Path, stem: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((outbox / f"{stem}.json").read_text())
    return data


def costs_json(config: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "seedance_watch", "costs", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        env=daemon_env(),
        timeout=60,
        check=True,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def ledger_records(state: Path, job_id: str) -> list[Job]:
    """Every record the ledger holds of ``job_id``, oldest first (segments, in order)."""
    out = []
    for segment in sorted(state.glob("ledger-*.jsonl")):
        for line in segment.read_bytes().splitlines():
            job = decode_record(line)
            if job.job_id == job_id:
                out.append(job)
    return out


def test_a_config_naming_no_model_makes_every_kind_with_todays_models(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """The issue's "done when": a plain, a frames, a text and a reference drop become
    four videos and four JSONs with the right kind, model and cost, after exactly one
    submit each to the endpoint and body of its family; a drop naming a model that was
    switched off fails before anything is uploaded, naming the replacement."""
    bucket = fresh_bucket(s3_server)
    config = write_config(tmp_path, s3_server, sim, bucket=bucket)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    sunset = image(inbox / "sunset.jpg", 1)
    text(inbox / "sunset.yaml", 'prompt: "The sun sets over the sea"\n')
    dusk = image(inbox / "dusk.jpg", 2), image(inbox / "dusk-end.png", 3)
    text(inbox / "dusk.yaml", 'prompt: "Dusk falls"\nlast_frame: dusk-end.png\n')
    poem = text(inbox / "poem.yaml", 'prompt: "Ink spreads into a poem"\nmode: text\n')
    refs = image(inbox / "shoe-2.png", 4), image(inbox / "shoe-1.jpg", 5)
    ad = text(
        inbox / "ad.yaml", 'prompt: "The sneaker turns"\nreferences: [shoe-2.png, shoe-1.jpg]\n'
    )
    old = image(inbox / "old.jpg", 6)
    text(inbox / "old.yaml", f'prompt: "An old request"\nmodel: {RETIRED}\n')

    result, _ = run_once(config)

    assert result.exit_code == 4, result.summary  # the retired model's drop failed
    assert len(result.summary.done) == 4 and len(result.summary.failed) == 1
    assert files_under(inbox) == [] and s3_server.keys(bucket) == []
    by_endpoint = {record.endpoint: record for record in sim.submits}
    assert len(sim.submits) == 4 and len(by_endpoint) == 4
    plain = by_endpoint["/byteplus/v1/generateImage2VideoTask"]
    assert plain.body == {
        "model": PRO_FAST,
        "content": [
            {"type": "text", "text": f"The sun sets over the sea {COMMANDS}"},
            {"type": "image_url", "image_url": plain.fetched_urls[0]},
        ],
    }
    assert plain.fetched_sha256s == (sha256(sunset),)
    frames = by_endpoint[f"/{FAST2}/v1/first-last-frame-to-video-fast"]
    first, last = frames.fetched_urls
    assert frames.body == {
        "content": [
            {"type": "text", "text": "Dusk falls"},
            image_item(first, "first_frame"),
            image_item(last, "last_frame"),
        ],
        "duration": 5,
        "resolution": "720p",
    }
    assert frames.fetched_sha256s == (sha256(dusk[0]), sha256(dusk[1]))
    words = by_endpoint["/byteplus/v1/generateVideoTask"]
    assert words.body == {"model": PRO_FAST, "text": f"Ink spreads into a poem {COMMANDS}"}
    reference = by_endpoint[f"/{FAST2}/v1/reference-to-video-fast"]
    one, two = reference.fetched_urls
    assert reference.body == {
        "content": [
            {"type": "text", "text": "The sneaker turns"},
            image_item(one, "reference_image"),
            image_item(two, "reference_image"),
        ],
        "duration": 5,
        "resolution": "720p",
    }
    assert reference.fetched_sha256s == (sha256(refs[0]), sha256(refs[1]))  # listed order
    expected = {
        "sunset": ("image", PRO_FAST, {"amount": 0.2, "per": "generation"}, sha256(sunset)),
        "dusk": ("frames", FAST2, {"amount": 1.2, "per": "second", "seconds": 5}, sha256(dusk[0])),
        "poem": ("text", PRO_FAST, {"amount": 0.2, "per": "generation"}, sha256(poem)),
        "ad": ("reference", FAST2, {"amount": 1.2, "per": "second", "seconds": 5}, sha256(ad)),
    }
    for stem, (kind, model, cost, source_sha) in expected.items():
        got = meta(outbox, stem)
        assert (got["kind"], got["model"], got["source_sha256"]) == (kind, model, source_sha)
        assert got["cost"] == {**cost, "currency": "USD"}, stem
        assert (outbox / f"{stem}.mp4").read_bytes() == sim.video_bytes(got["task_id"])
    assert meta(outbox, "ad")["reference_sha256s"] == [sha256(refs[0]), sha256(refs[1])]
    assert meta(outbox, "dusk")["last_frame_sha256"] == sha256(dusk[1])
    # The retired model: refused at intake, before any upload (no key, no fetch, no cost).
    report = json.loads((tmp_path / "failed" / "old.error.json").read_text())
    assert report["code"] == "invalid_sidecar" and report["stage"] == "new"
    assert f"{RETIRED} was switched off on 2026-05-13; use {PRO_FAST}" in report["message"]
    (failed,) = [j for j in read_jobs(tmp_path / "state").values() if j.state is State.FAILED]
    assert failed.uploads == () and failed.intent_at is None and failed.cost is None
    assert sha256(old) not in {sha for r in sim.submits for sha in r.fetched_sha256s}
    assert costs_json(config)["today"]["spent"] == 2.8


def test_per_second_prices_by_resolution_and_a_cap_that_holds_the_third_drop(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """With per-second prices by resolution, three 1.00 jobs (480p 10 s, 720p 5 s, 720p
    5 s) against a 2.50 cap: two are submitted and done, the third waits intact (not
    failed, not submitted) and ``run --once`` exits 5; output JSON and ``costs --json``
    agree to the cent."""
    prices = "{per_second: {480p: 0.10, 720p: 0.20}}"
    config = write_config(
        tmp_path,
        s3_server,
        sim,
        extra=f"budget: {{max_cost_per_day: 2.50, prices: {{{FAST2}: {prices}}}}}\n",
    )
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    for n, (resolution, duration) in enumerate([("480p", 10), ("720p", 5), ("720p", 5)]):
        image(inbox / f"clip{n}.jpg", 10 + n)
        text(
            inbox / f"clip{n}.yaml",
            f'prompt: "Clip {n}"\nmodel: {FAST2}\nresolution: {resolution}\nduration: {duration}\n',
        )

    result, _ = run_once(config)

    assert result.exit_code == 5, result.summary
    assert len(result.summary.done) == 2 and not result.summary.failed
    assert len(sim.submits) == 2
    jobs = read_jobs(tmp_path / "state").values()
    (waiting,) = [j for j in jobs if not j.terminal]
    assert waiting.state is State.UPLOADED and waiting.intent_at is None
    for job in jobs:
        if job.state is State.DONE:
            assert job.output is not None
            got = meta(outbox, job.output.removesuffix(".mp4"))["cost"]
            seconds = 10 if got["seconds"] == 10 else 5
            assert got == {"amount": 1.0, "currency": "USD", "per": "second", "seconds": seconds}
    report = costs_json(config)
    assert report["today"] == {"spent": 2.0, "cap": 2.5, "remaining": 0.5}
    assert report["days"][0]["cost"] == 2.0 and report["days"][0]["submits"] == 2
    assert report["days"][0]["models"] == {FAST2: {"submits": 2, "cost": 2.0}}


def test_duration_auto_reserves_the_longest_clip_then_settles_at_the_real_length(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """``duration: auto`` is sent as -1 and reserves the model's longest duration (15 s:
    3.00 at 0.20/s), which a 3.00 cap admits exactly; once the video is downloaded the
    job settles at its real length read from the mp4 (7 s: 1.40), in the ledger, the
    output JSON and ``costs`` alike."""
    prices = "{per_second: {480p: 0.10, 720p: 0.20}}"
    config = write_config(
        tmp_path,
        s3_server,
        sim,
        extra=f"budget: {{max_cost_per_day: 3.00, prices: {{{FAST2}: {prices}}}}}\n",
    )
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    image(inbox / "sea.jpg", 20)
    text(inbox / "sea.yaml", f'prompt: "The sea"\nmodel: {FAST2}\nduration: auto\n')

    result, _ = run_once(config)

    assert result.exit_code == 0, result.summary
    (record,) = sim.submits
    assert record.body["duration"] == -1
    assert video_seconds(outbox / "sea.mp4") == pytest.approx(AUTO_SECONDS, abs=0.01)
    (job_id,) = result.summary.done
    history = ledger_records(tmp_path / "state", job_id)
    intent = next(j for j in history if j.state is State.SUBMITTING)
    assert intent.cost is not None
    assert (intent.cost["cents"], intent.cost["seconds"], intent.cost["settled"]) == (
        300,
        15,
        False,
    )
    final = history[-1]
    assert final.state is State.DONE and final.cost is not None
    assert (final.cost["cents"], final.cost["seconds"], final.cost["settled"]) == (140, 7, True)
    assert meta(outbox, "sea")["cost"] == {
        "amount": 1.4,
        "currency": "USD",
        "per": "second",
        "seconds": AUTO_SECONDS,
    }
    assert costs_json(config)["today"] == {"spent": 1.4, "cap": 3.0, "remaining": 1.6}


def test_a_drop_that_alone_costs_more_than_the_days_cap_fails_before_upload(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """A frames drop reserving 1.20 under a 1.00 cap could never be submitted: it fails
    at intake as over_budget (nothing uploaded, nothing sent), while an image drop at
    0.20 goes through."""
    bucket = fresh_bucket(s3_server)
    config = write_config(
        tmp_path, s3_server, sim, bucket=bucket, extra="budget: {max_cost_per_day: 1.00}\n"
    )
    inbox = tmp_path / "inbox"
    image(inbox / "dusk.jpg", 40)
    image(inbox / "dusk-end.png", 41)
    text(inbox / "dusk.yaml", 'prompt: "Dusk"\nlast_frame: dusk-end.png\n')
    image(inbox / "sun.jpg", 42)
    text(inbox / "sun.yaml", 'prompt: "Sun"\n')

    result, _ = run_once(config)

    assert result.exit_code == 4 and len(result.summary.done) == 1
    assert [r.endpoint for r in sim.submits] == ["/byteplus/v1/generateImage2VideoTask"]
    report = json.loads((tmp_path / "failed" / "dusk.error.json").read_text())
    assert report["code"] == "over_budget" and report["stage"] == "new"
    assert "would cost 1.20 USD (5 s at 0.24 per second)" in report["message"]
    assert "budget.max_cost_per_day (1.00)" in report["message"]
    assert files_under(tmp_path / "failed") == [
        "dusk-end.png",
        "dusk.error.json",
        "dusk.jpg",
        "dusk.yaml",
    ]
    assert costs_json(config)["today"]["spent"] == 0.2


def test_a_job_waiting_to_be_submitted_when_its_model_was_switched_off_is_never_sent(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """A job taken in (uploaded, not submitted) before an upgrade learned that its model
    is gone fails at the submit stage without a request: never sent, never billed, its
    upload deleted, its report naming the date and the replacement."""
    bucket = fresh_bucket(s3_server)
    config_path = write_config(tmp_path, s3_server, sim, bucket=bucket)
    cfg = load_config(config_path, {})
    image(cfg.paths.inbox / "beach.jpg", 30)
    text(cfg.paths.inbox / "beach.yaml", 'prompt: "Waves"\n')
    drop = examine_drop(
        cfg.paths.inbox,
        "beach.jpg",
        "beach.yaml",
        defaults=cfg.defaults,
        models=cfg.gateway.models,
        now=time.time(),
    )
    storage = Storage(cfg.storage)
    key = storage.key_for(drop.job.job_id, "beach.jpg")
    storage.upload(cfg.paths.inbox / "beach.jpg", key, content_type="image/jpeg")
    record = {
        **drop.job.to_dict(),
        "state": "uploaded",
        "model": RETIRED,
        "uploads": [["image", key]],
        "seq": 1,
    }
    with Ledger.open(cfg.paths.state) as ledger:
        ledger.put(Job.from_dict(record))

    result, _ = run_once(config_path)

    assert result.exit_code == 4 and sim.submit_attempts == 0
    report = json.loads((tmp_path / "failed" / "beach.error.json").read_text())
    assert report["code"] == "invalid_sidecar"
    assert f"{RETIRED} was switched off on 2026-05-13; use {PRO_FAST}" in report["message"]
    assert s3_server.keys(bucket) == []
    (job,) = read_jobs(cfg.paths.state).values()
    assert job.intent_at is None and job.cost is None
