"""Carrying out job file plans on real files, including re-runs after a crash at every step."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from seedance_watch.core.timestamps import iso_utc
from seedance_watch.files import fsutil, outbox
from seedance_watch.files.outbox import OutputConflict, StagingMissing

from .helpers import sha256

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 400
VIDEO_SHA = sha256(VIDEO)
JOB = "0123456789abcdef"


def listing(root: Path) -> dict[str, bytes | str]:
    """Every file under ``root``: its bytes, or ``-> target`` for a symlink."""
    out: dict[str, bytes | str] = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            rel = str(path.relative_to(root))
            out[rel] = f"-> {path.readlink()}" if path.is_symlink() else path.read_bytes()
    return out


def metadata(job_id: str = JOB, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "job_id": job_id,
        "task_id": "cgt-20250910201045-sqz6f",
        "prompt": "Des nuages qui passent",
        "source": "sub dir/plage été.jpg",
        "video_sha256": VIDEO_SHA,
        "video_bytes": len(VIDEO),
        "submitted_at": iso_utc(1757506245),
    }
    meta.update(extra)
    return meta


class Crash(BaseException):
    """Stands for kill -9: raised at one file-system call, and at every call after it."""


class CrashInjector:
    """``arm(k)``: the k-th durable-state syscall (and all later ones) raise Crash.

    It wraps whatever ``os`` holds when armed, so other seams (EXDEV) stay in place.
    """

    NAMES = ("fsync", "link", "unlink", "rename", "replace", "mkdir", "symlink", "write")

    def __init__(self) -> None:
        self._patch = pytest.MonkeyPatch()
        self._left = -1

    def arm(self, k: int) -> None:
        self._left = k
        for name in self.NAMES:
            self._patch.setattr(os, name, self._wrap(getattr(os, name)))

    def disarm(self) -> None:
        self._patch.undo()

    def _wrap(self, func: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if self._left == 0:
                raise Crash
            self._left -= 1
            return func(*args, **kwargs)

        return call


@pytest.fixture
def crash() -> Iterator[CrashInjector]:
    injector = CrashInjector()
    yield injector
    injector.disarm()


def run_with_crashes(
    crash: CrashInjector,
    setup: Callable[[], None],
    action: Callable[[], None],
    restart: Callable[[], object],
    end_state: Callable[[], Any],
    invariant: Callable[[], None] = lambda: None,
) -> int:
    """For k = 0, 1, ...: set up, crash ``action`` at step k, restart, re-run; same end state.

    ``invariant`` is checked on the disk as the crash left it, before the restart.

    Returns how many crash points were exercised (the run without a crash ends the loop).
    """
    setup()
    action()
    expected = end_state()
    for k in range(200):
        setup()
        crash.arm(k)
        try:
            action()
        except Crash:
            crash.disarm()
            invariant()
            restart()
            action()
            assert end_state() == expected, f"crash at step {k}"
            continue
        crash.disarm()
        assert end_state() == expected
        return k
    pytest.fail("the action never completed")


# --- names ------------------------------------------------------------------------------


def test_staging_path_is_hidden_beside_the_output(tmp_path: Path) -> None:
    """Staging lives in the output's folder under a hidden, ignorable name."""
    assert outbox.staging_path(tmp_path, "sub dir", JOB) == (
        tmp_path / "sub dir" / f".seedance-{JOB}.mp4.part"
    )
    assert outbox.staging_path(tmp_path, "", JOB) == tmp_path / f".seedance-{JOB}.mp4.part"
    with pytest.raises(ValueError):
        outbox.staging_path(tmp_path, "../escape", JOB)


def test_plan_output_never_reuses_an_existing_or_planned_name(tmp_path: Path) -> None:
    """beach.mp4 if free; beach-2.mp4 when beach.mp4 or beach.json exists or is planned."""
    sub = tmp_path / "sub"
    sub.mkdir()
    assert outbox.plan_output(tmp_path, "sub", "beach") == "sub/beach.mp4"
    (sub / "beach.mp4").write_bytes(b"someone else's video")
    assert outbox.plan_output(tmp_path, "sub", "beach") == "sub/beach-2.mp4"
    (sub / "beach-2.json").write_text("{}")
    assert outbox.plan_output(tmp_path, "sub", "beach") == "sub/beach-3.mp4"
    taken = {"sub/beach-3.mp4"}
    assert outbox.plan_output(tmp_path, "sub", "beach", taken=taken) == "sub/beach-4.mp4"
    assert outbox.plan_output(tmp_path, "", "plage été") == "plage été.mp4"


def test_plan_moves_shares_one_free_stem(tmp_path: Path) -> None:
    """Image and sidecar get one common stem, free for each of their suffixes."""
    done = tmp_path / "done"
    (done / "sub").mkdir(parents=True)
    (done / "sub" / "beach.yaml").write_text("prompt: x\n")
    files = ["sub/beach.jpg", "sub/beach.yaml"]
    assert outbox.plan_moves(tmp_path / "inbox", "sub", files, "done", done) == (
        ("sub/beach.jpg", "done/sub/beach-2.jpg"),
        ("sub/beach.yaml", "done/sub/beach-2.yaml"),
    )
    taken = {"done/sub/beach-2.jpg"}
    assert outbox.plan_moves(tmp_path / "inbox", "sub", files, "done", done, taken=taken) == (
        ("sub/beach.jpg", "done/sub/beach-3.jpg"),
        ("sub/beach.yaml", "done/sub/beach-3.yaml"),
    )


def test_plan_moves_to_failed_keeps_the_report_name_free(tmp_path: Path) -> None:
    """For failed/, NAME.error.json must be free too; an orphan moves alone."""
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "plage été.error.json").write_text("{}")
    moves = outbox.plan_moves(tmp_path, "", ["plage été.PNG"], "failed", failed)
    assert moves == (("plage été.PNG", "failed/plage été-2.PNG"),)
    assert outbox.error_report_rel(moves) == "plage été-2.error.json"
    done_moves = outbox.plan_moves(tmp_path, "", ["plage été.PNG"], "done", failed)
    assert done_moves == (("plage été.PNG", "done/plage été.PNG"),)


def test_plan_moves_rejects_files_of_another_folder(tmp_path: Path) -> None:
    """Files from another folder, or one file twice, are a bug, not a plan."""
    with pytest.raises(ValueError):
        outbox.plan_moves(tmp_path, "sub", ["other/a.jpg"], "done", tmp_path)
    with pytest.raises(ValueError):
        outbox.plan_moves(tmp_path, "sub", ["sub/a.jpg", "other/a-end.png"], "done", tmp_path)
    with pytest.raises(ValueError):
        outbox.plan_moves(tmp_path, "sub", ["sub/a.jpg", "sub/a.jpg"], "done", tmp_path)


FRAMES = ["sub/beach.jpg", "sub/beach-end.png", "sub/beach.yaml"]


def test_plan_moves_keeps_the_names_of_a_frames_drop_when_free(tmp_path: Path) -> None:
    """Three files of two stems keep their names when none is taken (nor the report)."""
    (tmp_path / "failed" / "sub").mkdir(parents=True)
    (tmp_path / "failed" / "sub" / "beach-end.error.json").write_text("{}")  # not the lead's
    for kind in ("done", "failed"):
        moves = outbox.plan_moves(tmp_path, "sub", FRAMES, kind, tmp_path / kind)
        assert moves == tuple((f, f"{kind}/{f}") for f in FRAMES)
    assert outbox.error_report_rel(moves) == "sub/beach.error.json"


def test_plan_moves_gives_a_frames_drop_one_suffix_when_the_end_image_collides(
    tmp_path: Path,
) -> None:
    """An end image taken in done/ moves every file of the drop to the same -N."""
    done = tmp_path / "done"
    (done / "sub").mkdir(parents=True)
    (done / "sub" / "beach-end.png").write_bytes(b"another drop's")
    (done / "sub" / "beach-end-2.png").symlink_to("nowhere")  # dangling: taken all the same
    assert outbox.plan_moves(tmp_path, "sub", FRAMES, "done", done) == (
        ("sub/beach.jpg", "done/sub/beach-3.jpg"),
        ("sub/beach-end.png", "done/sub/beach-end-3.png"),
        ("sub/beach.yaml", "done/sub/beach-3.yaml"),
    )


def test_plan_moves_to_failed_frees_the_lead_s_report_for_a_frames_drop(tmp_path: Path) -> None:
    """Only the report beach.error.json is taken: all three files and the report take -2."""
    failed = tmp_path / "failed"
    (failed / "sub").mkdir(parents=True)
    (failed / "sub" / "beach.error.json").write_text("{}")
    moves = outbox.plan_moves(tmp_path, "sub", FRAMES, "failed", failed)
    assert moves == (
        ("sub/beach.jpg", "failed/sub/beach-2.jpg"),
        ("sub/beach-end.png", "failed/sub/beach-end-2.png"),
        ("sub/beach.yaml", "failed/sub/beach-2.yaml"),
    )
    assert outbox.error_report_rel(moves) == "sub/beach-2.error.json"
    # The same name in done/ does not matter for failed/, and a report is no file of done/.
    assert outbox.plan_moves(tmp_path, "sub", FRAMES, "done", failed)[0][1] == "done/sub/beach.jpg"


def test_plan_moves_of_a_frames_drop_skips_names_another_job_planned(tmp_path: Path) -> None:
    """A name in another job's plan (``taken``) counts like a file on disk, for any file
    of the drop and for the report."""
    failed = tmp_path / "failed"
    for taken, n in (
        ({"failed/sub/beach-end.png"}, 2),
        ({"failed/sub/beach.error.json", "failed/sub/beach-2.yaml"}, 3),
        ({"done/sub/beach.jpg", "failed/beach.jpg"}, 1),  # another folder or root: free
    ):
        moves = outbox.plan_moves(tmp_path, "sub", FRAMES, "failed", failed, taken=taken)
        suffix = "" if n == 1 else f"-{n}"
        assert moves == (
            ("sub/beach.jpg", f"failed/sub/beach{suffix}.jpg"),
            ("sub/beach-end.png", f"failed/sub/beach-end{suffix}.png"),
            ("sub/beach.yaml", f"failed/sub/beach{suffix}.yaml"),
        ), taken
        assert outbox.error_report_rel(moves) == f"sub/beach{suffix}.error.json"


def test_plan_moves_keeps_a_last_frame_of_the_image_s_stem_apart(tmp_path: Path) -> None:
    """beach.jpg ending on beach.png: one stem, two files, both moved under one suffix."""
    done = tmp_path / "done"
    done.mkdir()
    (done / "beach.png").write_bytes(b"x")
    files = ["beach.jpg", "beach.png", "beach.yaml"]
    assert outbox.plan_moves(tmp_path, "", files, "done", done) == (
        ("beach.jpg", "done/beach-2.jpg"),
        ("beach.png", "done/beach-2.png"),
        ("beach.yaml", "done/beach-2.yaml"),
    )


def test_plan_moves_of_a_text_drop_moves_the_sidecar_beside_its_report(tmp_path: Path) -> None:
    """A text drop is its sidecar alone; in failed/ the report is named after it."""
    failed = tmp_path / "failed"
    (failed / "poems").mkdir(parents=True)
    moves = outbox.plan_moves(tmp_path, "poems", ["poems/poem.yaml"], "failed", failed)
    assert moves == (("poems/poem.yaml", "failed/poems/poem.yaml"),)
    assert outbox.error_report_rel(moves) == "poems/poem.error.json"
    (failed / "poems" / "poem.error.json").write_text("{}")
    moves = outbox.plan_moves(tmp_path, "poems", ["poems/poem.yaml"], "failed", failed)
    assert moves == (("poems/poem.yaml", "failed/poems/poem-2.yaml"),)
    assert outbox.error_report_rel(moves) == "poems/poem-2.error.json"
    done = outbox.plan_moves(tmp_path, "poems", ["poems/poem.yaml"], "done", tmp_path / "done")
    assert done == (("poems/poem.yaml", "done/poems/poem.yaml"),)


def test_plan_moves_tells_names_apart_by_case(tmp_path: Path) -> None:
    """beach.JPG in done/ does not take beach.jpg (names are case-sensitive)."""
    done = tmp_path / "done"
    done.mkdir()
    (done / "beach.JPG").write_bytes(b"x")
    if (done / "beach.jpg").exists():
        pytest.skip("a case-insensitive file system")
    moves = outbox.plan_moves(tmp_path, "", ["beach.jpg", "beach.yaml"], "done", done)
    assert moves == (("beach.jpg", "done/beach.jpg"), ("beach.yaml", "done/beach.yaml"))


def test_error_report_rel_follows_the_lead() -> None:
    """The report is named after the destination of the lead, the first file: the image,
    not the end image; a lone sidecar's (text drop, orphan)."""
    moves = (("s/b.yaml", "failed/s/b-2.yaml"), ("s/b.jpg", "failed/s/b-2.jpg"))
    assert outbox.error_report_rel(moves) == "s/b-2.error.json"
    assert outbox.error_report_rel((("b.yml", "failed/b-3.yml"),)) == "b-3.error.json"
    frames = (
        ("s/b.jpg", "failed/s/b-2.jpg"),
        ("s/a-end.png", "failed/s/a-end-2.png"),
        ("s/b.yaml", "failed/s/b-2.yaml"),
    )
    assert outbox.error_report_rel(frames) == "s/b-2.error.json"
    with pytest.raises(ValueError):
        outbox.error_report_rel(())


def test_sha256_file(tmp_path: Path) -> None:
    """Hash and size of a file's bytes."""
    (tmp_path / "v.mp4").write_bytes(VIDEO)
    assert outbox.sha256_file(tmp_path / "v.mp4") == (VIDEO_SHA, len(VIDEO))


# --- place_output -----------------------------------------------------------------------


def stage(root: Path, sub: str = "sub dir", data: bytes = VIDEO) -> Path:
    staging = outbox.staging_path(root, sub, JOB)
    fsutil.make_dirs(staging.parent)
    staging.write_bytes(data)
    return staging


def test_place_output_places_video_and_json(tmp_path: Path) -> None:
    """The staged video appears under its final name beside its JSON; staging is gone."""
    staging = stage(tmp_path)
    rel = "sub dir/plage été.mp4"
    outbox.place_output(
        outbox=tmp_path,
        staging=staging,
        output_rel=rel,
        video_sha256=VIDEO_SHA,
        metadata=metadata(),
    )
    files = listing(tmp_path)
    assert files.keys() == {rel, "sub dir/plage été.json"}
    assert files[rel] == VIDEO
    assert json.loads(files["sub dir/plage été.json"]) == metadata()


def test_place_output_survives_a_crash_at_every_step(tmp_path: Path, crash: CrashInjector) -> None:
    """Killed anywhere and re-run after a restart: one mp4 with the hash, one JSON, no staging."""
    root = tmp_path / "outbox"
    rel = "sub dir/plage été.mp4"

    def setup() -> None:
        if root.exists():
            for path in sorted(root.rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
        stage(root)

    def action() -> None:
        outbox.place_output(
            outbox=root,
            staging=outbox.staging_path(root, "sub dir", JOB),
            output_rel=rel,
            video_sha256=VIDEO_SHA,
            metadata=metadata(),
        )

    def invariant() -> None:
        files = listing(root)
        if rel in files:  # a final mp4 is whole, and its JSON is already there
            assert files[rel] == VIDEO
            assert json.loads(files["sub dir/plage été.json"]) == metadata()

    steps = run_with_crashes(
        crash,
        setup,
        action,
        restart=lambda: outbox.cleanup_staging(root, {JOB}),
        end_state=lambda: listing(root),
        invariant=invariant,
    )
    assert steps >= 5
    assert listing(root).keys() == {rel, "sub dir/plage été.json"}


def test_place_output_rerun_after_link_before_unlink(tmp_path: Path) -> None:
    """Staging still hard-linked to the placed mp4 (crash mid-move) is cleaned up on re-run."""
    staging = stage(tmp_path)
    final = tmp_path / "sub dir" / "v.mp4"
    os.link(staging, final)
    outbox.place_output(
        outbox=tmp_path,
        staging=staging,
        output_rel="sub dir/v.mp4",
        video_sha256=VIDEO_SHA,
        metadata=metadata(),
    )
    assert listing(tmp_path).keys() == {"sub dir/v.mp4", "sub dir/v.json"}
    assert final.read_bytes() == VIDEO


def test_place_output_refuses_to_clobber_another_video(tmp_path: Path) -> None:
    """An existing mp4 with other bytes raises OutputConflict and stays as it was."""
    staging = stage(tmp_path)
    (tmp_path / "sub dir" / "beach.mp4").write_bytes(b"a user's own clip")
    with pytest.raises(OutputConflict) as info:
        outbox.place_output(
            outbox=tmp_path,
            staging=staging,
            output_rel="sub dir/beach.mp4",
            video_sha256=VIDEO_SHA,
            metadata=metadata(),
        )
    assert info.value.path == "sub dir/beach.mp4"
    assert (tmp_path / "sub dir" / "beach.mp4").read_bytes() == b"a user's own clip"
    assert staging.read_bytes() == VIDEO
    assert outbox.plan_output(tmp_path, "sub dir", "beach") == "sub dir/beach-2.mp4"


def test_place_output_same_size_other_bytes_is_a_conflict(tmp_path: Path) -> None:
    """Equal size is not enough: the hash decides."""
    staging = stage(tmp_path)
    other = bytes(reversed(VIDEO))
    (tmp_path / "sub dir" / "beach.mp4").write_bytes(other)
    with pytest.raises(OutputConflict):
        outbox.place_output(
            outbox=tmp_path,
            staging=staging,
            output_rel="sub dir/beach.mp4",
            video_sha256=VIDEO_SHA,
            metadata=metadata(),
        )
    assert (tmp_path / "sub dir" / "beach.mp4").read_bytes() == other


def test_place_output_without_staging_raises_and_frees_the_name(tmp_path: Path) -> None:
    """No staged video: StagingMissing, and this job's own JSON is removed (another's stays)."""
    sub = tmp_path / "sub dir"
    sub.mkdir()
    fsutil.atomic_write_json(sub / "mine.json", metadata())
    fsutil.atomic_write_json(sub / "theirs.json", metadata(job_id="another"))
    for name in ("mine", "theirs"):
        with pytest.raises(StagingMissing):
            outbox.place_output(
                outbox=tmp_path,
                staging=outbox.staging_path(tmp_path, "sub dir", JOB),
                output_rel=f"sub dir/{name}.mp4",
                video_sha256=VIDEO_SHA,
                metadata=metadata(),
            )
    assert listing(tmp_path).keys() == {"sub dir/theirs.json"}


def test_place_output_corrupt_staging_is_removed(tmp_path: Path) -> None:
    """A staged file with the wrong bytes raises StagingMissing and is deleted."""
    staging = stage(tmp_path, data=VIDEO[:-10])
    with capture_logs() as logs, pytest.raises(StagingMissing):
        outbox.place_output(
            outbox=tmp_path,
            staging=staging,
            output_rel="sub dir/v.mp4",
            video_sha256=VIDEO_SHA,
            metadata=metadata(),
        )
    assert listing(tmp_path) == {}
    assert [e["event"] for e in logs] == ["outbox.staging_missing"]
    assert logs[0]["job_id"] == JOB


def test_place_output_rewrites_a_different_json(tmp_path: Path) -> None:
    """When the mp4 is in place but its JSON differs, the JSON is rewritten to the metadata."""
    sub = tmp_path / "sub dir"
    sub.mkdir()
    (sub / "v.mp4").write_bytes(VIDEO)
    (sub / "v.json").write_text('{"job_id": "stale"}')
    outbox.place_output(
        outbox=tmp_path,
        staging=outbox.staging_path(tmp_path, "sub dir", JOB),
        output_rel="sub dir/v.mp4",
        video_sha256=VIDEO_SHA,
        metadata=metadata(duplicate_of="fedcba9876543210"),
    )
    assert json.loads((sub / "v.json").read_bytes())["duplicate_of"] == "fedcba9876543210"


# --- duplicates -------------------------------------------------------------------------


def test_copy_for_duplicate_copies_and_hashes(tmp_path: Path) -> None:
    """The earlier video lands in staging; its hash and size are returned."""
    earlier = tmp_path / "beach.mp4"
    earlier.write_bytes(VIDEO)
    staging = outbox.staging_path(tmp_path, "new sub", JOB)
    assert outbox.copy_for_duplicate(earlier, staging) == (VIDEO_SHA, len(VIDEO))
    assert staging.read_bytes() == VIDEO


def test_copy_for_duplicate_never_writes_through_an_old_staging_link(tmp_path: Path) -> None:
    """A leftover staging name hard-linked to a placed output is replaced, not written into."""
    placed = tmp_path / "placed.mp4"
    placed.write_bytes(b"placed video")
    staging = outbox.staging_path(tmp_path, "", JOB)
    os.link(placed, staging)
    earlier = tmp_path / "earlier.mp4"
    earlier.write_bytes(VIDEO)
    outbox.copy_for_duplicate(earlier, staging)
    assert placed.read_bytes() == b"placed video"
    assert staging.read_bytes() == VIDEO


def test_copy_for_duplicate_failure_leaves_no_staging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC mid-copy re-raises and removes the partial staging file."""
    earlier = tmp_path / "earlier.mp4"
    earlier.write_bytes(VIDEO * 40)
    staging = outbox.staging_path(tmp_path, "sub", JOB)
    real_write = os.write
    calls = {"n": 0}

    def write(fd: int, buf: Any) -> int:
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, buf)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(OSError):
        outbox.copy_for_duplicate(earlier, staging)
    monkeypatch.undo()
    assert calls["n"] == 3
    assert list(staging.parent.iterdir()) == []


# --- input moves and reports ------------------------------------------------------------


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    out = {kind: tmp_path / kind for kind in ("inbox", "done", "failed")}
    for path in out.values():
        path.mkdir()
    return out


def drop(roots: dict[str, Path], sub: str = "sub dir", stem: str = "plage été") -> list[str]:
    folder = roots["inbox"] / sub
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.jpg").write_bytes(b"\xff\xd8" + os.urandom(200_000))
    (folder / f"{stem}.yaml").write_text('prompt: "calme"\n', encoding="utf-8")
    return [f"{sub}/{stem}.jpg", f"{sub}/{stem}.yaml"]


def test_finish_moves_moves_inputs_and_is_idempotent(roots: dict[str, Path]) -> None:
    """Inputs arrive under their planned names with their bytes; a re-run changes nothing."""
    files = drop(roots)
    before = listing(roots["inbox"])
    moves = outbox.plan_moves(roots["inbox"], "sub dir", files, "done", roots["done"])
    outbox.finish_moves(roots=roots, moves=moves, job_id=JOB)
    after = listing(roots["done"])
    assert after == {f: before[f] for f in files}
    outbox.finish_moves(roots=roots, moves=moves, job_id=JOB)
    assert listing(roots["done"]) == after
    assert listing(roots["inbox"]) == {}


@pytest.mark.parametrize("cross_fs", [False, True])
def test_finish_moves_survives_a_crash_at_every_step(
    roots: dict[str, Path],
    crash: CrashInjector,
    monkeypatch: pytest.MonkeyPatch,
    cross_fs: bool,
) -> None:
    """Killed anywhere (also mid cross-FS copy), the re-run ends with every input in done/."""
    image = os.urandom(100_000)
    moves = (("s/b.jpg", "done/s/b.jpg"), ("s/b.yaml", "done/s/b.yaml"))
    if cross_fs:
        real_link = os.link

        def link(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if Path(src).is_relative_to(roots["inbox"]):
                raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
            real_link(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "link", link)

    def setup() -> None:
        for kind in ("inbox", "done"):
            for path in sorted(roots[kind].rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
        (roots["inbox"] / "s").mkdir()
        (roots["inbox"] / "s" / "b.jpg").write_bytes(image)
        (roots["inbox"] / "s" / "b.yaml").write_bytes(b"prompt: x\n")

    def both() -> dict[str, Any]:
        return {"inbox": listing(roots["inbox"]), "done": listing(roots["done"])}

    def no_input_lost() -> None:
        inbox, done = listing(roots["inbox"]), listing(roots["done"])
        for rel, data in (("s/b.jpg", image), ("s/b.yaml", b"prompt: x\n")):
            assert data in (inbox.get(rel), done.get(rel))
            assert done.get(rel, data) == data  # never partial under the final name

    steps = run_with_crashes(
        crash,
        setup,
        action=lambda: outbox.finish_moves(roots=roots, moves=moves),
        restart=lambda: fsutil.remove_stale_temps(roots["done"]),
        end_state=both,
        invariant=no_input_lost,
    )
    assert steps >= (12 if cross_fs else 4)
    assert both() == {"inbox": {}, "done": {"s/b.jpg": image, "s/b.yaml": b"prompt: x\n"}}


def test_finish_moves_input_vanished_logs_and_continues(roots: dict[str, Path]) -> None:
    """A source the user removed is logged as outbox.input_vanished; the rest still moves."""
    files = drop(roots)
    (roots["inbox"] / files[0]).unlink()
    moves = outbox.plan_moves(roots["inbox"], "sub dir", files, "failed", roots["failed"])
    with capture_logs() as logs:
        outbox.finish_moves(roots=roots, moves=moves, job_id=JOB)
    vanished = [e for e in logs if e["event"] == "outbox.input_vanished"]
    assert len(vanished) == 1
    assert vanished[0]["job_id"] == JOB
    assert vanished[0]["source"] == files[0]
    assert listing(roots["failed"]).keys() == {"sub dir/plage été.yaml"}


def test_finish_moves_conflict_leaves_both_files(roots: dict[str, Path]) -> None:
    """A destination that appeared with other bytes is not overwritten: OutputConflict."""
    files = drop(roots)
    moves = outbox.plan_moves(roots["inbox"], "sub dir", files, "done", roots["done"])
    intruder = roots["done"] / "sub dir" / "plage été.jpg"
    intruder.parent.mkdir(parents=True)
    intruder.write_bytes(b"a different image")
    with pytest.raises(OutputConflict) as info:
        outbox.finish_moves(roots=roots, moves=moves)
    assert info.value.path == "done/sub dir/plage été.jpg"
    assert intruder.read_bytes() == b"a different image"
    assert (roots["inbox"] / files[0]).exists()


def test_finish_moves_completes_an_interrupted_copy(roots: dict[str, Path]) -> None:
    """Source and an identical destination (cross-FS crash before unlink): source dropped."""
    files = drop(roots)
    dst = roots["done"] / files[0]
    dst.parent.mkdir(parents=True)
    dst.write_bytes((roots["inbox"] / files[0]).read_bytes())
    moves = ((files[0], f"done/{files[0]}"),)
    with capture_logs() as logs:
        outbox.finish_moves(roots=roots, moves=moves, job_id=JOB)
    assert not (roots["inbox"] / files[0]).exists()
    assert [e["event"] for e in logs] == ["outbox.move_resumed"]


def test_finish_moves_moves_a_symlink_as_a_link(tmp_path: Path, roots: dict[str, Path]) -> None:
    """An unsafe symlink goes to failed/ as a link; the file it points to is untouched."""
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"outside the inbox")
    (roots["inbox"] / "evil.jpg").symlink_to(secret)
    moves = outbox.plan_moves(roots["inbox"], "", ["evil.jpg"], "failed", roots["failed"])
    outbox.finish_moves(roots=roots, moves=moves)
    assert listing(roots["failed"]) == {"evil.jpg": f"-> {secret}"}
    assert secret.read_bytes() == b"outside the inbox"


def test_finish_moves_rejects_escaping_paths(roots: dict[str, Path]) -> None:
    """Ledger paths that leave their root, or unknown destinations, are refused."""
    with pytest.raises(ValueError):
        outbox.finish_moves(roots=roots, moves=(("../x.jpg", "done/x.jpg"),))
    with pytest.raises(ValueError):
        outbox.finish_moves(roots=roots, moves=(("x.jpg", "elsewhere/x.jpg"),))


def test_write_error_report_is_atomic_and_idempotent(roots: dict[str, Path]) -> None:
    """The report is written once as JSON; an identical re-run keeps the same file."""
    report = {"job_id": JOB, "code": "invalid_sidecar", "message": "clé « resolutoin » inconnue"}
    with capture_logs() as logs:
        outbox.write_error_report(
            failed_root=roots["failed"], report_rel="sub dir/b.error.json", report=report
        )
        inode = (roots["failed"] / "sub dir" / "b.error.json").stat().st_ino
        outbox.write_error_report(
            failed_root=roots["failed"], report_rel="sub dir/b.error.json", report=report
        )
    path = roots["failed"] / "sub dir" / "b.error.json"
    assert json.loads(path.read_bytes()) == report
    assert path.stat().st_ino == inode
    assert [e["event"] for e in logs] == ["outbox.error_report_written"]
    assert logs[0]["job_id"] == JOB


# --- start-up sweep ---------------------------------------------------------------------


def test_cleanup_staging_removes_only_dead_jobs_and_temps(tmp_path: Path) -> None:
    """Dead jobs' staging and atomic-write temps go; live staging and user files stay."""
    sub = tmp_path / "sub dir"
    sub.mkdir()
    live = outbox.staging_path(tmp_path, "sub dir", "alive0000000001")
    dead = outbox.staging_path(tmp_path, "", "dead00000000002")
    temp = fsutil.temp_path(sub / "v.json")
    for path in (live, dead, temp):
        path.write_bytes(b"partial")
    keep = {"sub dir/v.mp4": b"video", "notes.part": b"user", ".seedance-x.mp4": b"user"}
    for rel, data in keep.items():
        (tmp_path / rel).write_bytes(data)
    with capture_logs() as logs:
        removed = outbox.cleanup_staging(tmp_path, {"alive0000000001"})
    assert removed == 2
    assert listing(tmp_path).keys() == {*keep, str(live.relative_to(tmp_path))}
    assert {e.get("job_id") for e in logs} == {"dead00000000002", None}
