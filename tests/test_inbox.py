"""The inbox shell on real files in tmp_path, with real watchdog observers.

Every wait is for a condition, with a deadline; the only paced sleeps are a
writer deliberately writing slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from watchdog.observers import Observer

import seedance_watch.files.inbox as inbox_mod
from seedance_watch.files.inbox import (
    AmbiguousDrop,
    Inbox,
    InboxEvent,
    Orphan,
    PairReady,
    Unsafe,
    detect_mode,
)

from .helpers import until

SETTLE = 0.2


def make_inbox(root: Path, **kwargs: Any) -> Inbox:
    options: dict[str, Any] = {
        "settle_seconds": SETTLE,
        "rescan_seconds": 60.0,
        "pair_timeout": 300.0,
        "mode": "native",
    }
    options.update(kwargs)
    return Inbox(root, **options)


def drop(folder: Path, stem: str, ext: str = ".jpg", sidecar: str = ".yaml") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}{ext}").write_bytes(b"\xff\xd8 not decoded by the inbox " * 10)
    (folder / f"{stem}{sidecar}").write_text(f"prompt: {stem}\n")


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


Scenario = Callable[[list[InboxEvent], "asyncio.Task[None]"], Awaitable[None]]


def run_inbox(
    inbox: Inbox, scenario: Scenario, on_event: Callable[[InboxEvent], None] | None = None
) -> list[InboxEvent]:
    """Run ``inbox.run`` while ``scenario`` acts and waits; return every emitted event."""

    async def main() -> list[InboxEvent]:
        events: list[InboxEvent] = []

        async def emit(event: InboxEvent) -> None:
            if on_event is not None:
                on_event(event)
            events.append(event)

        task = asyncio.create_task(inbox.run(emit))
        try:
            await scenario(events, task)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return events

    return asyncio.run(main())


def ready_stems(events: list[InboxEvent]) -> list[str]:
    return [e.stem for e in events if isinstance(e, PairReady)]


def test_startup_scan_picks_up_existing_pairs(tmp_path: Path) -> None:
    """Pairs already in the inbox (also in subfolders) are emitted once, with no file events."""
    drop(tmp_path, "beach")
    drop(tmp_path / "sub" / "deeper", "forest", ext=".PNG", sidecar=".yml")
    inbox = make_inbox(tmp_path, rescan_seconds=0.1)

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await until(lambda: len(events) >= 2, 5.0, watching=task)
        drop(tmp_path, "sentinel")  # by the time it is emitted, several rescans have run
        await until(lambda: "sentinel" in ready_stems(events), 5.0, watching=task)

    events = run_inbox(inbox, scenario)
    assert sorted(ready_stems(events)) == ["beach", "sentinel", "sub/deeper/forest"]
    forest = "sub/deeper/forest"
    assert PairReady(forest, f"{forest}.PNG", f"{forest}.yml") in events
    assert inbox.mode_in_use == "native"


def test_old_files_at_startup_do_not_wait_for_settle(tmp_path: Path) -> None:
    """In native mode, files finished long ago are ready at once at start-up."""
    drop(tmp_path, "old")
    for p in tmp_path.iterdir():
        age(p, 3600)
    # ctime is fresh after utime, so only a long settle shows the shortcut is not taken.
    inbox = make_inbox(tmp_path, settle_seconds=30.0)
    started = time.monotonic()

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await until(lambda: bool(events), 1.0, watching=task)

    with pytest.raises(AssertionError, match=r"condition not met within 1\.0 s"):
        run_inbox(inbox, scenario)
    assert time.monotonic() - started < 5

    # Without a utime (ctime == mtime, both old enough) the shortcut applies.
    fresh_root = tmp_path / "fresh"
    drop(fresh_root, "a")
    # The same files seen "10 s later": both mtime and ctime are then older than settle.
    inbox = make_inbox(fresh_root, settle_seconds=0.5, clock=lambda: time.time() + 10)

    async def scenario2(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await until(lambda: bool(events), 0.4, watching=task)

    assert ready_stems(run_inbox(inbox, scenario2)) == ["a"]


def test_pair_dropped_while_running_is_emitted_once(tmp_path: Path) -> None:
    """A pair dropped into a native-watched inbox is emitted exactly once, soon after it settles."""
    inbox = make_inbox(tmp_path, rescan_seconds=0.1)
    emitted_at: list[float] = []

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await asyncio.sleep(0)  # let run() start its observer
        await until(lambda: inbox._observer is not None, 5.0, watching=task)
        drop(tmp_path, "wave")
        written = time.monotonic()
        await until(lambda: bool(events), 5.0, watching=task)
        emitted_at.append(time.monotonic() - written)
        (tmp_path / "wave.yaml").write_text("prompt: changed\n")  # already handed over
        drop(tmp_path, "sentinel")
        await until(lambda: len(events) >= 2, 5.0, watching=task)

    events = run_inbox(inbox, scenario)
    assert events == [
        PairReady("wave", "wave.jpg", "wave.yaml"),
        PairReady("sentinel", "sentinel.jpg", "sentinel.yaml"),
    ]
    assert SETTLE <= emitted_at[0] < SETTLE + 0.5


def test_slowly_written_file_is_emitted_after_its_last_write(tmp_path: Path) -> None:
    """A file appended to every 0.1 s for 1 s is emitted only after the last write, at full size."""
    inbox = make_inbox(tmp_path, settle_seconds=0.3)
    image = tmp_path / "slow.jpg"
    seen: dict[str, float] = {}

    def on_event(event: InboxEvent) -> None:
        seen["size"] = image.stat().st_size
        seen["at"] = time.monotonic()

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await until(lambda: inbox._observer is not None, 5.0, watching=task)
        (tmp_path / "slow.yaml").write_text("prompt: slow\n")
        with image.open("wb") as f:
            for _ in range(10):
                f.write(b"x" * 1000)
                f.flush()
                await asyncio.sleep(0.1)  # the writer's pace, not a wait for the inbox
            f.write(b"y" * 1000)
        seen["last_write"] = time.monotonic()
        await until(lambda: bool(events), 5.0, watching=task)

    events = run_inbox(inbox, scenario, on_event)
    assert events == [PairReady("slow", "slow.jpg", "slow.yaml")]
    assert seen["size"] == 11_000
    assert seen["at"] >= seen["last_write"]
    assert seen["at"] - seen["last_write"] < 0.3 + 0.2


def test_temp_names_are_ignored_until_renamed(tmp_path: Path) -> None:
    """rsync-style ``.name.XXXX`` and ``name.part`` files count only once renamed."""
    inbox = make_inbox(tmp_path)

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await until(lambda: inbox._observer is not None, 5.0, watching=task)
        (tmp_path / ".beach.jpg.Xa12b").write_bytes(b"image")
        (tmp_path / "beach.yaml.part").write_text("prompt: x\n")
        (tmp_path / "notes.txt").write_text("not an input")
        await until(lambda: inbox._tracker.next_deadline() is None, 5.0, watching=task)
        assert events == []
        (tmp_path / ".beach.jpg.Xa12b").rename(tmp_path / "beach.jpg")
        (tmp_path / "beach.yaml.part").rename(tmp_path / "beach.yaml")
        await until(lambda: bool(events), 5.0, watching=task)

    events = run_inbox(inbox, scenario)
    assert events == [PairReady("beach", "beach.jpg", "beach.yaml")]


def test_polling_mode_finds_the_same_pairs(tmp_path: Path) -> None:
    """Forced polling mode (watchdog's polling observer) finds pairs dropped while running."""
    inbox = make_inbox(tmp_path, mode="polling", polling_interval=0.1)

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await until(lambda: inbox._observer is not None, 5.0, watching=task)
        drop(tmp_path, "one")
        drop(tmp_path / "sub", "two", ext=".webp")
        await until(lambda: len(events) >= 2, 5.0, watching=task)

    events = run_inbox(inbox, scenario)
    assert sorted(ready_stems(events)) == ["one", "sub/two"]
    assert inbox.mode_in_use == "polling"


def test_rescan_finds_files_the_observer_missed(tmp_path: Path) -> None:
    """With an observer that will not look for 30 s, the periodic rescan still finds a drop."""
    inbox = make_inbox(tmp_path, mode="polling", polling_interval=30.0, rescan_seconds=0.2)

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await until(lambda: inbox._observer is not None, 5.0, watching=task)
        drop(tmp_path, "missed")
        await until(lambda: bool(events), 5.0, watching=task)

    assert ready_stems(run_inbox(inbox, scenario)) == ["missed"]


def test_unicode_space_and_shell_metacharacter_names(tmp_path: Path) -> None:
    """Names with spaces, accents, quotes and ``$(...)`` pair like any other."""
    inbox = make_inbox(tmp_path)
    stem = "plage d'été $(x) `y` ; & 🌊"

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await until(lambda: inbox._observer is not None, 5.0, watching=task)
        drop(tmp_path / "dossier été", stem)
        await until(lambda: bool(events), 5.0, watching=task)

    events = run_inbox(inbox, scenario)
    assert events == [
        PairReady(f"dossier été/{stem}", f"dossier été/{stem}.jpg", f"dossier été/{stem}.yaml")
    ]


def test_deleted_subfolder_and_missing_root_do_not_crash(tmp_path: Path) -> None:
    """A folder deleted mid-run drops its files; a missing inbox is waited for, then watched."""
    root = tmp_path / "inbox"
    inbox = make_inbox(root, rescan_seconds=0.1, pair_timeout=0.3)

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await until(lambda: root.exists() or inbox._root_missing, 5.0, watching=task)
        root.mkdir()
        await until(lambda: inbox._observer is not None, 5.0, watching=task)
        lone = root / "gone" / "lone.jpg"
        lone.parent.mkdir()
        lone.write_bytes(b"x")
        age(lone, 3600)  # would be an orphan as soon as it settles
        shutil.rmtree(root / "gone")
        drop(root / "kept", "sentinel")
        await until(lambda: bool(events), 5.0, watching=task)

    with capture_logs() as logs:
        events = run_inbox(inbox, scenario)
    assert events == [PairReady("kept/sentinel", "kept/sentinel.jpg", "kept/sentinel.yaml")]
    assert [e["event"] for e in logs].count("inbox.missing") == 1


def test_symlinks_are_reported_not_followed(tmp_path: Path) -> None:
    """A symlinked file and a symlinked folder are Unsafe; nothing behind them is read."""
    outside = tmp_path / "outside"
    drop(outside, "secret")
    root = tmp_path / "inbox"
    root.mkdir()
    (root / "link.jpg").symlink_to(outside / "secret.jpg")
    (root / "link.yaml").write_text("prompt: x\n")
    (root / "linked-folder").symlink_to(outside)
    inbox = make_inbox(root)

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await until(lambda: len(events) >= 2, 5.0, watching=task)
        drop(root, "sentinel")
        await until(lambda: len(events) >= 3, 5.0, watching=task)

    events = run_inbox(inbox, scenario)
    assert set(events) == {
        Unsafe("link.jpg", ("link.yaml",)),  # its real sidecar fails with it: one report
        Unsafe("linked-folder"),
        PairReady("sentinel", "sentinel.jpg", "sentinel.yaml"),
    }


@pytest.mark.parametrize("mode", ["native", "polling"])
def test_whatever_an_observer_says_a_link_is_never_walked_through(
    tmp_path: Path, mode: str
) -> None:
    """watchdog's stock polling observer stats through links: it reported a linked
    folder as a new folder and the files behind it as new files (issue 21, item 1).
    Fed exactly those events, the inbox reports the link itself (Unsafe) and never a
    file through it, at the top and one folder down, and a real folder replaced by a
    link mid-run is found as the link."""
    outside = tmp_path / "outside"
    drop(outside, "v")
    drop(outside / "deep", "w")
    for path in outside.rglob("*"):
        age(path, 3600)
    root = tmp_path / "inbox"
    (root / "sub").mkdir(parents=True)
    (root / "swapped").mkdir()
    inbox = make_inbox(root, mode=mode)

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await until(inbox.watching.is_set, 5.0, watching=task)
        (root / "evil").symlink_to(outside, target_is_directory=True)
        (root / "sub" / "evil").symlink_to(outside, target_is_directory=True)
        (root / "swapped").rmdir()
        (root / "swapped").symlink_to(outside, target_is_directory=True)
        for folder in ("evil", "sub/evil", "swapped"):
            for rel in ("", "/deep"):
                inbox._on_fs_event(f"{root}/{folder}{rel}", True)
            for rel in ("/v.jpg", "/v.yaml", "/deep/w.jpg", "/deep/w.yaml"):
                inbox._on_fs_event(f"{root}/{folder}{rel}", False)
        await until(lambda: len(events) >= 3, 5.0, watching=task)
        drop(root, "sentinel")
        await until(lambda: "sentinel" in ready_stems(events), 5.0, watching=task)

    events = run_inbox(inbox, scenario)
    assert set(events) == {
        Unsafe("evil"),
        Unsafe("sub/evil"),
        Unsafe("swapped"),
        PairReady("sentinel", "sentinel.jpg", "sentinel.yaml"),
    }


def test_claim_and_release(tmp_path: Path) -> None:
    """Claimed paths are never emitted; once released, what is still there is a new drop."""
    drop(tmp_path, "owned")
    inbox = make_inbox(tmp_path, rescan_seconds=0.1)
    inbox.claim(["owned.jpg", "owned.yaml"])

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        drop(tmp_path, "sentinel")
        await until(lambda: bool(events), 5.0, watching=task)
        assert ready_stems(events) == ["sentinel"]
        inbox.release(["owned.jpg", "owned.yaml"])
        await until(lambda: len(events) >= 2, 5.0, watching=task)

    events = run_inbox(inbox, scenario)
    assert ready_stems(events) == ["sentinel", "owned"]


def test_ambiguous_and_orphans_while_running(tmp_path: Path) -> None:
    """Two sidecar spellings give AmbiguousDrop; lone old files become orphans of both kinds."""
    drop(tmp_path, "twice")
    (tmp_path / "twice.yml").write_text("prompt: other\n")
    (tmp_path / "lonely.png").write_bytes(b"x")
    (tmp_path / "words.yaml").write_text("prompt: x\n")
    for name in ("lonely.png", "words.yaml"):
        age(tmp_path / name, 100)
    inbox = make_inbox(tmp_path, pair_timeout=50)

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await until(lambda: len(events) >= 3, 5.0, watching=task)

    events = run_inbox(inbox, scenario)
    ambiguous = [e for e in events if isinstance(e, AmbiguousDrop)]
    assert [e.paths for e in ambiguous] == [("twice.jpg", "twice.yaml", "twice.yml")]
    assert set(events) - set(ambiguous) == {
        Orphan("lonely.png", "missing_sidecar"),
        Orphan("words.yaml", "missing_image"),
    }


def test_scan_once_returns_due_events_and_leaves_young_orphans(tmp_path: Path) -> None:
    """scan_once waits for files to settle, returns what is due, and only logs young orphans."""
    drop(tmp_path, "ready")
    drop(tmp_path / "sub", "also")
    (tmp_path / "young.jpg").write_bytes(b"x")
    (tmp_path / "old.yaml").write_text("prompt: x\n")
    age(tmp_path / "old.yaml", 1000)
    inbox = make_inbox(tmp_path, pair_timeout=300)

    with capture_logs() as logs:
        events = asyncio.run(inbox.scan_once())

    assert sorted(ready_stems(events)) == ["ready", "sub/also"]
    assert Orphan("old.yaml", "missing_image") in events
    assert len(events) == 3
    waiting = [e for e in logs if e["event"] == "inbox.waiting_for_partner"]
    assert [e["path"] for e in waiting] == ["young.jpg"]
    assert (tmp_path / "young.jpg").exists()


def test_scan_once_gives_up_on_files_that_keep_changing(tmp_path: Path) -> None:
    """A file still changing after 10 * settle is logged and left out, not waited for forever."""
    (tmp_path / "busy.yaml").write_text("prompt: x\n")
    image = tmp_path / "busy.jpg"
    image.write_bytes(b"x")
    inbox = make_inbox(tmp_path, settle_seconds=0.05, mode="polling")

    async def main() -> list[InboxEvent]:
        stop = asyncio.Event()

        async def keep_writing() -> None:
            with image.open("ab") as f:
                while not stop.is_set():
                    f.write(b"x")
                    f.flush()
                    await asyncio.sleep(0.01)

        writer = asyncio.create_task(keep_writing())
        try:
            return await inbox.scan_once()
        finally:
            stop.set()
            await writer

    started = time.monotonic()
    with capture_logs() as logs:
        events = asyncio.run(main())
    assert events == []
    assert time.monotonic() - started < 2
    assert any(e["event"] == "inbox.still_changing" and e["path"] == "busy.jpg" for e in logs)


def test_native_watch_limit_falls_back_to_polling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If inotify refuses (ENOSPC watch limit), the inbox warns and polls instead of crashing."""

    class FullInotify(Observer):  # type: ignore[misc,valid-type]
        def start(self) -> None:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(inbox_mod, "Observer", FullInotify)
    inbox = make_inbox(tmp_path, polling_interval=0.1)

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await until(lambda: inbox._observer is not None, 5.0, watching=task)
        drop(tmp_path, "fallback")
        await until(lambda: bool(events), 5.0, watching=task)

    with capture_logs() as logs:
        events = run_inbox(inbox, scenario)
    assert ready_stems(events) == ["fallback"]
    assert inbox.mode_in_use == "polling"
    failed = [e for e in logs if e["event"] == "inbox.native_failed"]
    assert failed and failed[0]["log_level"] == "warning"


def test_detect_mode_from_mount_table(tmp_path: Path) -> None:
    """auto polls on network/FUSE mounts (longest mount prefix wins) and is native elsewhere."""
    for name in ("nas", "my share", "ssh", "nas/local"):
        (tmp_path / name / "inbox").mkdir(parents=True)
    base = str(tmp_path.resolve())
    table = tmp_path / "mountinfo"
    table.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        f"30 22 0:40 / {base}/nas rw - nfs4 server:/export rw\n"
        f"31 22 0:41 / {base.replace(' ', chr(92) + '040')}/my\\040share rw - cifs //h/s rw\n"
        f"32 22 0:42 / {base}/ssh rw shared:5 master:2 - fuse.sshfs u@h: rw\n"
        f"33 30 8:2 / {base}/nas/local rw - xfs /dev/sdb1 rw\n"
    )
    assert detect_mode(tmp_path / "nas" / "inbox", mountinfo=table)[0] == "polling"
    assert detect_mode(tmp_path / "my share" / "inbox", mountinfo=table)[0] == "polling"
    mode, reason = detect_mode(tmp_path / "ssh" / "inbox", mountinfo=table)
    assert (mode, "fuse.sshfs" in reason) == ("polling", True)
    assert detect_mode(tmp_path / "nas" / "local" / "inbox", mountinfo=table)[0] == "native"
    assert detect_mode(tmp_path / "not-yet" / "inbox", mountinfo=table)[0] == "native"
    assert detect_mode(tmp_path, mountinfo=tmp_path / "no-such-table")[0] == "native"


# --- kinds of drop (docs/design.md, "Pairing"): a last frame of another stem, a text sidecar alone
# ---------


def frames_drop(folder: Path, stem: str, frame: str, *, with_frame: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.jpg").write_bytes(b"\xff\xd8 first " * 10)
    (folder / f"{stem}.yaml").write_text(f"prompt: {stem}\nlast_frame: {frame}\n")
    if with_frame:
        (folder / frame).write_bytes(b"\x89PNG last " * 10)


def test_a_late_last_frame_completes_its_drop(tmp_path: Path) -> None:
    """Image and sidecar first, the end image (another stem) a while later: one drop, with
    the end image, and neither the image nor the end image is ever an orphan."""
    inbox = make_inbox(tmp_path, pair_timeout=30)

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await until(lambda: inbox._observer is not None, 5.0, watching=task)
        frames_drop(tmp_path / "sub", "beach", "beach-end.png", with_frame=False)
        await until(lambda: "sub/beach" in inbox._waiting, 5.0, watching=task)
        assert events == []
        (tmp_path / "sub" / "beach-end.png").write_bytes(b"\x89PNG last")
        await until(lambda: bool(events), 5.0, watching=task)

    with capture_logs() as logs:
        events = run_inbox(inbox, scenario)
    assert events == [
        PairReady("sub/beach", "sub/beach.jpg", "sub/beach.yaml", "sub/beach-end.png")
    ]
    # The wait is logged once (not at every evaluation), naming the sidecar that waits.
    waits = [e for e in logs if e["event"] == "inbox.waiting"]
    assert [e["path"] for e in waits] == ["sub/beach.yaml"]
    assert 25 < waits[0]["fails_in"] <= 30


def test_an_early_last_frame_waits_for_the_sidecar_that_names_it(tmp_path: Path) -> None:
    """The end image first (alone it waits for a sidecar of its own), then the drop."""
    inbox = make_inbox(tmp_path, pair_timeout=30)

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await until(lambda: inbox._observer is not None, 5.0, watching=task)
        (tmp_path / "end.png").write_bytes(b"\x89PNG last")
        await until(lambda: "end" in inbox._waiting, 5.0, watching=task)
        frames_drop(tmp_path, "start", "end.png", with_frame=False)
        await until(lambda: bool(events), 5.0, watching=task)
        await until(lambda: not inbox._waiting, 5.0, watching=task)

    events = run_inbox(inbox, scenario)
    assert events == [PairReady("start", "start.jpg", "start.yaml", "end.png")]


def test_an_old_last_frame_at_start_up_belongs_to_its_drop(tmp_path: Path) -> None:
    """At start-up (and with --once) an end image older than pair_timeout is not an orphan
    when a sidecar beside it names it; an old drop whose end image never came fails
    naming it, with the files that did come."""
    frames_drop(tmp_path, "a", "a-end.png")
    frames_drop(tmp_path, "b", "b-end.png", with_frame=False)
    for p in tmp_path.iterdir():
        age(p, 1000)
    events = asyncio.run(make_inbox(tmp_path, pair_timeout=300).scan_once())
    assert events == [
        PairReady("a", "a.jpg", "a.yaml", "a-end.png"),
        Orphan("b.yaml", "missing_image", ("b.jpg",), ("b-end.png",), "last_frame"),
    ]


def test_a_last_frame_that_never_comes_fails_the_drop(tmp_path: Path) -> None:
    inbox = make_inbox(tmp_path, pair_timeout=1.0)

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await until(lambda: inbox._observer is not None, 5.0, watching=task)
        frames_drop(tmp_path, "beach", "gone.png", with_frame=False)
        await until(lambda: bool(events), 5.0, watching=task)

    events = run_inbox(inbox, scenario)
    assert events == [
        Orphan("beach.yaml", "missing_image", ("beach.jpg",), ("gone.png",), "last_frame")
    ]


def test_a_sidecar_rewritten_to_name_another_end_image_takes_that_one(tmp_path: Path) -> None:
    """The claim follows the sidecar: rewritten to name an end image that is there (and
    was waiting alone for a sidecar of its own), the drop is complete with it."""
    inbox = make_inbox(tmp_path, pair_timeout=2.0)

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await until(lambda: inbox._observer is not None, 5.0, watching=task)
        frames_drop(tmp_path, "a", "other.png", with_frame=False)
        (tmp_path / "end.png").write_bytes(b"\x89PNG")
        await until(lambda: "a" in inbox._waiting and "end" in inbox._waiting, 5.0, watching=task)
        (tmp_path / "a.yaml").write_text("prompt: a\nlast_frame: end.png\n")
        await until(lambda: bool(events), 5.0, watching=task)

    events = run_inbox(inbox, scenario)
    assert events == [PairReady("a", "a.jpg", "a.yaml", "end.png")]


def test_a_text_sidecar_is_a_drop_alone(tmp_path: Path) -> None:
    """A mode: text sidecar is ready as soon as it is stable; an image of its name that is
    there before it settles goes with it (for intake to refuse); one that comes after
    the sidecar was taken never pairs with it (it waits for a sidecar of its own)."""
    inbox = make_inbox(tmp_path, pair_timeout=1.0)

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await until(lambda: inbox._observer is not None, 5.0, watching=task)
        (tmp_path / "poem.yaml").write_text("prompt: a poem\nmode: text\n")
        (tmp_path / "both.yaml").write_text("prompt: both\nmode: text\n")
        (tmp_path / "both.jpg").write_bytes(b"\xff\xd8")
        await until(lambda: len(events) >= 2, 5.0, watching=task)
        (tmp_path / "poem.jpg").write_bytes(b"\xff\xd8 late")
        await until(lambda: len(events) >= 3, 5.0, watching=task)

    events = run_inbox(inbox, scenario)
    assert set(events[:2]) == {
        PairReady("poem", None, "poem.yaml"),
        PairReady("both", "both.jpg", "both.yaml"),
    }
    assert events[2] == Orphan("poem.jpg", "missing_sidecar")


# --- reference drops: the sidecar and the images it lists ---------------------------------


def test_late_reference_images_complete_their_drop_in_the_sidecars_order(
    tmp_path: Path,
) -> None:
    """The sidecar (a block list) first, its images one by one after: one drop, the
    images in the listed order, none of them ever an orphan or a drop of its own."""
    inbox = make_inbox(tmp_path, pair_timeout=30)

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await until(lambda: inbox._observer is not None, 5.0, watching=task)
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "ad.yaml").write_text(
            "prompt: the shoe\nreferences:\n  - shoe-2.jpg\n  - 'shoe.png'\n"
        )
        await until(lambda: "sub/ad" in inbox._waiting, 5.0, watching=task)
        (tmp_path / "sub" / "shoe.png").write_bytes(b"\x89PNG first")
        await until(lambda: inbox._tracker.is_stable("sub/shoe.png"), 5.0, watching=task)
        assert events == []  # complete but for shoe-2.jpg
        (tmp_path / "sub" / "shoe-2.jpg").write_bytes(b"\xff\xd8 second")
        await until(lambda: bool(events), 5.0, watching=task)

    events = run_inbox(inbox, scenario)
    refs = ("sub/shoe-2.jpg", "sub/shoe.png")
    assert events == [PairReady("sub/ad", None, "sub/ad.yaml", references=refs)]


def test_old_reference_drops_at_start_up(tmp_path: Path) -> None:
    """At start-up old listed images belong to their drop; a drop whose images never all
    came fails naming the missing ones, with those that did."""
    (tmp_path / "ad.yaml").write_text("prompt: x\nreferences: [a.jpg, b.jpg]\n")
    (tmp_path / "bd.yaml").write_text("prompt: x\nreferences: [c.jpg, gone.jpg, d.jpg]\n")
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        (tmp_path / name).write_bytes(b"\xff\xd8")
    for p in tmp_path.iterdir():
        age(p, 1000)
    events = asyncio.run(make_inbox(tmp_path, pair_timeout=300).scan_once())
    assert events == [
        PairReady("ad", None, "ad.yaml", references=("a.jpg", "b.jpg")),
        Orphan("bd.yaml", "missing_image", ("c.jpg", "d.jpg"), ("gone.jpg",), "reference"),
    ]


def test_a_sidecar_rewritten_to_list_other_images_lets_the_old_ones_go(tmp_path: Path) -> None:
    """The claims follow the sidecar: an image it no longer lists is on its own again
    (and, alone past pair_timeout, an orphan), the ones it lists now complete it."""
    inbox = make_inbox(tmp_path, pair_timeout=2.0)

    async def scenario(events: list[InboxEvent], task: asyncio.Task[None]) -> None:
        await until(lambda: inbox._observer is not None, 5.0, watching=task)
        (tmp_path / "old.jpg").write_bytes(b"\xff\xd8")
        (tmp_path / "ad.yaml").write_text("prompt: x\nreferences: [old.jpg, new.jpg]\n")
        await until(
            lambda: "ad" in inbox._waiting and "old" not in inbox._waiting, 5.0, watching=task
        )
        (tmp_path / "ad.yaml").write_text("prompt: x\nreferences: [new.jpg]\n")
        (tmp_path / "new.jpg").write_bytes(b"\xff\xd8")
        await until(lambda: len(events) >= 2, 5.0, watching=task)

    events = run_inbox(inbox, scenario)
    assert set(events) == {
        PairReady("ad", None, "ad.yaml", references=("new.jpg",)),
        Orphan("old.jpg", "missing_sidecar"),
    }


def test_cancelling_the_watcher_as_it_is_woken_stops_it(tmp_path: Path) -> None:
    """A cancellation that arrives in the very step the inbox is woken (the engine
    releasing a finished job's files at SIGTERM) ends the watcher: on Python 3.11,
    ``asyncio.wait_for`` would swallow it and the loop would outlive the shutdown."""
    inbox = make_inbox(tmp_path, rescan_seconds=60.0)

    async def main() -> None:
        async def emit(event: InboxEvent) -> None:
            pass

        task = asyncio.create_task(inbox.run(emit))
        await until(lambda: inbox.watching.is_set(), 5.0, watching=task)
        for _ in range(5):  # let it reach its wait
            await asyncio.sleep(0)
        inbox.release([])  # wakes it ...
        task.cancel()  # ... and is cancelled in the same step
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)

    asyncio.run(main())
