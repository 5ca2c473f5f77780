"""The durable ledger: round trips, indexes, compaction, crash recovery, lock, faults."""

from __future__ import annotations

import dataclasses
import errno
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from seedance_watch.core.jobs import Job, State
from seedance_watch.errors import DurabilityError, LedgerCorrupt, LedgerLocked
from seedance_watch.ledger.jsonl import Ledger, read_jobs
from seedance_watch.ledger.record import encode_record


def make_job(n: int, state: State = State.NEW, seq: int = 0, **changes: Any) -> Job:
    job = Job(
        job_id=f"job{n:05d}",
        state=state,
        source=f"sub/image-{n}.jpg",
        sidecar=f"sub/image-{n}.yaml",
        created_at=1_700_000_000.0 + n,
        updated_at=1_700_000_000.0 + n + seq,
        prompt="Clouds drift slowly — «soft» light",
        seq=seq,
    )
    return dataclasses.replace(job, **changes)


def segment(state: Path, n: int) -> Path:
    return state / f"ledger-{n:08d}.jsonl"


def files(state: Path) -> set[str]:
    return {p.name for p in state.iterdir() if p.name.endswith((".jsonl", ".tmp"))}


def fill(state: Path, jobs: list[Job], **kwargs: Any) -> dict[str, Job]:
    """Put ``jobs`` in order into a fresh ledger; return the expected latest records."""
    with Ledger.open(state, **kwargs) as ledger:
        for job in jobs:
            ledger.put(job)
        return dict(ledger.jobs())


# --- round trips and indexes -------------------------------------------------------------


def test_round_trip_and_latest_record_wins(tmp_path: Path) -> None:
    """Records survive a reopen; the last put of a job is the one that counts."""
    state = tmp_path / "state"
    a0, a1, a2 = (make_job(1, seq=s) for s in range(3))
    b = make_job(2, usage={"total_tokens": 7}, moved_to=(("x.jpg", "done/x.jpg"),))
    fill(state, [a0, b, a1, a2])
    with Ledger.open(state) as ledger:
        assert ledger.get("job00001") == a2
        assert ledger.get("job00002") == b
        assert ledger.get("nope") is None
        assert len(ledger.jobs()) == 2


def test_indexes_follow_puts_and_survive_reopen(tmp_path: Path) -> None:
    """counts/active/find_done_by_content_key track every put, and agree after a reopen."""
    state = tmp_path / "state"
    old_done = make_job(1, State.DONE, seq=5, content_key="k1")
    new_done = make_job(2, State.DONE, seq=9, content_key="k1")
    failed = make_job(3, State.FAILED, seq=3, content_key="k2")
    running = make_job(4, State.SUBMITTED, seq=3, content_key="k3")
    with Ledger.open(state) as ledger:
        ledger.put(make_job(2, State.SUBMITTED, seq=2, content_key="k1"))
        assert ledger.find_done_by_content_key("k1") is None
        for job in (new_done, old_done, failed, running):
            ledger.put(job)
        checks: list[Ledger] = [ledger]
        assert ledger.counts()["done"] == 2
    with Ledger.open(state) as reopened:
        checks.append(reopened)
        for led in checks:
            counts = led.counts()
            assert counts["done"] == 2 and counts["failed"] == 1 and counts["submitted"] == 1
            assert counts["new"] == 0 and sum(counts.values()) == 4
            assert led.active() == [running]
            assert led.find_done_by_content_key("k1") == new_done  # newest, not last put
            assert led.find_done_by_content_key("k2") is None  # failed jobs never dedupe
            assert led.find_done_by_content_key("k3") is None


def test_jobs_view_is_read_only(tmp_path: Path) -> None:
    """jobs() cannot be used to change the ledger behind its back."""
    with Ledger.open(tmp_path) as ledger:
        ledger.put(make_job(1))
        view: Any = ledger.jobs()
        with pytest.raises(TypeError):
            view["x"] = make_job(2)


def test_lines_are_checksummed_json(tmp_path: Path) -> None:
    """Each line is {"crc": 8 hex, "job": the job's dict}, readable by any JSON tool."""
    import json
    import zlib

    fill(tmp_path, [make_job(1)])
    line = segment(tmp_path, 1).read_bytes()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    record = json.loads(line)
    assert record["job"] == make_job(1).to_dict()
    body = line[len(b'{"crc":"12345678","job":') : -2]
    assert record["crc"] == f"{zlib.crc32(body):08x}"


# --- compaction ---------------------------------------------------------------------------


def versions(n_jobs: int, n_versions: int) -> list[Job]:
    return [make_job(j, seq=v) for v in range(n_versions) for j in range(n_jobs)]


def test_compaction_keeps_every_job_and_removes_old_files(tmp_path: Path) -> None:
    """With a low threshold the log is compacted; nothing is lost and old files go."""
    with capture_logs() as logs:
        expected = fill(tmp_path, versions(8, 12), compact_threshold=10)
    assert any(e["event"] == "ledger.compacted" for e in logs)
    names = files(tmp_path)
    snapshots = sorted(n for n in names if n.startswith("snapshot-"))
    assert len(snapshots) == 1, names
    covered = int(snapshots[0][len("snapshot-") : -len(".jsonl")])
    segments = sorted(int(n[len("ledger-") : -len(".jsonl")]) for n in names - {snapshots[0]})
    assert segments and all(s > covered for s in segments)
    assert read_jobs(tmp_path) == expected
    with Ledger.open(tmp_path) as ledger:
        assert dict(ledger.jobs()) == expected


def test_open_compacts_a_long_log(tmp_path: Path) -> None:
    """A log longer than the threshold is compacted synchronously at open."""
    expected = fill(tmp_path, versions(3, 20), compact_threshold=1000)
    assert not any(n.startswith("snapshot-") for n in files(tmp_path))
    with capture_logs() as logs, Ledger.open(tmp_path, compact_threshold=10) as ledger:
        assert dict(ledger.jobs()) == expected
    assert [e["jobs"] for e in logs if e["event"] == "ledger.compacted"] == [3]
    assert files(tmp_path) == {"snapshot-00000001.jsonl", "ledger-00000002.jsonl"}


def test_crash_during_compaction_recovers(tmp_path: Path) -> None:
    """A leftover .tmp, or a snapshot whose covered files were not yet deleted, is harmless."""
    with Ledger.open(tmp_path, compact_threshold=1000) as ledger:
        for job in versions(4, 3):
            ledger.put(job)
        first = segment(tmp_path, 1).read_bytes()
        ledger.compact(wait=True)
        for job in versions(4, 5)[12:]:
            ledger.put(job)
        expected = dict(ledger.jobs())
    assert files(tmp_path) == {"snapshot-00000001.jsonl", "ledger-00000002.jsonl"}

    # Crash after the rename, before the deletions (plus a torn temp of a later attempt).
    segment(tmp_path, 1).write_bytes(first)
    (tmp_path / "snapshot-00000000.jsonl").write_bytes(first)
    (tmp_path / "snapshot-00000002.jsonl.tmp").write_bytes(first[:17])
    with Ledger.open(tmp_path) as ledger:
        assert dict(ledger.jobs()) == expected
    assert files(tmp_path) == {"snapshot-00000001.jsonl", "ledger-00000002.jsonl"}

    # Crash after the rotation, before the snapshot was renamed.
    (tmp_path / "snapshot-00000001.jsonl").rename(tmp_path / "snapshot-00000001.jsonl.tmp")
    segment(tmp_path, 1).write_bytes(first)
    with Ledger.open(tmp_path) as ledger:
        assert dict(ledger.jobs()) == expected
    assert files(tmp_path) == {"ledger-00000001.jsonl", "ledger-00000002.jsonl"}


# --- byte-level recovery -------------------------------------------------------------------


@pytest.fixture
def tail_case(tmp_path: Path) -> tuple[Path, bytes, int, dict[str, Job]]:
    """A closed ledger whose last record updates job 1; returns (file, bytes, its start, before)."""
    before = fill(tmp_path, [make_job(1), make_job(2)])
    fill(tmp_path, [make_job(1, State.UPLOADED, seq=1, s3_key="p/job00001/image-1.jpg")])
    path = segment(tmp_path, 1)
    data = path.read_bytes()
    start = data.rindex(b"\n", 0, len(data) - 1) + 1
    return path, data, start, before


def test_truncation_at_every_offset_of_the_last_record(
    tail_case: tuple[Path, bytes, int, dict[str, Job]],
) -> None:
    """Cut anywhere in the last record: only that record is lost and the file is repaired."""
    path, data, start, before = tail_case
    for cut in range(start, len(data)):
        path.write_bytes(data[:cut])
        with capture_logs() as logs, Ledger.open(path.parent) as ledger:
            assert dict(ledger.jobs()) == before, cut
        assert path.read_bytes() == data[:start], cut
        torn = [e for e in logs if e["event"] == "ledger.torn_tail_dropped"]
        assert torn == ([] if cut == start else [torn[0]]), cut
        if cut > start:
            assert torn[0]["offset"] == start and torn[0]["file"] == str(path)


def test_flipped_byte_at_every_offset_of_the_last_record(
    tail_case: tuple[Path, bytes, int, dict[str, Job]],
) -> None:
    """A damaged last record (any byte, newline included) is dropped and the file repaired."""
    path, data, start, before = tail_case
    for at in range(start, len(data)):
        damaged = bytearray(data)
        damaged[at] ^= 0xFF
        path.write_bytes(bytes(damaged))
        with Ledger.open(path.parent) as ledger:
            assert dict(ledger.jobs()) == before, at
        assert path.read_bytes() == data[:start], at


def test_damage_before_the_last_record_is_refused(
    tail_case: tuple[Path, bytes, int, dict[str, Job]],
) -> None:
    """A bad middle record stops recovery with the file, line and offset, and changes nothing."""
    path, data, _start, _before = tail_case
    second = data.index(b"\n") + 1
    for at in (second, second + 30, data.index(b"\n", second)):
        damaged = bytearray(data)
        damaged[at] ^= 0xFF
        path.write_bytes(bytes(damaged))
        with pytest.raises(LedgerCorrupt) as info:
            Ledger.open(path.parent)
        message = str(info.value)
        assert str(path) in message and "line 2" in message, message
        assert f"byte offset {second}" in message and "backup" in message
        assert path.read_bytes() == bytes(damaged)
        with pytest.raises(LedgerCorrupt):
            read_jobs(path.parent)
    path.write_bytes(data)
    with Ledger.open(path.parent):
        pass  # the lock was released by the failed opens


def test_damage_in_an_older_segment_or_snapshot_is_refused(tmp_path: Path) -> None:
    """Only the newest segment may end torn; snapshots and a missing segment are refused."""
    with Ledger.open(tmp_path, compact_threshold=1000) as ledger:
        for job in versions(3, 2):
            ledger.put(job)
        ledger.compact(wait=True)
        ledger.put(make_job(1, seq=7))
        ledger.compact(wait=True)
        ledger.put(make_job(1, seq=8))
    snapshot = tmp_path / "snapshot-00000002.jsonl"
    good = snapshot.read_bytes()
    snapshot.write_bytes(good[:-3])  # torn last line of a snapshot: never a crash artefact
    with pytest.raises(LedgerCorrupt, match=r"snapshot-00000002\.jsonl, line 3"):
        Ledger.open(tmp_path)
    snapshot.write_bytes(good)
    (tmp_path / "ledger-00000003.jsonl").rename(tmp_path / "ledger-00000004.jsonl")
    with pytest.raises(LedgerCorrupt, match=r"ledger-00000003\.jsonl is missing"):
        Ledger.open(tmp_path)
    segment(tmp_path, 4).rename(segment(tmp_path, 3))
    segment(tmp_path, 4).write_bytes(encode_record(make_job(9)))
    segment(tmp_path, 3).write_bytes(segment(tmp_path, 3).read_bytes()[:-1])
    with pytest.raises(LedgerCorrupt, match=r"ledger-00000003\.jsonl, line 1"):
        Ledger.open(tmp_path)


# --- the lock and lock-free reads -------------------------------------------------------


def test_second_opener_is_refused_naming_the_holder(tmp_path: Path) -> None:
    """A second daemon (another process, or another open here) gets LedgerLocked with our pid."""
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from seedance_watch.ledger.jsonl import Ledger\n"
        "from seedance_watch.errors import LedgerLocked\n"
        "try:\n    Ledger.open(Path(sys.argv[1]))\n"
        "except LedgerLocked as exc:\n    print(exc.holder)\n    sys.exit(2)\n"
    )
    with Ledger.open(tmp_path) as ledger:
        ledger.put(make_job(1))
        result = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2, result.stderr
        assert f"pid {os.getpid()}" in result.stdout
        with pytest.raises(LedgerLocked, match=f"pid {os.getpid()}") as info:
            Ledger.open(tmp_path)
        assert info.value.holder is not None and str(os.getpid()) in info.value.holder
        assert read_jobs(tmp_path) == {"job00001": make_job(1)}  # status works meanwhile
    with Ledger.open(tmp_path) as again:
        assert again.get("job00001") == make_job(1)


def test_read_jobs_ignores_a_torn_tail_without_repairing_it(tmp_path: Path) -> None:
    """read_jobs skips an append in progress and never writes."""
    fill(tmp_path, [make_job(1), make_job(2)])
    path = segment(tmp_path, 1)
    torn = path.read_bytes() + encode_record(make_job(3))[:40]
    path.write_bytes(torn)
    assert set(read_jobs(tmp_path)) == {"job00001", "job00002"}
    assert path.read_bytes() == torn
    assert read_jobs(tmp_path / "missing") == {}


def test_read_jobs_during_appends_and_compactions_sees_a_prefix(tmp_path: Path) -> None:
    """A reader racing a writer (and its compactions) always gets the state after some put."""
    puts = [make_job(g % 7, seq=g) for g in range(600)]
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            with Ledger.open(tmp_path, compact_threshold=25) as ledger:
                for job in puts:
                    ledger.put(job)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    with Ledger.open(tmp_path):
        pass  # create the folder and first segment before the reader starts
    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not done.is_set() or reads == 0:
        seen = read_jobs(tmp_path)
        reads += 1
        k = max((job.seq for job in seen.values()), default=-1)
        expected = {job.job_id: job for job in puts[: k + 1]}
        assert seen == expected, k
    thread.join(timeout=30)
    assert not errors and reads > 1
    assert read_jobs(tmp_path) == {job.job_id: job for job in puts}


# --- injected failures ------------------------------------------------------------------


def fail_with(code: int) -> Callable[..., Any]:
    def _fail(*_args: Any) -> Any:
        raise OSError(code, os.strerror(code))

    return _fail


@pytest.mark.parametrize("step", ["write", "fsync", "short"])
def test_io_error_in_put_is_fatal_and_leaves_a_consistent_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """A failed write/fsync/short write raises DurabilityError, stops writes; disk stays sane."""
    old, new = make_job(1), make_job(1, State.UPLOADED, seq=1, s3_key="k")
    real_write = os.write
    ledger = Ledger.open(tmp_path)
    ledger.put(old)
    with monkeypatch.context() as mp:
        if step == "write":
            mp.setattr(os, "write", fail_with(errno.ENOSPC))
        elif step == "fsync":
            mp.setattr(os, "fsync", fail_with(errno.EIO))
        else:
            mp.setattr(os, "write", lambda fd, data: real_write(fd, data[: len(data) // 2]))
        with pytest.raises(DurabilityError) as info:
            ledger.put(new)
    assert isinstance(info.value.__cause__, OSError)
    assert ledger.get("job00001") == old
    assert not ledger.writable()
    with pytest.raises(DurabilityError, match="refuses writes"):
        ledger.put(make_job(2))
    ledger.close()
    with Ledger.open(tmp_path) as reopened:
        assert reopened.get("job00001") == (new if step == "fsync" else old)
        assert reopened.get("job00002") is None
        assert reopened.writable()
        reopened.put(make_job(2))
    assert read_jobs(tmp_path)["job00002"] == make_job(2)


def test_fsync_failure_during_background_compaction_stops_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed fsync of the snapshot is fatal: later puts are refused; nothing is lost."""
    expected = fill(tmp_path, versions(5, 2))
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if threading.current_thread().name == "ledger-compactor":
            raise OSError(errno.EIO, "I/O error")
        real_fsync(fd)

    ledger = Ledger.open(tmp_path)
    with monkeypatch.context() as mp:
        mp.setattr(os, "fsync", fsync)
        ledger.compact(wait=True)
    with pytest.raises(DurabilityError):
        ledger.put(make_job(9))
    assert not ledger.writable()
    ledger.close()
    assert not any(n.endswith(".tmp") for n in files(tmp_path))
    with Ledger.open(tmp_path) as reopened:
        assert dict(reopened.jobs()) == expected


@pytest.mark.parametrize("step", ["write", "rename"])
def test_disk_full_during_compaction_is_retried_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """ENOSPC while writing or renaming a snapshot loses nothing and puts go on."""
    expected = fill(tmp_path, versions(5, 2))
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if threading.current_thread().name == "ledger-compactor":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    with Ledger.open(tmp_path) as ledger, monkeypatch.context() as mp:
        if step == "write":
            mp.setattr(os, "write", write)
        else:
            mp.setattr(Path, "rename", fail_with(errno.ENOSPC))
        with capture_logs() as logs:
            ledger.compact(wait=True)
        assert [e["stage"] for e in logs if e["event"] == "ledger.compaction_failed"] == [step]
        assert ledger.writable()
        ledger.put(make_job(9))
        expected["job00009"] = make_job(9)
    assert not any(n.endswith(".tmp") or n.startswith("snapshot") for n in files(tmp_path))
    with Ledger.open(tmp_path) as reopened:
        assert dict(reopened.jobs()) == expected
        reopened.compact(wait=True)
    assert read_jobs(tmp_path) == expected


def test_opened_event_reports_size_and_time(tmp_path: Path) -> None:
    """ledger.opened names the job count, the segments and the seconds it took."""
    fill(tmp_path, [make_job(1), make_job(2)])
    started = time.perf_counter()
    with capture_logs() as logs, Ledger.open(tmp_path):
        pass
    opened = [e for e in logs if e["event"] == "ledger.opened"]
    assert len(opened) == 1 and opened[0]["jobs"] == 2 and opened[0]["segments"] == 1
    assert 0 <= opened[0]["seconds"] <= time.perf_counter() - started + 0.001


# --- hardening: recovery order, the lock, the folder ----------------------------------------


def test_a_damaged_newest_snapshot_is_refused_with_the_older_files_kept(tmp_path: Path) -> None:
    """Recovery deletes what a snapshot covers only after reading and decoding everything:
    when the newest snapshot is damaged, the intact older snapshot and segment it would
    have superseded are still on disk (and the torn tail is not truncated either)."""
    with Ledger.open(tmp_path, compact_threshold=1000) as ledger:
        for job in versions(3, 2):
            ledger.put(job)
        ledger.compact(wait=True)
        ledger.put(make_job(1, seq=7))
    assert files(tmp_path) == {"snapshot-00000001.jsonl", "ledger-00000002.jsonl"}
    older = {name: (tmp_path / name).read_bytes() for name in files(tmp_path)}
    # A compaction of segment 2 renamed its snapshot, then crashed before its cleanup;
    # that newest snapshot has since been damaged (a flipped byte in its first record).
    newest = bytearray(encode_record(make_job(1, seq=7)) + encode_record(make_job(2, seq=1)))
    newest[40] ^= 0x01
    (tmp_path / "snapshot-00000002.jsonl").write_bytes(bytes(newest))
    with pytest.raises(LedgerCorrupt, match=r"snapshot-00000002\.jsonl, line 1"):
        Ledger.open(tmp_path)
    assert {name: (tmp_path / name).read_bytes() for name in older} == older
    # Moving the damaged snapshot aside is enough to start again from the older files.
    (tmp_path / "snapshot-00000002.jsonl").unlink()
    with Ledger.open(tmp_path) as ledger:
        assert ledger.get("job00001") == make_job(1, seq=7)


def test_a_state_folder_on_a_network_file_system_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """flock() on NFS/SMB/FUSE may be local to one host: opening there logs
    ledger.network_fs naming the file system and the mount; a local one logs nothing."""
    from seedance_watch.files import fsutil

    table = tmp_path / "mountinfo"
    table.write_text(
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        f"40 22 0:50 / {tmp_path / 'nas'} rw,relatime - nfs4 server:/export rw\n"
    )
    monkeypatch.setattr(fsutil, "MOUNTINFO", table)
    with capture_logs() as logs, Ledger.open(tmp_path / "nas" / "state"):
        pass
    warned = [e for e in logs if e["event"] == "ledger.network_fs"]
    assert len(warned) == 1 and warned[0]["log_level"] == "warning"
    assert warned[0]["fstype"] == "nfs4" and warned[0]["mount_point"] == str(tmp_path / "nas")
    with capture_logs() as logs, Ledger.open(tmp_path / "local" / "state"):
        pass
    assert [e for e in logs if e["event"] == "ledger.network_fs"] == []


def test_a_lock_file_replaced_while_locking_is_locked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If LOCK is replaced between open() and flock(), the lock taken is on a file nobody
    else will open: the ledger checks the descriptor's inode against LOCK's and locks the
    new file, so a second opener is still refused."""
    import fcntl

    from seedance_watch.ledger import lock

    real_flock = fcntl.flock
    replaced = {"n": 0}

    def flock(fd: int, operation: int) -> None:
        real_flock(fd, operation)
        if replaced["n"] == 0:
            replaced["n"] += 1
            (tmp_path / "LOCK").unlink()
            (tmp_path / "LOCK").write_text("")

    monkeypatch.setattr(lock.fcntl, "flock", flock)
    with capture_logs() as logs, Ledger.open(tmp_path):
        monkeypatch.setattr(lock.fcntl, "flock", real_flock)
        assert [e["event"] for e in logs if e["event"] == "ledger.lock_replaced"] == [
            "ledger.lock_replaced"
        ]
        with pytest.raises(LedgerLocked):
            Ledger.open(tmp_path)


def test_a_lock_file_replaced_every_time_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Something that keeps replacing LOCK is another user of the folder: refused."""
    import fcntl

    from seedance_watch.errors import StateError
    from seedance_watch.ledger import lock

    real_flock = fcntl.flock

    def flock(fd: int, operation: int) -> None:
        real_flock(fd, operation)
        (tmp_path / "LOCK").unlink()
        (tmp_path / "LOCK").write_text("")

    monkeypatch.setattr(lock.fcntl, "flock", flock)
    with pytest.raises(StateError, match=r"LOCK file .* was replaced"):
        Ledger.open(tmp_path)


@pytest.mark.parametrize("where", ["under_a_file", "is_a_file"])
def test_a_state_folder_that_cannot_be_made_is_a_config_error(tmp_path: Path, where: str) -> None:
    """ENOTDIR/EEXIST (and EACCES, EROFS...) on the state folder itself: a ConfigError
    naming paths.state and the reason, which the CLI turns into exit 2, not a traceback."""
    from seedance_watch.errors import ConfigError

    (tmp_path / "file").write_text("not a folder")
    state = tmp_path / "file" / "state" if where == "under_a_file" else tmp_path / "file"
    with pytest.raises(ConfigError) as info:
        Ledger.open(state)
    assert info.value.key == "paths.state"
    assert str(state) in info.value.message and "cannot be used" in info.value.message


def test_stale_temp_files_in_the_state_folder_are_swept(tmp_path: Path) -> None:
    """At open (under the lock, every temp is a crash's) all atomic-write temp files go;
    at compaction, while daemon.json may be mid-write, only those older than an hour."""
    from seedance_watch.files import fsutil

    tmp_path.joinpath("state").mkdir()
    state = tmp_path / "state"
    crashed = fsutil.temp_path(state / "daemon.json")
    crashed.write_text("{")
    with Ledger.open(state, compact_threshold=1000) as ledger:
        assert not crashed.exists()
        fresh, old = fsutil.temp_path(state / "daemon.json"), fsutil.temp_path(state / "x.json")
        fresh.write_text("{")
        old.write_text("{")
        os.utime(old, (1_600_000_000, 1_600_000_000))
        ledger.put(make_job(1))
        ledger.compact(wait=True)
        assert fresh.exists() and not old.exists()


def test_a_failing_disk_under_the_state_folder_is_a_durability_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO/ENOSPC while making the folder durable is not a config mistake: DurabilityError."""
    from seedance_watch.files import fsutil

    def fail(_path: Path) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(fsutil, "fsync_dir", fail)
    with pytest.raises(DurabilityError, match="cannot be prepared"):
        Ledger.open(tmp_path / "state")


# --- the reader and the factory ----------------------------------------------------------


def test_the_reader_of_a_folder_without_a_ledger_says_there_is_none(tmp_path: Path) -> None:
    """JsonlReader on a missing or empty folder: exists() False and an empty store,
    nothing created; once a daemon opened the folder (even with no job), it exists."""
    from seedance_watch.ledger.jsonl import JsonlReader

    for state in (tmp_path / "missing", tmp_path / "empty"):
        if state.name == "empty":
            state.mkdir()
        reader = JsonlReader(state)
        assert not reader.exists() and reader.where == str(state)
        assert reader.snapshot() == [] and reader.holder() is None
        assert reader.daemon_record() is None and set(reader.counts().values()) == {0}
    assert not (tmp_path / "missing").exists() and list((tmp_path / "empty").iterdir()) == []
    with Ledger.open(tmp_path / "empty"):
        assert JsonlReader(tmp_path / "empty").exists()
    assert JsonlReader(tmp_path / "empty").exists()


def test_the_reader_refuses_a_damaged_ledger_as_recovery_does(tmp_path: Path) -> None:
    """A damaged record before the last one: the reader raises LedgerCorrupt naming it."""
    from seedance_watch.ledger.jsonl import JsonlReader

    fill(tmp_path, [make_job(1), make_job(2)])
    path = segment(tmp_path, 1)
    data = bytearray(path.read_bytes())
    data[30] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(LedgerCorrupt, match=r"line 1"):
        JsonlReader(tmp_path).snapshot()


def test_the_config_opens_the_json_lines_store_in_paths_state(tmp_path: Path) -> None:
    """open_store/open_reader pick the backend from the config: today the JSON-lines
    ledger in paths.state, its reader working while the store is held."""
    from seedance_watch.config import Config, PathsConfig
    from seedance_watch.ledger import open_reader, open_store
    from seedance_watch.ledger.jsonl import JsonlReader

    config = Config.model_validate(
        {"paths": PathsConfig(state=tmp_path / "state"), "storage": {"bucket": "b"}}
    )
    store = open_store(config)
    try:
        assert isinstance(store, Ledger)
        store.put(make_job(1))
        reader = open_reader(config)
        assert isinstance(reader, JsonlReader) and reader.where == str(tmp_path / "state")
        assert reader.snapshot() == [make_job(1)] and reader.holder() is not None
    finally:
        store.close()
