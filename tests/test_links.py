"""Links in the inbox are never followed, in every watching mode (docs/design.md, "The inbox").

A link (to a file or a folder, at any depth) moves itself to failed/ as
``unsafe_path``; nothing outside the inbox is read, moved, uploaded or paid for.
watchdog's polling observer stats through links and reports a linked folder as a
new folder: the inbox walks folders through descriptors opened without following
links, so what the observer says cannot lead it out.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from seedance_watch.files import fsutil
from seedance_watch.simulator import Simulator
from seedance_watch.testing.s3emulator import S3Emulator

from .bad_inputs import GOOD_JPEG, OLD
from .helpers import DaemonProcess, files_under, make_image_bytes, wait_for, write_config
from .simhelpers import quick_tasks

pytestmark = pytest.mark.timeout(90)

MODES = ["polling", "native"]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(quick_tasks()) as simulator:
        yield simulator


def _elsewhere(root: Path) -> dict[str, bytes]:
    """A folder outside the inbox holding an old, valid pair (and one deeper down)."""
    files = {
        "v.jpg": GOOD_JPEG,
        "v.yaml": b'prompt: "not yours"\n',
        "deep/w.jpg": make_image_bytes(600, 400, color=(9, 9, 9)),
        "deep/w.yaml": b'prompt: "not yours either"\n',
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (OLD, OLD))
    return files


def _reports(failed: Path) -> dict[str, dict[str, object]]:
    return {
        str(p.relative_to(failed)): json.loads(p.read_text()) for p in failed.rglob("*.error.json")
    }


@pytest.mark.parametrize("mode", MODES)
def test_links_made_while_the_daemon_runs_are_never_followed(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, mode: str
) -> None:
    """Links to a folder (at the top and one folder down) and to a file (one folder
    down), made while the daemon watches: each link itself moves to failed/ as
    unsafe_path; the pairs they point at stay where they are, nothing is uploaded or
    submitted, and a good pair dropped with them finishes."""
    config_path = write_config(tmp_path, s3_server, sim, mode=mode)
    inbox, failed, outbox = tmp_path / "inbox", tmp_path / "failed", tmp_path / "outbox"
    elsewhere = tmp_path / "elsewhere"
    outside = _elsewhere(elsewhere)
    before = {rel: os.lstat(elsewhere / rel) for rel in outside}
    daemon = DaemonProcess(config_path)
    try:
        wait_for(lambda: daemon.has_event("inbox.watching"), timeout=30)
        (inbox / "sub").mkdir()
        (inbox / "evil").symlink_to(elsewhere, target_is_directory=True)
        (inbox / "sub" / "evil").symlink_to(elsewhere, target_is_directory=True)
        (inbox / "sub" / "v.jpg").symlink_to(elsewhere / "v.jpg")
        (inbox / "good.jpg").write_bytes(make_image_bytes(640, 480, color=(1, 200, 3)))
        (inbox / "good.yaml").write_text('prompt: "mine"\n')
        wanted = {"evil.error.json", "sub/evil.error.json", "sub/v.error.json"}
        wait_for(
            lambda: (outbox / "good.mp4").exists() and set(_reports(failed)) >= wanted,
            timeout=45,
            interval=0.1,
        )
        assert daemon.proc.poll() is None
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        daemon.kill()
    reports = _reports(failed)
    assert set(reports) == wanted, reports
    for report in reports.values():
        assert report["code"] == "unsafe_path", report
    # The links themselves moved, still links, pointing where they did.
    assert (failed / "evil").is_symlink() and (failed / "sub" / "evil").is_symlink()
    assert (failed / "sub" / "v.jpg").is_symlink()
    assert (failed / "evil").readlink() == elsewhere
    # Nothing outside the inbox moved or changed; nothing of it was uploaded or paid for.
    for rel, data in outside.items():
        path = elsewhere / rel
        assert path.read_bytes() == data
        assert fsutil.Identity.of(os.lstat(path)) == fsutil.Identity.of(before[rel])
    assert [r.text.split(" --")[0] for r in sim.submits] == ["mine"]
    assert not (tmp_path / "done" / "evil").exists()
    assert files_under(tmp_path / "done") == ["good.jpg", "good.yaml"]
    assert files_under(inbox) == []
    events = daemon.events()
    assert len([e for e in events if e.get("event") == "storage.uploaded"]) == 1
    sources = sorted(e["source"] for e in events if e.get("event") == "job.created")
    assert sources == ["evil", "good.jpg", "sub/evil", "sub/v.jpg"]
