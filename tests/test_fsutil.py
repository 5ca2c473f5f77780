"""Durable file primitives on real files: atomic writes, no-clobber moves, free names."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from seedance_watch.errors import ConfigError, DurabilityError, InputReplaced
from seedance_watch.files import fsutil


def listing(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root``: file bytes, or ``-> target`` for a symlink."""
    out: dict[str, bytes | str] = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            rel = str(path.relative_to(root))
            out[rel] = f"-> {path.readlink()}" if path.is_symlink() else path.read_bytes()
    return out


def exdev_from(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend ``root`` is another file system: link/rename out of it fail with EXDEV."""
    real_link, real_rename = os.link, os.rename

    def outside(src: Any, dst: Any) -> bool:
        return Path(src).is_relative_to(root) and not Path(dst).is_relative_to(root)

    def link(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if outside(src, dst):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        real_link(src, dst, *args, **kwargs)

    def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if outside(src, dst):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(os, "rename", rename)


# --- atomic writes ----------------------------------------------------------------------


def test_atomic_write_json_format_and_no_temp_left(tmp_path: Path) -> None:
    """JSON is UTF-8, indent 2, non-ASCII kept, newline-terminated; no temp file remains."""
    target = tmp_path / "plage d'été 🌊.json"
    fsutil.atomic_write_json(target, {"prompt": "vagues à l'aube", "n": [1, 2]})
    raw = target.read_bytes()
    assert raw == ('{\n  "prompt": "vagues à l\'aube",\n  "n": [\n    1,\n    2\n  ]\n}\n'.encode())
    assert json.loads(raw) == {"prompt": "vagues à l'aube", "n": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_atomic_write_bytes_replaces_content_and_sets_mode(tmp_path: Path) -> None:
    """An existing file is replaced whole, and the new file gets the requested mode."""
    target = tmp_path / "state.bin"
    target.write_bytes(b"old" * 1000)
    old_umask = os.umask(0o022)
    try:
        fsutil.atomic_write_bytes(target, b"new", mode=0o600)
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]


@pytest.mark.parametrize("existed", [False, True])
def test_atomic_write_enospc_on_fsync_leaves_no_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existed: bool
) -> None:
    """ENOSPC at fsync re-raises; the final name is absent or keeps its old content; no temp."""
    target = tmp_path / "out.json"
    if existed:
        target.write_text('{"old": true}\n')

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError) as info:
        fsutil.atomic_write_json(target, {"new": "x" * 10_000})
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    if existed:
        assert target.read_text() == '{"old": true}\n'
        assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    else:
        assert list(tmp_path.iterdir()) == []


def test_atomic_write_real_write_failure_leaves_no_partial(tmp_path: Path) -> None:
    """A real short write (file-size limit: EFBIG) mid-write leaves no file and no temp."""
    script = textwrap.dedent(
        """
        import errno, resource, sys
        from pathlib import Path
        from seedance_watch.files import fsutil
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        try:
            fsutil.atomic_write_bytes(Path(sys.argv[1]), b"x" * 100_000)
        except OSError as exc:
            sys.exit(0 if exc.errno == errno.EFBIG else 1)
        sys.exit(2)
        """
    )
    target = tmp_path / "big.bin"
    done = subprocess.run([sys.executable, "-c", script, str(target)], timeout=60, check=False)
    assert done.returncode == 0
    assert list(tmp_path.iterdir()) == []


class Crash(BaseException):
    """Stands for kill -9: raised at one file-system call, and at every call after it."""


@pytest.fixture
def crash_at() -> Iterator[Callable[[int], pytest.MonkeyPatch]]:
    """``crash_at(k)``: the k-th durable-state syscall (and all later ones) raise Crash.

    Returns the patch so the test can undo it (the "restart").
    """
    patch = pytest.MonkeyPatch()
    names = ("fsync", "link", "unlink", "rename", "replace", "mkdir", "symlink", "write")
    state = {"left": -1}

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if state["left"] == 0:
                raise Crash
            state["left"] -= 1
            return func(*args, **kwargs)

        return call

    def arm(k: int) -> pytest.MonkeyPatch:
        state["left"] = k
        for name in names:
            patch.setattr(os, name, wrap(getattr(os, name)))
        return patch

    yield arm
    patch.undo()


def test_atomic_write_crash_at_every_step_never_tears(
    tmp_path: Path, crash_at: Callable[[int], pytest.MonkeyPatch]
) -> None:
    """Killed at any step, the file holds the old or the new JSON, never a torn mix."""
    target = tmp_path / "ledger.json"
    old, new = {"v": 1, "pad": "o" * 5000}, {"v": 2, "pad": "n" * 5000}
    for k in range(20):
        fsutil.atomic_write_json(target, old)
        patch = crash_at(k)
        try:
            fsutil.atomic_write_json(target, new)
        except Crash:
            patch.undo()
            assert json.loads(target.read_bytes()) in (old, new)
            fsutil.remove_stale_temps(tmp_path)
            assert [p.name for p in tmp_path.iterdir()] == ["ledger.json"]
            continue
        patch.undo()
        assert json.loads(target.read_bytes()) == new
        assert k > 2
        break
    else:
        pytest.fail("the write never completed")


# --- folders ----------------------------------------------------------------------------


def test_make_dirs_fsyncs_each_created_folders_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every folder created gets its parent fsynced, so the new entry survives a power cut."""
    synced: list[Path] = []
    real = fsutil.fsync_dir

    def record(path: Path) -> None:
        synced.append(path)
        real(path)

    monkeypatch.setattr(fsutil, "fsync_dir", record)
    (tmp_path / "a").mkdir()
    fsutil.make_dirs(tmp_path / "a" / "b c" / "ü")
    assert (tmp_path / "a" / "b c" / "ü").is_dir()
    # tmp_path: the deepest existing folder's parent (see the next test).
    assert synced == [tmp_path, tmp_path / "a", tmp_path / "a" / "b c"]


def test_make_dirs_fsyncs_the_parent_of_an_existing_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An existing folder is not trusted: a kill between an earlier mkdir and its fsync
    leaves an entry the disk may not have, so its parent is fsynced again (one call)."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    synced: list[Path] = []
    monkeypatch.setattr(fsutil, "fsync_dir", synced.append)
    fsutil.make_dirs(tmp_path / "a" / "b")
    assert synced == [tmp_path / "a"]


@pytest.mark.parametrize(
    ("code", "config"),
    [
        (errno.EACCES, True),
        (errno.EROFS, True),
        (errno.ENOTDIR, True),
        (errno.ELOOP, True),
        (errno.EIO, False),
        (errno.ENOSPC, False),
    ],
)
def test_path_error_tells_an_unusable_path_from_a_failing_disk(code: int, config: bool) -> None:
    """A path that cannot be used as asked is a config error naming its key; a failing
    disk is a durability error; each with its own message."""
    error = fsutil.path_error(
        OSError(code, os.strerror(code)), "paths.inbox", unusable="bad path", failing="bad disk"
    )
    if config:
        assert isinstance(error, ConfigError)
        assert (error.message, error.key) == ("bad path", "paths.inbox")
    else:
        assert isinstance(error, DurabilityError) and error.message == "bad disk"


# --- moves ------------------------------------------------------------------------------


def test_move_file_creates_parents_and_moves(tmp_path: Path) -> None:
    """The file arrives under dst (new parents created) with its bytes; src is gone."""
    src = tmp_path / "inbox" / "mon image 1.jpg"
    src.parent.mkdir()
    src.write_bytes(b"\xff\xd8jpeg")
    dst = tmp_path / "done" / "sub dir" / "mon image 1.jpg"
    fsutil.move_file(src, dst)
    assert not src.exists()
    assert dst.read_bytes() == b"\xff\xd8jpeg"


def test_move_file_never_overwrites(tmp_path: Path) -> None:
    """An existing dst raises FileExistsError and both files keep their bytes."""
    src, dst = tmp_path / "a.jpg", tmp_path / "b.jpg"
    src.write_bytes(b"mine")
    dst.write_bytes(b"theirs")
    with pytest.raises(FileExistsError):
        fsutil.move_file(src, dst)
    assert (src.read_bytes(), dst.read_bytes()) == (b"mine", b"theirs")


def test_move_file_missing_source_creates_nothing(tmp_path: Path) -> None:
    """A missing src raises FileNotFoundError before any destination folder is made."""
    with pytest.raises(FileNotFoundError):
        fsutil.move_file(tmp_path / "gone.jpg", tmp_path / "done" / "gone.jpg")
    assert not (tmp_path / "done").exists()


@pytest.mark.parametrize("cross_fs", [False, True])
def test_move_file_moves_symlink_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cross_fs: bool
) -> None:
    """A symlink is moved as a link (same target text); its target is neither read nor moved."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    target = tmp_path / "secret.jpg"
    target.write_bytes(b"outside")
    (inbox / "link.jpg").symlink_to(target)
    (inbox / "dangling.jpg").symlink_to("../nowhere.jpg")
    if cross_fs:
        exdev_from(inbox, monkeypatch)
    for name in ("link.jpg", "dangling.jpg"):
        fsutil.move_file(inbox / name, tmp_path / "failed" / name)
    assert (tmp_path / "failed" / "link.jpg").readlink() == target
    assert (tmp_path / "failed" / "dangling.jpg").readlink() == Path("../nowhere.jpg")
    assert target.read_bytes() == b"outside"
    assert list(inbox.iterdir()) == []
    assert sorted(listing(tmp_path / "failed")) == ["dangling.jpg", "link.jpg"]


def test_move_file_across_file_systems_copies_then_unlinks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On EXDEV the bytes, mode and mtime arrive under dst, src goes, no temp file remains."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    src = inbox / "été.png"
    src.write_bytes(os.urandom(3 << 20))
    src.chmod(0o640)
    os.utime(src, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    data = src.read_bytes()
    exdev_from(inbox, monkeypatch)
    dst = tmp_path / "done" / "été.png"
    fsutil.move_file(src, dst)
    assert dst.read_bytes() == data
    assert dst.stat().st_mode & 0o777 == 0o640
    assert dst.stat().st_mtime_ns == 1_600_000_000_123_456_789
    assert not src.exists()
    assert [p.name for p in dst.parent.iterdir()] == ["été.png"]


def test_move_file_across_file_systems_write_failure_leaves_no_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC in the middle of a cross-FS copy: no file under dst, no temp, src intact."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    src = inbox / "big.jpg"
    src.write_bytes(os.urandom(3 << 20))
    data = src.read_bytes()
    (tmp_path / "done").mkdir()
    exdev_from(inbox, monkeypatch)
    real_write = os.write
    written = {"n": 0}

    def write(fd: int, buf: Any) -> int:
        if Path(f"/proc/self/fd/{fd}").readlink().is_relative_to(tmp_path / "done"):
            if written["n"] > (1 << 20):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written["n"] += len(buf)
        return real_write(fd, buf)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(OSError) as info:
        fsutil.move_file(src, tmp_path / "done" / "big.jpg")
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert written["n"] > 0
    assert list((tmp_path / "done").iterdir()) == []
    assert src.read_bytes() == data


def test_move_file_without_hard_links_falls_back_to_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where link() is refused (EPERM), the move renames, and still never overwrites."""

    def no_links(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "a.jpg").write_bytes(b"a")
    (tmp_path / "b.jpg").write_bytes(b"b")
    fsutil.move_file(tmp_path / "a.jpg", tmp_path / "x" / "a.jpg")
    assert (tmp_path / "x" / "a.jpg").read_bytes() == b"a"
    assert not (tmp_path / "a.jpg").exists()
    with pytest.raises(FileExistsError):
        fsutil.move_file(tmp_path / "b.jpg", tmp_path / "x" / "a.jpg")
    assert (tmp_path / "x" / "a.jpg").read_bytes() == b"a"
    assert (tmp_path / "b.jpg").read_bytes() == b"b"


def _other_fs_dir() -> Path | None:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return None


@pytest.mark.skipif(_other_fs_dir() is None, reason="no writable tmpfs at /dev/shm")
def test_move_file_real_cross_device(tmp_path: Path) -> None:
    """A real move from tmpfs to tmp_path lands intact, whatever the devices are."""
    shm = _other_fs_dir()
    assert shm is not None
    with tempfile.TemporaryDirectory(dir=shm) as other:
        src = Path(other) / "clip.jpg"
        src.write_bytes(b"bytes from another device")
        fsutil.move_file(src, tmp_path / "done" / "clip.jpg")
        assert not src.exists()
    assert (tmp_path / "done" / "clip.jpg").read_bytes() == b"bytes from another device"


# --- names ------------------------------------------------------------------------------


def test_next_free_suffix_skips_tails_taken_by_any_name(tmp_path: Path) -> None:
    """ "" → "-2" when beach.mp4 exists, "-3" when beach-2.json exists, then "-4" when
    beach-3.json is planned by another job (``taken`` holds file names)."""
    parts = [("beach", ".mp4"), ("beach", ".json")]
    assert fsutil.next_free_suffix(tmp_path, parts) == ""
    (tmp_path / "beach.mp4").write_bytes(b"x")
    assert fsutil.next_free_suffix(tmp_path, parts) == "-2"
    (tmp_path / "beach-2.json").write_bytes(b"{}")
    assert fsutil.next_free_suffix(tmp_path, parts) == "-3"
    assert fsutil.next_free_suffix(tmp_path, parts, taken={"beach-3.json"}) == "-4"


def test_next_free_suffix_gives_files_of_several_stems_one_tail(tmp_path: Path) -> None:
    """A frames drop: the end image's name alone being taken moves all of them."""
    parts = [("dusk", ".jpg"), ("dusk-end", ".png"), ("dusk", ".yaml")]
    assert fsutil.next_free_suffix(tmp_path, parts) == ""
    (tmp_path / "dusk-end.png").write_bytes(b"x")
    assert fsutil.next_free_suffix(tmp_path, parts) == "-2"
    assert fsutil.next_free_suffix(tmp_path, parts, taken={"dusk-2.yaml"}) == "-3"


def test_next_free_suffix_counts_dangling_symlinks_and_is_case_sensitive(tmp_path: Path) -> None:
    """A dangling symlink occupies its name; ``Beach.mp4`` does not occupy ``beach.mp4``."""
    (tmp_path / "plage été.mp4").symlink_to("missing-target")
    assert fsutil.next_free_suffix(tmp_path, [("plage été", ".mp4")]) == "-2"
    (tmp_path / "Beach.mp4").write_bytes(b"x")
    assert fsutil.next_free_suffix(tmp_path, [("beach", ".mp4")]) == ""


def test_temp_path_is_hidden_and_fits_name_limit(tmp_path: Path) -> None:
    """Temp names are ``.NAME.<hex>.tmp`` and stay under 255 bytes even for long names."""
    short = fsutil.temp_path(tmp_path / "a.json")
    assert short.parent == tmp_path
    assert fsutil.TEMP_RE.match(short.name)
    assert short.name.startswith(".a.json.")
    long = fsutil.temp_path(tmp_path / ("é" * 127 + ".json"))
    assert len(long.name.encode()) <= 255
    assert fsutil.TEMP_RE.match(long.name)


def test_remove_stale_temps_removes_only_temp_files(tmp_path: Path) -> None:
    """Only ``.NAME.<12 hex>.tmp`` files go; user files that merely look similar stay."""
    sub = tmp_path / "sub"
    sub.mkdir()
    stale = [fsutil.temp_path(tmp_path / "x.json"), fsutil.temp_path(sub / "y.jpg")]
    for path in stale:
        path.write_bytes(b"partial")
    keep = ["notes.tmp", ".hidden", ".draft.tmp", "z.json"]
    for name in keep:
        (tmp_path / name).write_bytes(b"user")
    assert fsutil.remove_stale_temps(tmp_path) == 2
    assert sorted(listing(tmp_path)) == sorted(keep)


# --- the order of a move (power cuts) ---------------------------------------------------


def record_os_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Path]]:
    """Record fsyncs (by the path of the descriptor), unlinks, links and renames, in order."""
    calls: list[tuple[str, Path]] = []
    real_fsync, real_unlink, real_link, real_rename = os.fsync, os.unlink, os.link, os.rename

    def fsync(fd: int) -> None:
        calls.append(("fsync", Path(f"/proc/self/fd/{fd}").readlink()))
        real_fsync(fd)

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(("unlink", Path(path)))
        real_unlink(path, *args, **kwargs)

    def link(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(("link", Path(dst)))
        real_link(src, dst, *args, **kwargs)

    def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(("rename", Path(dst)))
        real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(os, "rename", rename)
    return calls


@pytest.mark.parametrize("how", ["same_fs", "same_folder", "cross_fs", "no_hard_links"])
def test_move_file_fsyncs_the_destination_folder_before_unlinking_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """On a file system that reorders metadata writes, unlinking src before dst's folder
    is durable can lose the file in a power cut: dst's folder fsync comes first, and
    src's folder is fsynced after the unlink."""
    inbox, done = tmp_path / "inbox", tmp_path / "done"
    inbox.mkdir()
    done.mkdir()
    src = inbox / "a.jpg"
    src.write_bytes(b"image")
    dst = inbox / "b.jpg" if how == "same_folder" else done / "a.jpg"
    calls = record_os_calls(monkeypatch)
    if how == "cross_fs":
        exdev_from(inbox, monkeypatch)
    if how == "no_hard_links":

        def refuse(*_args: Any, **_kwargs: Any) -> None:
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))

        monkeypatch.setattr(os, "link", refuse)
    fsutil.move_file(src, dst)
    assert dst.read_bytes() == b"image" and not src.exists()
    placed = ("fsync", dst.parent.resolve())
    assert placed in calls, calls
    if how == "no_hard_links":
        assert calls.index(("rename", dst)) < calls.index(placed)
        return  # a rename has no separate unlink: one step, then both folders synced
    unlinked = calls.index(("unlink", src))
    assert calls.index(placed) < unlinked, calls
    assert ("fsync", src.parent.resolve()) in calls[unlinked + 1 :], calls


# --- identity ---------------------------------------------------------------------------


def test_identify_and_same_file_tell_a_replaced_or_rewritten_file(tmp_path: Path) -> None:
    """Same name, another file (replaced by rename, or rewritten in place) is not the same
    file; a symlink is identified as itself, not as its target; a missing file is not."""
    path = tmp_path / "beach.jpg"
    path.write_bytes(b"first")
    first = fsutil.identify(path)
    st = path.stat()
    assert first == (st.st_dev, st.st_ino, 5, st.st_mtime_ns)
    assert fsutil.same_file(path, first)

    other = tmp_path / "other.jpg"
    other.write_bytes(b"first")
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    other.replace(path)  # same bytes, same size, same mtime: another inode
    assert not fsutil.same_file(path, first)

    now = fsutil.identify(path)
    with open(path, "r+b") as fp:
        fp.write(b"FIRST, longer")
    assert not fsutil.same_file(path, now)

    link = tmp_path / "link.jpg"
    link.symlink_to(path)
    assert fsutil.identify(link).ino == link.lstat().st_ino != path.stat().st_ino
    path.unlink()
    assert not fsutil.same_file(path, now)


@pytest.mark.parametrize("cross_fs", [False, True])
def test_move_file_with_expect_moves_only_the_examined_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cross_fs: bool
) -> None:
    """A file replaced under the same name is not moved: InputReplaced, the newcomer
    stays in the inbox untouched, nothing appears under dst; the examined file moves."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    src = inbox / "beach.jpg"
    src.write_bytes(b"examined")
    examined = fsutil.identify(src)
    if cross_fs:
        exdev_from(inbox, monkeypatch)
    fsutil.move_file(src, tmp_path / "done" / "beach.jpg", expect=examined)
    assert (tmp_path / "done" / "beach.jpg").read_bytes() == b"examined"

    src.write_bytes(b"examined")
    examined = fsutil.identify(src)
    (inbox / "new.jpg").write_bytes(b"a newcomer")
    (inbox / "new.jpg").replace(src)
    with pytest.raises(InputReplaced) as info:
        fsutil.move_file(src, tmp_path / "done" / "beach-2.jpg", expect=examined)
    assert info.value.code == "input_replaced"
    assert src.read_bytes() == b"a newcomer"
    assert sorted(listing(tmp_path / "done")) == ["beach.jpg"]


@pytest.mark.parametrize("cross_fs", [False, True])
def test_move_file_with_expect_catches_a_swap_after_its_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cross_fs: bool
) -> None:
    """The file swapped between the identity check and the move itself: the check on
    what was really linked (or opened, across file systems) refuses it, and no name
    of the newcomer is left under dst."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    src = inbox / "beach.jpg"
    src.write_bytes(b"examined")
    examined = fsutil.identify(src)
    if cross_fs:
        exdev_from(inbox, monkeypatch)
    real_link, real_lstat = os.link, os.lstat
    swapped = {"done": False}

    def swap() -> None:
        if not swapped["done"]:
            swapped["done"] = True
            (inbox / "new.jpg").write_bytes(b"a newcomer")
            (inbox / "new.jpg").replace(src)

    def link(a: Any, b: Any, *args: Any, **kwargs: Any) -> None:
        if Path(a) == src:
            swap()
        real_link(a, b, *args, **kwargs)

    calls = {"n": 0}

    def lstat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        # Across file systems the copy lstat()s src right before opening it.
        if cross_fs and Path(path) == src:
            calls["n"] += 1
            if calls["n"] == 2:
                swap()
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)
    if not cross_fs:
        monkeypatch.setattr(os, "link", link)
    with pytest.raises(InputReplaced):
        fsutil.move_file(src, tmp_path / "done" / "beach.jpg", expect=examined)
    assert swapped["done"]
    assert src.read_bytes() == b"a newcomer"
    assert listing(tmp_path / "done") == {}


def test_remove_stale_temps_older_than_spares_a_live_write(tmp_path: Path) -> None:
    """With older_than, only temp files untouched that long go: a write in progress (a
    fresh temp) survives a sweep that runs while writers may be at work."""
    fresh = fsutil.temp_path(tmp_path / "daemon.json")
    stale = fsutil.temp_path(tmp_path / "other.json")
    fresh.write_bytes(b"being written")
    stale.write_bytes(b"left by a crash")
    old = 1_600_000_000
    os.utime(stale, (old, old))
    assert fsutil.remove_stale_temps(tmp_path, older_than=fsutil.STALE_TEMP_SECONDS) == 1
    assert fresh.exists() and not stale.exists()
