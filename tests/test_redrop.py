"""A pair dropped again while its first job runs is a new drop (docs/design.md, "A job
owns the files it examined").

A person re-exports an edited photo: ``a.jpg`` and ``a.yaml`` are both replaced (a new
image, the same words, new files) while the first job's task runs.  The first job
moves only the very files it examined (device and inode; their hash may confirm,
never substitute), so the new pair stays in the inbox and becomes a job and a video
of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from seedance_watch.core.jobs import InputFile
from seedance_watch.files import outbox
from seedance_watch.files.fsutil import identify
from seedance_watch.simulator import Simulator
from seedance_watch.testing.s3emulator import S3Emulator

from .helpers import DaemonProcess, files_under, make_image_bytes, wait_for, write_config
from .simhelpers import quick_tasks

pytestmark = pytest.mark.timeout(90)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    # Tasks long enough to replace the pair while the first one runs.
    with Simulator(quick_tasks(running_seconds=1.5)) as simulator:
        yield simulator


def _replace(path: Path, data: bytes) -> None:
    """Write a new file under ``path``'s name, as an export does (a new inode)."""
    tmp = path.with_name(f".{path.name}.export")
    tmp.write_bytes(data)
    tmp.replace(path)


def test_a_pair_replaced_while_its_job_runs_is_a_new_drop(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """The first job finishes its video (a.mp4, from the old image) without taking the
    files that replaced its own; the replaced pair stays in the inbox, then becomes its
    own job and video (a-2.mp4, from the new image), and moves to done/; nothing fails
    as missing_sidecar."""
    config_path = write_config(tmp_path, s3_server, sim)
    inbox, outbox_dir, done = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "done"
    old_image = make_image_bytes(640, 480, color=(200, 10, 10))
    new_image = make_image_bytes(640, 480, color=(10, 10, 200))
    words = b'prompt: "The harbour at dawn"\n'
    daemon = DaemonProcess(config_path)
    try:
        wait_for(lambda: daemon.has_event("inbox.watching"), timeout=30)
        (inbox / "a.jpg").write_bytes(old_image)
        (inbox / "a.yaml").write_bytes(words)
        wait_for(lambda: len(sim.submits) == 1, timeout=30, interval=0.02)
        assert not (outbox_dir / "a.mp4").exists(), "the task ended before the re-drop"
        _replace(inbox / "a.jpg", new_image)
        _replace(inbox / "a.yaml", words)
        new_inodes = {name: (inbox / name).stat().st_ino for name in ("a.jpg", "a.yaml")}
        wait_for(lambda: (outbox_dir / "a-2.mp4").exists(), timeout=45, interval=0.1)
        wait_for(lambda: files_under(inbox) == [], timeout=15)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        daemon.kill()
    assert [r.image_sha256 for r in sim.submits] == [sha256(old_image), sha256(new_image)]
    first = json.loads((outbox_dir / "a.json").read_text())
    second = json.loads((outbox_dir / "a-2.json").read_text())
    assert first["source_sha256"] == sha256(old_image)
    assert second["source_sha256"] == sha256(new_image)
    # The first job's files were replaced (by the user): it moved nothing of the new
    # pair, which the second job moved, the very files the user wrote.
    assert files_under(done) == ["a.jpg", "a.yaml"]
    assert (done / "a.jpg").read_bytes() == new_image
    assert (done / "a.jpg").stat().st_ino == new_inodes["a.jpg"]
    assert (done / "a.yaml").stat().st_ino == new_inodes["a.yaml"]
    assert files_under(tmp_path / "failed") == []


def _examined(path: Path, role: str = "sidecar") -> InputFile:
    st = os.lstat(path)
    data = path.read_bytes()
    return InputFile(role, path.name, sha256(data), st.st_size, st.st_dev, st.st_ino,
                     st.st_mtime_ns)  # fmt: skip


def test_a_new_file_with_the_same_bytes_is_not_the_file_examined(tmp_path: Path) -> None:
    """finish_moves moves a source only while it is the inode the job examined: a new
    file with the very same bytes stays in the inbox (the hash never substitutes for
    the identity), while the examined inode, merely touched, moves once its hash
    confirms it (item 6)."""
    inbox, done = tmp_path / "inbox", tmp_path / "done"
    inbox.mkdir()
    (inbox / "a.yaml").write_bytes(b"prompt: same words\n")
    (inbox / "b.yaml").write_bytes(b"prompt: other words\n")
    a, b = _examined(inbox / "a.yaml"), _examined(inbox / "b.yaml")
    _replace(inbox / "a.yaml", b"prompt: same words\n")  # same bytes, a new inode
    os.utime(inbox / "b.yaml", ns=(1, 2))  # the examined inode, touched
    roots = {"inbox": inbox, "done": done, "failed": tmp_path / "failed"}
    moves = (("a.yaml", "done/a.yaml"), ("b.yaml", "done/b.yaml"))
    outbox.finish_moves(roots=roots, moves=moves, expect={"a.yaml": a, "b.yaml": b})
    assert files_under(inbox) == ["a.yaml"]
    assert identify(inbox / "a.yaml").ino != a.ino
    assert files_under(done) == ["b.yaml"]
    assert (done / "b.yaml").stat().st_ino == b.ino
