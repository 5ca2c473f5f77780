"""Power loss, not only kill -9: the crash-state explorer (``tests/crashfs``).

The first tests pin the persistence model on hand-made operation sequences.  The
others record the real daemon doing two jobs and explore every cut point of it:
the explorer must find defect 5 of the hardening issue (``move_file`` unlinks the
source before fsyncing the destination folder) in a copy of that order, must find
nothing when ``move_file`` keeps the safe order, and on the real code finds
nothing (defects 5 and 6 are fixed: before, these two tests failed with input_lost
and task_id_lost), also when one of the jobs is a first-and-last-frame drop.
``bench/crash_states.py`` runs the same explorer wide.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from seedance_watch.files import fsutil
from seedance_watch.simulator import Simulator
from seedance_watch.testing.s3emulator import S3Emulator

from .crashfs.checks import check_drops_together
from .crashfs.explorer import Report, explore, lost_link_kept_unlink
from .crashfs.recorder import FILE, DirOp, Recorder, Recording
from .crashfs.scenario import Workload, record_jobs, simulator_config
from .crashfs.states import CrashModel, Node
from .helpers import BUCKET, sha256

pytestmark = [pytest.mark.timeout(120), pytest.mark.sim(simulator_config())]

# The quick version: every cut point, up to CAP states each, RECOVERIES daemon runs.
CAP, SEED, RECOVERIES = 12, 1, 4


def old_move_file(src: Path, dst: Path, *, expect: object = None) -> None:
    """``move_file`` as it was before defect 5's fix (same-device path): unlink before
    fsync(dst dir).  (``expect``, the identity check, is not on trial here.)"""
    os.lstat(src)
    fsutil.make_dirs(dst.parent)
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    fsutil._link_no_clobber(src, dst)
    if os.path.lexists(src) and fsutil.same_entry(src, dst):
        src.unlink()
    fsutil.fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsutil.fsync_dir(src.parent)


def safe_move_file(src: Path, dst: Path, *, expect: object = None) -> None:
    """The order defect 5 asks for: the new name durable before the old one goes."""
    os.lstat(src)
    fsutil.make_dirs(dst.parent)
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    fsutil._link_no_clobber(src, dst)
    fsutil.fsync_dir(dst.parent)
    if os.path.lexists(src) and fsutil.same_entry(src, dst):
        src.unlink()
    fsutil.fsync_dir(src.parent)


def run_explorer(
    tmp_path: Path,
    s3: S3Emulator,
    sim: Simulator,
    *,
    move_file: Callable[[Path, Path], None] | None = None,
    fresh_state: bool = False,
    compact_every: int | None = None,
    frames: bool = False,
) -> tuple[Workload, Report]:
    with pytest.MonkeyPatch.context() as mp:
        if move_file is not None:
            mp.setattr(fsutil, "move_file", move_file)
        workload = record_jobs(
            tmp_path / "recorded",
            s3,
            sim,
            bucket=BUCKET,
            pairs=2,
            fresh_state=fresh_state,
            compact_every=compact_every,
            frames=frames,
        )
        assert workload.result.exit_code == 0, "the recorded run itself must succeed"
        scratch = tmp_path / "scratch"
        scratch.mkdir()
        report = explore(workload, sim, scratch, cap=CAP, seed=SEED, recoveries=RECOVERIES)
    print(report.summary())
    assert not report.model_errors, report.model_errors
    return workload, report


# --- the persistence model, on hand-made sequences ------------------------------------


def record(tmp_path: Path, steps: Callable[[Path], None]) -> Recording:
    root = tmp_path / "tree"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "old").write_bytes(b"durable")
    with Recorder(root) as recorder:
        steps(root)
    return recorder.recording


def all_states(recording: Recording, cut: int | None = None) -> list[dict[str, bytes | None]]:
    """Every state (cap high enough for all) at ``cut`` (default: the end), as path -> bytes."""
    model = CrashModel(recording)
    cut = model.cuts - 1 if cut is None else cut
    out = []
    for choice in model.states_at(cut, cap=10_000, seed=0):
        state = model.build(choice)
        out.append({p: n.content if n.kind == "file" else None for p, n in state.nodes.items()})
    return out


def test_an_unsynced_new_name_may_vanish_and_a_synced_one_stays(tmp_path: Path) -> None:
    """A created file is in some crash states and not in others until its folder is
    fsynced; after that, every state has it (the file's own fsync is not enough)."""

    def steps(root: Path) -> None:
        fsutil.atomic_write_bytes(root / "a" / "new", b"payload")

    recording = record(tmp_path, steps)
    assert not recording.unmodelled
    renames = [op for op in recording.ops if isinstance(op, DirOp) and op.kind == "rename"]
    assert len(renames) == 1
    before_dir_fsync = all_states(recording, cut=renames[0].index + 1)
    assert {s.get("a/new") for s in before_dir_fsync} == {None, b"payload"}
    assert "a/new" not in min(before_dir_fsync, key=len)
    assert all(s.get("a/new") == b"payload" for s in all_states(recording))


def test_unsynced_data_persists_as_a_prefix_possibly_torn_or_zeroed(tmp_path: Path) -> None:
    """Appends after the last fsync persist as a prefix; the next one may be half
    there or a hole of zeros; everything before the fsync is kept."""

    def steps(root: Path) -> None:
        fd = os.open(root / "a" / "old", os.O_WRONLY | os.O_APPEND)
        os.write(fd, b"-one")
        os.fsync(fd)
        os.write(fd, b"-two")
        os.write(fd, b"-six")
        os.close(fd)

    contents = {s["a/old"] for s in all_states(record(tmp_path, steps))}
    assert contents == {
        b"durable-one",
        b"durable-one-t",
        b"durable-one\0\0\0\0",
        b"durable-one-two",
        b"durable-one-two-s",
        b"durable-one-two\0\0\0\0",
        b"durable-one-two-six",
    }


def test_a_rename_across_folders_is_atomic(tmp_path: Path) -> None:
    """An unsynced rename is kept or undone whole: the file is in exactly one folder."""

    def steps(root: Path) -> None:
        (root / "a" / "old").rename(root / "b" / "moved")

    states = all_states(record(tmp_path, steps))
    assert {("a/old" in s, "b/moved" in s) for s in states} == {(True, False), (False, True)}


def test_an_unlink_can_outlive_a_link_in_another_folder(tmp_path: Path) -> None:
    """The heart of defect 5: link into b/, unlink from a/, no fsync yet: a state
    with the file in neither folder is legal."""

    def steps(root: Path) -> None:
        os.link(root / "a" / "old", root / "b" / "old")
        (root / "a" / "old").unlink()

    states = all_states(record(tmp_path, steps))
    assert any("a/old" not in s and "b/old" not in s for s in states)


def test_a_drop_split_apart_after_recovery_is_reported() -> None:
    """``drop_split``: a frames drop with one file in failed/, or with another suffix
    than the others, is a violation; the three together with one suffix are not."""
    inputs = {"inbox/a.jpg": b"first", "inbox/a-end.png": b"last", "inbox/a.yaml": b"side"}
    drop = tuple(inputs)

    def found(*places: str) -> list[str]:
        pairs = enumerate(zip(places, inputs.values(), strict=True))
        nodes = {path: Node(FILE, ino, data) for ino, (path, data) in pairs}
        return [v.kind for v in check_drops_together(nodes, inputs, [drop])]

    assert found("done/a.jpg", "done/a-end.png", "done/a.yaml") == []
    assert found("failed/a-2.jpg", "failed/a-end-2.png", "failed/a-2.yaml") == []
    assert found("done/a.jpg", "failed/a-end.png", "done/a.yaml") == ["drop_split"]
    assert found("done/a-2.jpg", "done/a-end.png", "done/a-2.yaml") == ["drop_split"]
    assert found("done/a.jpg", "done/sub/a-end.png", "done/a.yaml") == ["drop_split"]


# --- the daemon -----------------------------------------------------------------------


def test_the_recorder_sees_every_kind_of_change_the_daemon_makes(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """Two jobs recorded: creates, writes, file and folder fsyncs, renames, links,
    unlinks and polls are in the list, nothing escaped the model, and the state
    "everything kept" at the end is the tree on disk, byte for byte."""
    workload, report = run_explorer(tmp_path, s3_server, sim, move_file=safe_move_file)
    kinds = {type(op).__name__ + ":" + op.kind for op in workload.recording.ops}
    assert {
        "DirOp:create",
        "DirOp:rename",
        "DirOp:link",
        "DirOp:unlink",
        "DataOp:write",
        "SyncOp:fsync",
        "Marker:poll",
    } <= kinds
    model = CrashModel(workload.recording)
    folder_syncs = [
        op
        for op in workload.recording.ops
        if op.kind == "fsync" and workload.recording.inodes[getattr(op, "ino", -1)].kind == "dir"
    ]
    assert folder_syncs
    assert report.cuts == model.cuts == len(workload.recording.ops) + 1
    assert report.distinct > report.cuts  # more than one state per cut point, on average
    assert report.recoveries == RECOVERIES


def test_the_explorer_finds_defect_5_in_the_old_move_order(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """With ``move_file`` unlinking the source before fsyncing done/ (defect 5), some
    power cut leaves an input in neither the inbox nor done/: the explorer reports
    it, with the lost ``link`` into done/ and the kept ``unlink`` from the inbox."""
    workload, report = run_explorer(tmp_path, s3_server, sim, move_file=old_move_file)
    assert "input_lost" in report.kinds()
    lost = [f for f in report.findings if f.violation.kind == "input_lost"]
    assert any(lost_link_kept_unlink(f, workload.recording.ops) for f in lost)
    assert all(f.signature and f.signature.startswith("defect 5") for f in lost)


def test_no_violation_when_move_file_syncs_the_destination_first(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """The same exploration with ``move_file`` in the safe order finds nothing: the
    explorer does not cry wolf, and the fix of defect 5 is enough for this workload."""
    _, report = run_explorer(tmp_path, s3_server, sim, move_file=safe_move_file)
    assert report.counts == {}, report.summary()


def test_no_violation_across_ledger_compactions(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """With the ledger rotating and snapshotting every few lines (segment creation,
    snapshot temp file, rename, deletion of covered files), no crash state loses a
    record or makes the ledger unreadable."""
    workload, report = run_explorer(
        tmp_path, s3_server, sim, move_file=safe_move_file, compact_every=3
    )
    snapshots = [
        op
        for op in workload.recording.ops
        if isinstance(op, DirOp) and op.kind == "rename" and "snapshot-" in op.path
    ]
    assert snapshots, "the workload must compact"
    assert report.counts == {}, report.summary()


def test_no_violation_on_the_real_code(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """The real daemon, folders made beforehand: no crash state breaks an invariant."""
    _, report = run_explorer(tmp_path, s3_server, sim)
    assert report.counts == {}, report.summary()


def test_no_violation_when_the_daemon_creates_its_state_folder(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """First start, no ``state/`` yet: the ledger's folder survives any power cut
    that its records survive.  (``move_file`` in the safe order, so that only the
    folder creation is on trial here.)"""
    _, report = run_explorer(tmp_path, s3_server, sim, move_file=safe_move_file, fresh_state=True)
    assert report.counts == {}, report.summary()


def test_no_violation_on_a_frames_drop(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """The real daemon with a first-and-last-frame drop (image, end image, sidecar)
    beside an image drop: no power cut loses one of its three files, and every
    recovery moves the three together, with one suffix (docs/design.md, "The sidecar")."""
    workload, report = run_explorer(tmp_path, s3_server, sim, frames=True)
    drop = ("inbox/scene0.jpg", "inbox/scene0-end.png", "inbox/scene0.yaml")
    assert workload.drops[0] == drop
    # The recorded run (the first submits; recoveries may submit again) sent both frames.
    first = next(r for r in sim.submits if r.kind == "frames")
    assert first.fetched_sha256s == tuple(sha256(workload.inputs[p]) for p in drop[:2])
    moved = {
        op.path for op in workload.recording.ops if isinstance(op, DirOp) and op.kind == "link"
    }
    assert {"done/scene0.jpg", "done/scene0-end.png", "done/scene0.yaml"} <= moved, moved
    assert report.recoveries == RECOVERIES
    assert report.counts == {}, report.summary()
