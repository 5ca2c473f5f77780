"""Any name the file system gives is a name (docs/design.md, "The inbox").

Names are bytes on POSIX.  One that is not UTF-8 (Python holds it as a
surrogate-escaped str) or that holds a newline or another control character is
processed like any other: it is kept as the file system gives it in the inbox,
done/ and the outbox, written to JSON as a ``\\udcXX`` escape that reads back to the
same name, and never put into an object key.  Nothing about one drop's name stops
the daemon or any other drop.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from seedance_watch.core.jobs import make_job_id
from seedance_watch.files import fsutil
from seedance_watch.simulator import Simulator
from seedance_watch.testing.s3emulator import S3Emulator

from .helpers import DaemonProcess, files_under, make_image_bytes, run_once, wait_for, write_config
from .simhelpers import quick_tasks

pytestmark = pytest.mark.timeout(90)

#: Hostile stems: latin-1 bytes (not UTF-8), a newline, a terminal escape, a tab and
#: a DEL; as str, the way Python gives them from os.listdir (surrogateescape).
STEMS = [
    os.fsdecode(b"caf\xe9"),
    os.fsdecode(b"\xff\xfe"),
    "nl\nname",
    "\x1b[31mred\x1b[0m",
    "tab\tand\x7fdel",
]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(quick_tasks()) as simulator:
        yield simulator


def _drop(inbox: Path, stem: str, color: tuple[int, int, int]) -> None:
    (inbox / f"{stem}.jpg").write_bytes(make_image_bytes(640, 480, color=color))
    (inbox / f"{stem}.yaml").write_text(f"prompt: {json.dumps('Light on ' + repr(stem))}\n")


def _drop_all(inbox: Path) -> None:
    for i, stem in enumerate(STEMS):
        _drop(inbox, stem, (10 * i, 100, 200))
    _drop(inbox, "plain", (1, 2, 3))


def _expected_outputs() -> set[str]:
    return {f"{stem}.mp4" for stem in [*STEMS, "plain"]}


def _outputs(outbox: Path) -> set[str]:
    return {p.name for p in outbox.glob("*.mp4")}


def test_make_job_id_takes_any_name() -> None:
    """A surrogate-escaped name hashes as the bytes the file system gave (no
    UnicodeEncodeError), and two names differing only in those bytes differ."""
    a = make_job_id(os.fsdecode(b"caf\xe9.jpg"), "s", "t", 1)
    b = make_job_id(os.fsdecode(b"caf\xe8.jpg"), "s", "t", 1)
    assert a != b and len(a) == 16


def test_json_written_for_a_name_reads_back_as_that_name(tmp_path: Path) -> None:
    """atomic_write_json writes a surrogate as the JSON escape \\udcXX: valid UTF-8,
    and json.loads gives back the very name (so os.fsencode gives the bytes)."""
    name = os.fsdecode(b"caf\xe9.jpg")
    fsutil.atomic_write_json(tmp_path / "x.json", {"source": name, "text": "été"})
    raw = (tmp_path / "x.json").read_bytes()
    raw.decode("utf-8")  # valid UTF-8 throughout
    assert b"\\udce9" in raw and "été".encode() in raw
    assert json.loads(raw)["source"] == name
    assert os.fsencode(json.loads(raw)["source"]) == b"caf\xe9.jpg"


def test_once_processes_drops_with_any_name(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """``run --once`` over drops whose names are not UTF-8 or hold control characters:
    every drop becomes a video under its own name (bytes kept), its inputs go to done/,
    the output JSON names the source (read back, the same bytes), exit 0."""
    config_path = write_config(tmp_path, s3_server, sim)
    inbox, outbox, done = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "done"
    _drop_all(inbox)
    result, _ = run_once(config_path)
    assert result.exit_code == 0, result
    assert _outputs(outbox) == _expected_outputs()
    assert files_under(inbox) == []
    assert len(sim.submits) == len(STEMS) + 1
    for stem in STEMS:
        meta = json.loads((outbox / f"{stem}.json").read_bytes())
        assert meta["source"] == f"{stem}.jpg"
        assert (done / f"{stem}.jpg").is_file() and (done / f"{stem}.yaml").is_file()
    assert not list((tmp_path / "failed").iterdir())


def test_the_daemon_processes_drops_with_any_name_and_restarts(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """The real daemon, hostile names dropped while it runs: every drop becomes a video
    and the daemon keeps running; after SIGTERM a second start over the same ledger (its
    records hold the names) starts, processes a new drop and stops cleanly."""
    config_path = write_config(tmp_path, s3_server, sim)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = DaemonProcess(config_path)
    try:
        wait_for(lambda: daemon.has_event("inbox.watching"), timeout=30)
        _drop_all(inbox)
        wait_for(lambda: _outputs(outbox) == _expected_outputs(), timeout=45, interval=0.1)
        assert daemon.proc.poll() is None, "the daemon stopped"
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        daemon.kill()
    again = DaemonProcess(config_path)
    try:
        wait_for(lambda: again.has_event("inbox.watching"), timeout=30)
        _drop(inbox, os.fsdecode(b"second\xe9"), (5, 6, 7))
        wait_for(lambda: (outbox / os.fsdecode(b"second\xe9.mp4")).exists(), timeout=30)
        again.signal(signal.SIGTERM)
        assert again.wait(30) == 0
    finally:
        again.kill()
    assert files_under(inbox) == []
