"""Hostile and messy inputs through the real daemon (a subprocess) against the simulator + moto.

Every bad input of docs/design.md, "The inbox" and "The sidecar" is dropped together with good
pairs into one inbox: each bad one lands in failed/ with its code and a message naming the problem,
none is submitted, and the good pairs beside them finish in the same run.  The same suite runs with
``watch.mode: native`` and ``polling``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from seedance_watch.files.drop import job_groups
from seedance_watch.simulator import Simulator, SimulatorConfig
from seedance_watch.testing.s3emulator import S3Emulator

from .bad_inputs import (
    BAD_INPUTS,
    GOOD_JPEG,
    drop_bad_inputs,
)
from .conftest import make_image_bytes
from .daemon_harness import DaemonProcess, files_under, wait_for, write_config

pytestmark = pytest.mark.timeout(120)

MODES = ["native", "polling"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        queued_seconds=0.0, running_seconds=0.05, video_seconds=0.25, video_max_side=64
    )
    with Simulator(config) as simulator:
        yield simulator


def set_gateway(config_path: Path, **keys: object) -> None:
    """Add keys to the ``gateway:`` flow mapping that ``write_config`` wrote."""
    text = config_path.read_text()
    extra = "".join(f"{k}: {json.dumps(v)}, " for k, v in keys.items())
    assert "gateway: {" in text
    config_path.write_text(text.replace("gateway: {", "gateway: {" + extra, 1))


# --- the table of bad inputs ----------------------------------------------------------------


#: Good pairs with awkward names, in awkward folders: (inbox-relative image path, bytes).
GOOD_INPUTS = [
    ("plain.jpg", GOOD_JPEG),
    ("with  spaces here.jpg", make_image_bytes(480, 640)),
    ("été ☀ 🌊/plage d'été.png", make_image_bytes(512, 512, fmt="PNG")),
    ("sub dir/a;b&c|d $(touch pwned) `id` 'q\" *?[x].webp", make_image_bytes(600, 400, fmt="WEBP")),
]


def drop_good_inputs(inbox: Path) -> None:
    for rel, data in GOOD_INPUTS:
        image = inbox / rel
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(data)
        prompt = json.dumps(f"Slow light on {image.stem}", ensure_ascii=False)
        image.with_suffix(".yaml").write_text(f"prompt: {prompt}\n")


def reports(failed: Path) -> dict[str, dict[str, object]]:
    return {
        str(p.relative_to(failed)): json.loads(p.read_text()) for p in failed.rglob("*.error.json")
    }


def outputs(outbox: Path) -> set[str]:
    return {str(p.relative_to(outbox)) for p in outbox.rglob("*.mp4")}


def run_validate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seedance_watch", "validate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("mode", MODES)
def test_bad_inputs_fail_with_their_code_and_good_pairs_finish(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, mode: str
) -> None:
    """Every bad input ends in failed/ with the right code and a message naming the key or
    number, none is submitted, the symlink (not its target) moves, the good pairs with
    awkward names finish in the same run, the daemon keeps running; and ``validate`` on a
    copy of the same inbox reports exactly the daemon's codes and messages."""
    config_path = write_config(tmp_path, s3_server, sim, mode=mode, pair_timeout=60)
    set_gateway(config_path, strict_model=True)
    inbox, failed, outbox = tmp_path / "inbox", tmp_path / "failed", tmp_path / "outbox"
    secret_bytes = drop_bad_inputs(inbox, tmp_path / "outside")
    drop_good_inputs(inbox)
    copy = tmp_path / "copy"
    shutil.copytree(inbox, copy, symlinks=True)
    expected_videos = {str(Path(rel).with_suffix(".mp4")) for rel, _ in GOOD_INPUTS}
    expected_reports = {report for case in BAD_INPUTS for report in case.reports}

    daemon = DaemonProcess(config_path)
    try:
        wait_for(
            lambda: outputs(outbox) == expected_videos and set(reports(failed)) == expected_reports,
            timeout=60,
            interval=0.1,
        )
        assert daemon.proc.poll() is None, "the daemon stopped"
        assert any(
            e.get("event") == "inbox.watching" and e.get("mode") == mode for e in daemon.events()
        )
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        daemon.kill()

    found = reports(failed)
    for case in BAD_INPUTS:
        for name in case.reports:
            report = found[name]
            assert report["code"] == case.code, (case.id, report)
            message = str(report["message"])
            for needle in case.needles:
                assert needle in message, (case.id, needle, message)
        for name in case.moved:
            assert (failed / name).is_symlink() or (failed / name).is_file(), (case.id, name)
    # The link moved as a link; its target outside the inbox is untouched.
    assert (failed / "escape.jpg").is_symlink()
    assert (tmp_path / "outside" / "secret.jpg").read_bytes() == secret_bytes
    # Only the good pairs were ever submitted, once each.
    good_shas = sorted(sha256(data) for _, data in GOOD_INPUTS)
    assert sorted(record.image_sha256 for record in sim.submits) == good_shas
    for rel, _ in GOOD_INPUTS:
        assert (tmp_path / "done" / rel).is_file()
        assert (outbox / Path(rel).with_suffix(".json")).is_file()
    assert files_under(inbox) == []
    assert not list(tmp_path.rglob("pwned"))

    # validate, offline, reports the very codes and messages the daemon wrote.
    result = run_validate("--config", config_path, "--strict", copy)
    assert result.returncode == 1, result.stdout + result.stderr
    lines: dict[str, list[tuple[str, str]]] = {}
    for line in result.stdout.splitlines()[:-1]:
        path, code, message = line.split(": ", 2)
        lines.setdefault(Path(path).stem, []).append((code, message))
    for case in BAD_INPUTS:
        stem = Path(next(iter(case.files))).stem
        codes = {code for code, _ in lines[stem]}
        assert codes == {case.code}, (case.id, lines[stem])
        for name in case.reports:
            message = "; ".join(message for _, message in lines[stem])
            if case.code in ("missing_sidecar", "missing_image"):
                # Offline there is no waiting: validate says what is not beside the file
                # and that the daemon waits watch.pair_timeout for it.
                assert "beside" in message and "the daemon waits" in message, case.id
            else:
                assert message == found[name]["message"], case.id
    checked = len(GOOD_INPUTS) + len(BAD_INPUTS)  # every drop, whole or not
    assert result.stdout.splitlines()[-1].startswith(f"{checked} drop(s) checked")


def write_slowly(path: Path, data: bytes, chunks: int, pause: float) -> None:
    """A scanner or a slow share: the file grows chunk by chunk, each chunk flushed."""
    step = -(-len(data) // chunks)
    with open(path, "wb") as f:
        for start in range(0, len(data), step):
            f.write(data[start : start + step])
            f.flush()
            time.sleep(pause)  # the writer's pace, not a wait for the daemon


@pytest.mark.parametrize("mode", MODES)
def test_messy_writers_and_folders(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, mode: str
) -> None:
    """A slowly written image is uploaded only when complete (the simulator saw its exact
    bytes); rsync's hidden temp name and a ``.part`` download are picked up after their
    rename, never before; a folder deleted mid-run (with a half-dropped pair in it) does
    not stop the daemon; names taken in outbox/, done/ and failed/ get the next suffix."""
    config_path = write_config(tmp_path, s3_server, sim, mode=mode, settle=0.6)
    inbox, outbox, done, failed = (tmp_path / n for n in ("inbox", "outbox", "done", "failed"))
    # Names already taken where the results go.
    (outbox / "taken.mp4").write_bytes(b"an older video")
    (outbox / "taken.json").write_text("{}")
    (done / "taken.jpg").write_bytes(b"an older input")
    (failed / "broken.yaml").write_text("old")
    (failed / "broken.error.json").write_text("{}")

    daemon = DaemonProcess(config_path)
    try:
        wait_for(lambda: daemon.has_event("inbox.watching"), timeout=30)
        # A half-dropped pair in a folder that then disappears.
        (inbox / "gone").mkdir()
        (inbox / "gone" / "half.jpg").write_bytes(GOOD_JPEG)
        # Slow writer: the sidecar is there first, the image grows for ~2 s.
        slow = make_image_bytes(1200, 900, color=(200, 30, 30))
        (inbox / "slow.yaml").write_text('prompt: "slowly"\n')
        writer = threading.Thread(target=write_slowly, args=(inbox / "slow.jpg", slow, 12, 0.15))
        writer.start()
        # rsync: ".NAME.XXXXXX" then rename; a browser: "NAME.part" then rename.
        (inbox / "synced.yaml").write_text('prompt: "synced"\n')
        (inbox / ".synced.jpg.Qx81aZ").write_bytes(make_image_bytes(640, 480, color=(1, 2, 3)))
        (inbox / "fetched.yaml").write_text('prompt: "fetched"\n')
        (inbox / "fetched.jpg.part").write_bytes(make_image_bytes(640, 480, color=(4, 5, 6)))
        # Collisions.
        (inbox / "taken.jpg").write_bytes(make_image_bytes(640, 480, color=(7, 8, 9)))
        (inbox / "taken.yaml").write_text('prompt: "taken"\n')
        (inbox / "broken.jpg").write_bytes(GOOD_JPEG)
        (inbox / "broken.yaml").write_text("prompt: x\nduration: 99\n")
        shutil.rmtree(inbox / "gone")
        wait_for(lambda: (failed / "broken-2.error.json").exists(), timeout=30)
        # The temp names are still waiting (never picked up as they are).
        assert (inbox / ".synced.jpg.Qx81aZ").exists() and (inbox / "fetched.jpg.part").exists()
        (inbox / ".synced.jpg.Qx81aZ").rename(inbox / "synced.jpg")
        (inbox / "fetched.jpg.part").rename(inbox / "fetched.jpg")
        writer.join(timeout=30)
        wanted = {"slow.mp4", "synced.mp4", "fetched.mp4", "taken-2.mp4"}
        wait_for(lambda: outputs(outbox) >= wanted, timeout=45, interval=0.1)
        assert daemon.proc.poll() is None
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        daemon.kill()

    by_text = {record.text.split(" --")[0]: record for record in sim.submits}
    assert sorted(by_text) == ["fetched", "slowly", "synced", "taken"]
    assert len(sim.submits) == 4
    assert by_text["slowly"].image_sha256 == sha256(slow)
    assert json.loads((outbox / "slow.json").read_text())["source_sha256"] == sha256(slow)
    assert (outbox / "taken.mp4").read_bytes() == b"an older video"
    assert json.loads((outbox / "taken-2.json").read_text())["source"] == "taken.jpg"
    assert (done / "taken.jpg").read_bytes() == b"an older input"
    assert (done / "taken-2.jpg").is_file() and (done / "taken-2.yaml").is_file()
    assert (failed / "broken.yaml").read_text() == "old"
    report = json.loads((failed / "broken-2.error.json").read_text())
    assert report["code"] == "invalid_sidecar" and "99" in report["message"]
    assert (failed / "broken-2.jpg").is_file() and (failed / "broken-2.yaml").is_file()
    # Nothing from the vanished folder was reported or submitted, and no temp name failed.
    assert set(reports(failed)) == {"broken.error.json", "broken-2.error.json"}
    assert files_under(inbox) == []


def test_rescan_finds_a_drop_in_an_inbox_recreated_behind_the_watcher(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """The inbox folder is deleted and made again while the daemon runs (inotify's watch
    died with the old folder, so no event comes): the periodic rescan finds the new drop."""
    config_path = write_config(tmp_path, s3_server, sim, mode="native")
    inbox = tmp_path / "inbox"
    daemon = DaemonProcess(config_path)
    try:
        wait_for(lambda: daemon.has_event("inbox.watching"), timeout=30)
        inbox.rmdir()
        wait_for(lambda: daemon.has_event("inbox.missing"), timeout=15)
        inbox.mkdir()
        (inbox / "late.jpg").write_bytes(GOOD_JPEG)
        (inbox / "late.yaml").write_text('prompt: "late"\n')
        wait_for(lambda: (tmp_path / "outbox" / "late.mp4").exists(), timeout=30)
        assert daemon.has_event("inbox.found")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        daemon.kill()
    assert [record.image_sha256 for record in sim.submits] == [sha256(GOOD_JPEG)]


WritePair = Callable[..., tuple[Path, Path]]


@pytest.mark.slow
def test_burst_of_500_pairs_is_fully_processed(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """500 pairs dropped at once (fast gateway, tiny videos, wide limits) all finish: 500
    videos, 500 submits (one per pair), an empty inbox, within the time budget."""
    config_path = write_config(tmp_path, s3_server, sim, poll_interval=0.05)
    set_gateway(config_path, max_in_flight=200, requests_per_minute=100000)
    sim.configure(running_seconds=0.0, video_seconds=0.25, video_max_side=32)
    inbox = tmp_path / "inbox"
    count = 500
    for i in range(count):
        folder = inbox / f"batch-{i % 5}"
        folder.mkdir(exist_ok=True)
        # Distinct bytes per image (dedupe must not shortcut the burst).
        (folder / f"img-{i:03d}.jpg").write_bytes(GOOD_JPEG + i.to_bytes(4, "big"))
        (folder / f"img-{i:03d}.yaml").write_text(f'prompt: "frame {i}"\n')
    started = time.monotonic()
    daemon = DaemonProcess(config_path)
    try:
        wait_for(lambda: len(outputs(tmp_path / "outbox")) == count, timeout=90, interval=0.25)
        elapsed = time.monotonic() - started
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        daemon.kill()
    assert len(sim.submits) == count
    assert len({r.image_sha256 for r in sim.submits}) == count
    assert files_under(inbox) == []
    assert not list((tmp_path / "failed").rglob("*"))
    print(f"burst of {count} pairs: {elapsed:.1f} s")
    assert elapsed < 75, f"the burst took {elapsed:.1f} s"


def test_job_groups_put_every_file_of_an_ambiguous_drop_in_a_job() -> None:
    """A job holds two inputs: an ambiguous group becomes image+sidecar jobs, nothing left."""
    assert job_groups(["a.yml", "a.jpg", "a.yaml"]) == [["a.jpg", "a.yaml"], ["a.yml"]]
    assert job_groups(["s/a.png", "s/a.jpg", "s/a.yaml"]) == [["s/a.jpg", "s/a.yaml"], ["s/a.png"]]
    assert job_groups(["a.jpg", "a.png"]) == [["a.jpg", "a.png"]]
