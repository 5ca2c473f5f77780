"""The state folder as a running daemon holds it: liveness by the lock, clear refusals."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from seedance_watch import daemon as lifecycle
from seedance_watch.cli import main
from seedance_watch.commands.status import (
    DAEMON_STATUS_NAME,
    format_status,
    read_daemon_status,
    status_report,
)
from seedance_watch.config import Config, load_config
from seedance_watch.core.jobs import InputFile, Job, State
from seedance_watch.files import fsutil
from seedance_watch.ledger import lock
from seedance_watch.ledger.daemonfile import DaemonStatusFile
from seedance_watch.ledger.jsonl import JsonlReader, Ledger
from seedance_watch.ledger.lock import LOCK_NAME, lock_holder
from seedance_watch.service.web.files import JobFiles
from seedance_watch.simulator import Simulator
from seedance_watch.testing.s3emulator import S3Emulator

from .helpers import daemon_env, make_image_bytes, run_once, write_config

pytestmark = pytest.mark.timeout(60)


def write_daemon_json(state: Path, pid: int) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / DAEMON_STATUS_NAME).write_text(
        json.dumps({"pid": pid, "key_source": "env", "paused": {}, "updated_at": "x"})
    )


def test_status_tells_running_by_the_lock_not_by_a_pid(tmp_path: Path) -> None:
    """daemon.json naming a live pid (here: this very process, as a reused pid would)
    is not "running" when nobody holds the lock; a ledger holding the lock is
    "running" even before daemon.json exists, with the holder's pid."""
    state = tmp_path / "state"
    write_daemon_json(state, os.getpid())
    daemon = read_daemon_status(JsonlReader(state))
    assert daemon is not None and daemon["running"] is False
    assert "daemon: not running" in format_status(status_report(JsonlReader(state)))

    (state / DAEMON_STATUS_NAME).unlink()
    with Ledger.open(state):
        assert lock_holder(state) is not None and f"pid {os.getpid()}" in str(lock_holder(state))
        daemon = read_daemon_status(JsonlReader(state))
        assert daemon is not None and daemon["running"] is True
        assert daemon["pid"] == os.getpid()
        assert f"daemon: running (pid {os.getpid()})" in format_status(
            status_report(JsonlReader(state))
        )
    assert lock_holder(state) is None
    assert read_daemon_status(JsonlReader(state)) is None


def test_status_testing_the_lock_never_creates_it_or_keeps_it(tmp_path: Path) -> None:
    """status on a fresh folder creates no LOCK; after it tested one, a daemon can start."""
    state = tmp_path / "state"
    state.mkdir()
    assert lock_holder(state) is None
    assert not (state / LOCK_NAME).exists()
    with Ledger.open(state):
        pass
    assert lock_holder(state) is None
    with Ledger.open(state):
        pass


def test_a_daemon_starting_while_status_tests_the_lock_still_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """status holds a shared lock for an instant; a daemon starting in that instant
    tries again instead of refusing as if another daemon ran."""
    state = tmp_path / "state"
    state.mkdir()
    (state / LOCK_NAME).write_text("")
    fd = os.open(state / LOCK_NAME, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # what status does, frozen in time
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        os.close(fd)  # status releases the lock

    monkeypatch.setattr(lock.time, "sleep", sleep)
    with Ledger.open(state):
        assert len(waits) == 1


def config_file(tmp_path: Path, **paths: Path) -> Path:
    folders = {name: tmp_path / name for name in ("inbox", "outbox", "done", "failed", "state")}
    folders.update(paths)
    body = ", ".join(f"{k}: '{v}'" for k, v in folders.items())
    path = tmp_path / "seedance-watch.yaml"
    path.write_text(f"paths: {{{body}}}\nstorage: {{bucket: b}}\nlog: {{format: json}}\n")
    return path


def test_status_on_an_unusable_state_folder_exits_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """paths.state below a regular file (ENOTDIR): exit 2, a message naming paths.state."""
    (tmp_path / "file").write_text("")
    config = config_file(tmp_path, state=tmp_path / "file" / "state")
    assert main(["status", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "paths.state" in err and "cannot be used" in err and "Traceback" not in err


def test_status_on_a_folder_without_a_ledger_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No ledger in paths.state (a mistyped path, a service's other folder): "no ledger
    at PATH", not "jobs: none", which would say an empty ledger was found; --json keeps
    its shape.  An empty ledger still says "jobs: none"."""
    state = tmp_path / "state"
    config = config_file(tmp_path)
    assert main(["status", "--config", str(config)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"no ledger at {state}"]
    assert main(["status", "--json", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out) == {"counts": {}, "jobs": [], "daemon": None}
    assert not state.exists()
    with Ledger.open(state):
        pass
    capsys.readouterr()  # its log lines
    assert main(["status", "--config", str(config)]) == 0
    assert capsys.readouterr().out.splitlines() == ["jobs: none"]


def test_status_into_a_closed_pipe_ends_without_a_traceback(tmp_path: Path) -> None:
    """`status | head` when head has gone: no BrokenPipeError traceback on stderr."""
    config = config_file(tmp_path)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "seedance_watch", "status", "--json", "--config", str(config)],
            env=daemon_env(),
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    finally:
        os.close(write)
    assert proc.returncode == 1
    assert proc.stderr == ""


@pytest.mark.parametrize("key", ["state", "done"])
def test_run_on_an_unusable_folder_exits_2_without_a_traceback(tmp_path: Path, key: str) -> None:
    """`run` with paths.state (or another folder) impossible to create: exit 2 naming it."""
    (tmp_path / "file").write_text("")
    config = config_file(tmp_path, **{key: tmp_path / "file" / key})
    proc = subprocess.run(
        [sys.executable, "-m", "seedance_watch", "run", "--once", "--config", str(config)],
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=os.fspath(tmp_path),
    )
    assert proc.returncode == 2, proc.stderr
    assert f"paths.{key}" in proc.stderr and "Traceback" not in proc.stderr


def test_the_daemon_folders_are_created_durably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each folder the daemon creates at start-up has its parent fsynced (a power cut
    right after start-up must not lose done/ with the inputs moved into it)."""
    base = tmp_path / "srv"
    config = load_config(
        config_file(
            base.parent, **{name: base / name for name in ("inbox", "outbox", "done", "failed")}
        ),
        {},
    )
    synced: list[Path] = []
    monkeypatch.setattr(fsutil, "fsync_dir", synced.append)
    lifecycle._make_dirs(config)
    assert all((base / name).is_dir() for name in ("inbox", "outbox", "done", "failed"))
    assert base.parent in synced  # for srv/ itself
    assert synced.count(base) >= 4  # for each of the four


def test_start_up_sweeps_old_temp_files_from_the_inbox_and_the_state_folder(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """A move into the inbox (`retry` across file systems) or an atomic write in the state
    folder killed midway leaves a hidden ``.NAME.<random>.tmp``: a `run` sweeps those
    of the inbox older than an hour (a `retry` may be writing a fresh one right now)
    and every one of the state folder (which it holds locked)."""
    config = write_config(tmp_path, s3_server, sim)
    inbox, state = tmp_path / "inbox", tmp_path / "state"
    state.mkdir()
    old = fsutil.temp_path(inbox / "sub" / "beach.jpg")
    old.parent.mkdir()
    fresh = fsutil.temp_path(inbox / "dune.jpg")
    in_state = fsutil.temp_path(state / "daemon.json")
    for path in (old, fresh, in_state):
        path.write_bytes(b"partial")
    os.utime(old, (1_600_000_000, 1_600_000_000))
    result, _ = run_once(config)
    assert result.exit_code == 0
    assert fresh.exists()
    assert not old.exists() and not in_state.exists()


# --- who may read the state (item 12 of the third hardening round) ----------------------


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _fill_state(root: Path, state: Path) -> None:
    """What a daemon leaves in its state folder: segments, a snapshot, LOCK,
    daemon.json and a thumbnail."""
    for name in ("inbox", "outbox", "done", "failed"):
        (root / name).mkdir(parents=True, exist_ok=True)
    image = make_image_bytes(640, 480)
    (root / "done" / "beach.jpg").write_bytes(image)
    sha = hashlib.sha256(image).hexdigest()
    job = Job(
        job_id="0123456789abcdef",
        state=State.DONE,
        source="beach.jpg",
        sidecar="beach.yaml",
        created_at=1.0,
        updated_at=2.0,
        image_sha256=sha,
        content_key="k" * 64,
        model="m",
        inputs=(InputFile("image", "beach.jpg", sha, len(image), 1, 1, 1),),
        output="beach.mp4",
        moved_to=(("beach.jpg", "done/beach.jpg"),),
    )
    with Ledger.open(state, compact_threshold=2) as ledger:
        for n in range(4):
            ledger.put(replace(job, job_id=f"{n:016x}"))
        ledger.compact(wait=True)
        ledger.put(job)
    DaemonStatusFile(state, key_source="env").pause("storage", "the bucket refused us")
    config = Config.model_validate(
        {
            "paths": {k: str(root / k) for k in ("inbox", "outbox", "done", "failed")}
            | {"state": str(state)},
            "storage": {"bucket": "b"},
        }
    )
    assert JobFiles(config.paths).thumbnail(job) is not None


def _created_files(state: Path) -> list[Path]:
    files = [p for p in state.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"LOCK", "daemon.json", "0123456789abcdef.jpg"} <= names
    assert any(n.startswith("snapshot-") for n in names) and any(
        n.startswith("ledger-") for n in names
    )
    return files


def test_under_a_default_umask_the_state_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """Outside systemd and the container (umask 022), a state folder the daemon creates
    is 0700 and every file in it -- segments, snapshots, LOCK, daemon.json, thumbnails
    -- 0600; the folders above it are left to the umask."""
    root = tmp_path / "home"
    state = root / "new" / "state"
    with umask(0o022):
        _fill_state(root, state)
    assert _mode(state) == 0o700 and _mode(root / "new") == 0o755
    assert _mode(state / "thumbs") == 0o700
    assert {p.name: _mode(p) for p in _created_files(state)} == {
        p.name: 0o600 for p in _created_files(state)
    }


def test_a_group_folder_shares_its_state_with_its_group_and_nobody_else(tmp_path: Path) -> None:
    """A state folder made a group folder on purpose (g+rx, nothing for others, as the
    container's 0750) keeps its mode, and the daemon's files in it are 0640 (its group
    can run ``status``), thumbs/ 0750; never anything for others."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o750)
    with umask(0o022):
        _fill_state(tmp_path, state)
    assert _mode(state) == 0o750 and _mode(state / "thumbs") == 0o750
    assert {_mode(p) for p in _created_files(state)} == {0o640}
    with umask(0o077):  # the umask may still take more away
        (state / "daemon.json").unlink()
        DaemonStatusFile(state, key_source="env").pause("storage", "again")
    assert _mode(state / "daemon.json") == 0o600


def test_files_an_older_version_left_readable_by_all_are_tightened_at_start(
    tmp_path: Path,
) -> None:
    """Opening a state folder whose files an older version left 0644 (and thumbs/ 0755)
    makes them 0600 (thumbs/ 0700); the folder itself, the person's, keeps its mode."""
    state = tmp_path / "state"
    with umask(0o022):
        _fill_state(tmp_path, state)
    state.chmod(0o755)
    for path in [state / "thumbs", *state.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    with umask(0o022):
        with Ledger.open(state):
            pass
        config = load_config(config_file(tmp_path, state=state), {})
        JobFiles(config.paths)
    assert _mode(state) == 0o755 and _mode(state / "thumbs") == 0o700
    files = [p for p in state.iterdir() if p.is_file()]
    assert len(files) >= 4 and {_mode(p) for p in files} == {0o600}
