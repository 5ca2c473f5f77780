"""The rules of a drop: hashing, checks, the job record and its identity (real files).

Reference drops above all: the sidecar and the images it lists are one job, the
sidecar its lead, every image hashed and checked and recorded in the sidecar's
order, and every problem named.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from seedance_watch import errors as E
from seedance_watch.core.jobs import Job, content_key, make_job_id
from seedance_watch.core.options import GenerationOptions
from seedance_watch.core.stability import Orphan, PairReady, Unsafe
from seedance_watch.files.drop import (
    bare_job,
    event_error,
    event_files,
    examine_drop,
)

from .helpers import make_image_bytes, sha256

DEFAULTS = GenerationOptions(resolution="720p", duration=5)
NOW = 1_700_000_000.0


def reference_drop(
    inbox: Path, sidecar: str = "ad.yaml", refs: tuple[str, ...] = ("shoe-2.jpg", "shoe.png")
) -> list[Path]:
    """``ad.yaml`` listing ``refs`` (each a distinct decodable image), written in ``inbox``."""
    inbox.mkdir(parents=True, exist_ok=True)
    side = inbox / sidecar
    side.write_text(f"prompt: the shoe turns\nreferences: [{', '.join(refs)}]\n")
    paths = []
    for i, name in enumerate(refs):
        fmt = "PNG" if name.endswith(".png") else "JPEG"
        (inbox / name).write_bytes(make_image_bytes(640, 480, fmt, color=(10 * i, 90, 200)))
        paths.append(inbox / name)
    return [side, *paths]


def examine(inbox: Path, event: PairReady) -> tuple[Job, E.JobError | None]:
    drop = examine_drop(
        inbox,
        event.image,
        event.sidecar,
        last_frame=event.last_frame,
        references=event.references,
        defaults=DEFAULTS,
        now=NOW,
    )
    return drop.job, drop.error


def test_a_reference_drop_is_one_job_led_by_its_sidecar(tmp_path: Path) -> None:
    """Kind reference, the sidecar as source, every image an input with role reference in
    the sidecar's order (after the sidecar, the lead), the Seedance 2 default model, and
    a content key over the references' hashes in order."""
    side, second, first = reference_drop(tmp_path, refs=("shoe-2.jpg", "shoe.png"))
    job, error = examine(
        tmp_path, PairReady("ad", None, "ad.yaml", references=("shoe-2.jpg", "shoe.png"))
    )
    assert error is None
    assert (job.kind, job.source, job.sidecar, job.image_sha256) == (
        "reference",
        "ad.yaml",
        "ad.yaml",
        None,
    )
    assert [(i.role, i.path, i.sha256) for i in job.inputs] == [
        ("sidecar", "ad.yaml", sha256(side)),
        ("reference", "shoe-2.jpg", sha256(second)),
        ("reference", "shoe.png", sha256(first)),
    ]
    st = first.stat()
    assert (job.inputs[2].size, job.inputs[2].ino) == (st.st_size, st.st_ino)
    assert job.model == "seedance-2-0-fast" and job.text == "the shoe turns"
    expected = content_key(
        None,
        "seedance-2-0-fast",
        "the shoe turns",
        kind="reference",
        reference_sha256s=(sha256(second), sha256(first)),
        body_options={"duration": 5, "resolution": "720p"},
    )
    assert job.content_key == expected
    swapped = content_key(
        None,
        "seedance-2-0-fast",
        "the shoe turns",
        kind="reference",
        reference_sha256s=(sha256(first), sha256(second)),
        body_options={"duration": 5, "resolution": "720p"},
    )
    assert swapped != expected  # the order is part of the request
    sidecar_part = f"{sha256(side)}\0{sha256(second)}\0{sha256(first)}"
    assert job.job_id == make_job_id("ad.yaml", sha256(side), sidecar_part, side.stat().st_ctime_ns)


def test_the_job_id_of_an_image_or_frames_drop_is_what_it_was(tmp_path: Path) -> None:
    """An image drop's id covers the image and the sidecar; a frames drop's adds its end
    image's hash to the sidecar's: the ids of jobs already in ledgers stay valid."""
    (tmp_path / "a.jpg").write_bytes(make_image_bytes())
    (tmp_path / "a.yaml").write_text("prompt: x\nlast_frame: end.png\n")
    (tmp_path / "end.png").write_bytes(make_image_bytes(fmt="PNG"))
    (tmp_path / "b.jpg").write_bytes(make_image_bytes(color=(1, 2, 3)))
    (tmp_path / "b.yaml").write_text("prompt: y\n")
    ctime = (tmp_path / "a.jpg").stat().st_ctime_ns
    frames, error = examine(tmp_path, PairReady("a", "a.jpg", "a.yaml", "end.png"))
    assert error is None
    part = f"{sha256(tmp_path / 'a.yaml')}\0{sha256(tmp_path / 'end.png')}"
    assert frames.job_id == make_job_id("a.jpg", sha256(tmp_path / "a.jpg"), part, ctime)
    assert [i.role for i in frames.inputs] == ["image", "last_frame", "sidecar"]
    image, error = examine(tmp_path, PairReady("b", "b.jpg", "b.yaml"))
    assert error is None
    ctime = (tmp_path / "b.jpg").stat().st_ctime_ns
    b_sha = sha256(tmp_path / "b.jpg")
    assert image.job_id == make_job_id("b.jpg", b_sha, sha256(tmp_path / "b.yaml"), ctime)


def test_a_bad_reference_image_fails_the_drop_naming_it(tmp_path: Path) -> None:
    reference_drop(tmp_path, refs=("good.jpg", "tiny.jpg"))
    (tmp_path / "tiny.jpg").write_bytes(make_image_bytes(200, 200))
    job, error = examine(
        tmp_path, PairReady("ad", None, "ad.yaml", references=("good.jpg", "tiny.jpg"))
    )
    assert isinstance(error, E.InvalidImage)
    assert error.message.startswith("reference image tiny.jpg: ")
    assert "300 px" in error.message
    # The failing job holds every file of the drop: they move to failed/ together.
    assert [i.path for i in job.inputs] == ["ad.yaml", "good.jpg", "tiny.jpg"]


def test_an_image_of_the_sidecars_name_beside_a_reference_drop_is_refused(
    tmp_path: Path,
) -> None:
    """invalid_sidecar naming both; the image is one of the job's files (to failed/)."""
    reference_drop(tmp_path, refs=("a.jpg",))
    (tmp_path / "ad.jpg").write_bytes(make_image_bytes())
    job, error = examine(tmp_path, PairReady("ad", "ad.jpg", "ad.yaml", references=("a.jpg",)))
    assert isinstance(error, E.InvalidSidecar)
    assert "ad.yaml" in error.message and "ad.jpg" in error.message
    assert error.key == "references"
    assert [(i.role, i.path) for i in job.inputs] == [
        ("image", "ad.jpg"),
        ("sidecar", "ad.yaml"),
        ("reference", "a.jpg"),
    ]


def test_a_reference_of_the_sidecars_own_name_is_refused(tmp_path: Path) -> None:
    """``ad.yaml`` listing ``ad.png``: invalid_sidecar naming both, whether that image is
    there (paired as the image of the sidecar's name) or not."""
    reference_drop(tmp_path, refs=("ad.png", "b.jpg"))
    _, error = examine(tmp_path, PairReady("ad", "ad.png", "ad.yaml", references=("b.jpg",)))
    assert isinstance(error, E.InvalidSidecar)
    assert "ad.png" in error.message and "ad.yaml" in error.message
    (tmp_path / "ad.png").unlink()
    _, error = examine(tmp_path, PairReady("ad", None, "ad.yaml", references=("b.jpg",)))
    assert isinstance(error, E.InvalidSidecar)
    assert "references: ad.png" in error.message


def test_a_sidecar_that_changed_after_pairing_is_input_replaced(tmp_path: Path) -> None:
    """The files paired must be the ones the sidecar (read now) lists, in its order; a
    text sidecar paired with references, or an image sidecar, likewise."""
    reference_drop(tmp_path, refs=("a.jpg", "b.jpg"))
    _, error = examine(tmp_path, PairReady("ad", None, "ad.yaml", references=("b.jpg", "a.jpg")))
    assert isinstance(error, E.InputReplaced)
    _, error = examine(tmp_path, PairReady("ad", None, "ad.yaml", references=("a.jpg",)))
    assert isinstance(error, E.InputReplaced)
    (tmp_path / "ad.yaml").write_text("prompt: x\nmode: text\n")
    _, error = examine(tmp_path, PairReady("ad", None, "ad.yaml", references=("a.jpg",)))
    assert isinstance(error, E.InputReplaced)
    (tmp_path / "ad.yaml").write_text("prompt: x\n")
    (tmp_path / "ad.jpg").write_bytes(make_image_bytes())
    _, error = examine(tmp_path, PairReady("ad", "ad.jpg", "ad.yaml", references=("a.jpg",)))
    assert isinstance(error, E.InputReplaced)


def test_an_orphaned_reference_drop_names_what_is_missing_and_keeps_roles(
    tmp_path: Path,
) -> None:
    """missing_image naming every missing image in order; the job holds the sidecar (its
    source) and the images that came, as references (so a retry keeps their names)."""
    reference_drop(tmp_path, refs=("a.jpg",))
    event = Orphan("ad.yaml", "missing_image", ("a.jpg",), ("c.jpg", "b.jpg"), "reference")
    error = event_error(event)
    assert isinstance(error, E.MissingImage)
    assert "c.jpg, b.jpg" in error.message and "ad.yaml" in error.message
    assert error.hint is not None and "references:" in error.hint
    assert event_files(event) == ["ad.yaml", "a.jpg"]
    job = bare_job(event, NOW, tmp_path)
    assert (job.source, job.sidecar) == ("ad.yaml", "ad.yaml")
    assert [(i.role, i.path) for i in job.inputs] == [
        ("sidecar", "ad.yaml"),
        ("reference", "a.jpg"),
    ]
    # A frames drop's end image keeps its role too, and its message its words.
    frames = Orphan("b.yaml", "missing_image", ("end.png",), (), "last_frame")
    (tmp_path / "b.yaml").write_text("prompt: x\n")
    (tmp_path / "end.png").write_bytes(b"x")
    assert [(i.role, i.path) for i in bare_job(frames, NOW, tmp_path).inputs] == [
        ("sidecar", "b.yaml"),
        ("last_frame", "end.png"),
    ]
    lone = event_error(Orphan("b.yaml", "missing_image", ("b.jpg",), ("end.png",), "last_frame"))
    assert lone.message.startswith("The last frame end.png named by b.yaml")


def test_a_failing_drop_of_a_sidecar_and_one_image_of_another_name_is_led_by_the_sidecar(
    tmp_path: Path,
) -> None:
    """A reference drop whose one image is a link: the sidecar is its source and its
    sidecar (not the image, which only has another stem)."""
    event = Unsafe("a.jpg", ("ad.yaml",))
    assert event_files(event) == ["ad.yaml", "a.jpg"]
    job = bare_job(event, NOW)
    assert (job.source, job.sidecar) == ("ad.yaml", "ad.yaml")


@pytest.mark.parametrize("refs", [("a.jpg",), tuple(f"r{i}.jpg" for i in range(9))])
def test_one_to_nine_references_are_taken(tmp_path: Path, refs: tuple[str, ...]) -> None:
    reference_drop(tmp_path, refs=refs)
    job, error = examine(tmp_path, PairReady("ad", None, "ad.yaml", references=refs))
    assert error is None
    assert [i.path for i in job.inputs if i.role == "reference"] == list(refs)


# --- issue 21: bounded inputs, the bytes checked are the bytes hashed, links ---------------


def _pair(inbox: Path, stem: str = "a", sidecar: str = "prompt: p\n") -> PairReady:
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / f"{stem}.jpg").write_bytes(make_image_bytes(640, 480))
    (inbox / f"{stem}.yaml").write_text(sidecar)
    return PairReady(stem, f"{stem}.jpg", f"{stem}.yaml")


def test_a_sidecar_over_1_mib_is_refused_naming_the_limit_not_cut(tmp_path: Path) -> None:
    """A sidecar with a typo past the first MiB (``resolutoin``) was cut there and the
    drop went on with other options than written (item 5): over the limit is
    invalid_sidecar, naming it."""
    event = _pair(tmp_path, sidecar="prompt: p\n" + "#" * (1 << 20) + "\nresolutoin: 1080p\n")
    job, error = examine(tmp_path, event)
    assert isinstance(error, E.InvalidSidecar)
    assert "1048576 bytes (1 MiB), the limit" in error.message
    assert job.model is None  # nothing of it was used
    # A sidecar of exactly the limit is read whole.
    exact = b"prompt: p\n" + b"#" * ((1 << 20) - len(b"prompt: p\n"))
    (tmp_path / "a.yaml").write_bytes(exact)
    assert examine(tmp_path, event)[1] is None


@pytest.mark.timeout(20)
def test_a_huge_sparse_image_is_refused_from_its_size_before_a_byte_is_read(
    tmp_path: Path,
) -> None:
    """A 64 GiB sparse "image" (item 7): fstat says too large, so it fails as
    invalid_image at once, never hashed (its recorded sha256 is empty); hashing it
    first held an intake worker for minutes."""
    event = _pair(tmp_path)
    with (tmp_path / "a.jpg").open("r+b") as f:
        f.truncate(64 << 30)
    job, error = examine(tmp_path, event)
    assert isinstance(error, E.InvalidImage)
    assert f"({64 << 30} bytes); the limit is 30 MB" in error.message
    image = next(i for i in job.inputs if i.role == "image")
    assert image.sha256 == "" and image.size == 64 << 30


def test_the_bytes_checked_are_the_bytes_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken image replaced by a good one right after intake read it (item 11): the
    checks judge the bytes that were hashed (and would be uploaded), not the file that
    now has the name, so the drop fails as invalid_image with the broken bytes' hash."""
    from seedance_watch.files import drop as drop_mod

    event = _pair(tmp_path)
    broken = make_image_bytes(640, 480)[:2000]  # a truncated JPEG
    (tmp_path / "a.jpg").write_bytes(broken)
    real_sha256 = hashlib.sha256
    swapped: list[bool] = []

    def sha256_then_swap(*args: bytes) -> object:
        if not swapped:
            swapped.append(True)
            good = tmp_path / "good.tmp"
            good.write_bytes(make_image_bytes(640, 480))
            good.replace(tmp_path / "a.jpg")
        return real_sha256(*args)

    monkeypatch.setattr(drop_mod.hashlib, "sha256", sha256_then_swap)
    job, error = examine(tmp_path, event)
    monkeypatch.undo()
    assert swapped
    assert isinstance(error, E.InvalidImage), error
    assert job.image_sha256 == hashlib.sha256(broken).hexdigest()


def test_a_fifo_under_an_image_name_never_blocks_intake(tmp_path: Path) -> None:
    """A FIFO swapped in under a paired image's name (item 11): opening it to read would
    wait for a writer for ever and hold an intake worker; it is refused at once as
    unsafe_path, without blocking."""
    import os
    import threading

    event = _pair(tmp_path)
    (tmp_path / "a.jpg").unlink()
    os.mkfifo(tmp_path / "a.jpg")
    result: list[tuple[Job, E.JobError | None]] = []
    worker = threading.Thread(target=lambda: result.append(examine(tmp_path, event)), daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():  # unblock the reader so the thread can end
        fd = os.open(tmp_path / "a.jpg", os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        pytest.fail("intake blocked on a FIFO")
    ((_, error),) = result
    assert isinstance(error, E.UnsafePath) and "not a regular file" in error.message


@pytest.mark.parametrize("link", ["folder", "file"])
def test_intake_reads_nothing_through_a_link_at_any_depth(tmp_path: Path, link: str) -> None:
    """A pair whose folder became a link to a folder elsewhere (or whose image became a
    link), after the watcher paired it: intake opens each folder without following a
    link, so it fails as unsafe_path and reads nothing there (item 1)."""
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    _pair(elsewhere)
    (inbox / "sub").mkdir(parents=True)
    if link == "folder":
        (inbox / "sub").rmdir()
        (inbox / "sub").symlink_to(elsewhere, target_is_directory=True)
    else:
        _pair(inbox / "sub")
        (inbox / "sub" / "a.jpg").unlink()
        (inbox / "sub" / "a.jpg").symlink_to(elsewhere / "a.jpg")
    job, error = examine(inbox, PairReady("sub/a", "sub/a.jpg", "sub/a.yaml"))
    assert isinstance(error, E.UnsafePath), error
    assert "symbolic link" in error.message
    assert all(i.sha256 == "" for i in job.inputs)


def test_a_drops_priority_is_its_jobs(tmp_path: Path) -> None:
    """``priority:`` in the sidecar becomes the job's priority (the ready queue's order)."""
    (tmp_path / "rush.jpg").write_bytes(make_image_bytes())
    (tmp_path / "rush.yaml").write_text("prompt: hurry\npriority: 7\n")
    drop = examine_drop(tmp_path, "rush.jpg", "rush.yaml", defaults=GenerationOptions(), now=NOW)
    assert drop.error is None and drop.job.priority == 7


def test_a_drop_found_partly_gone_records_the_rest_by_hash(tmp_path: Path) -> None:
    """The image left before it was read (another host moving the drop away as its job
    ends): the drop fails as input_vanished, and the sidecar still there is recorded
    with its hash, the identity the other host's job claimed it by, so that a shared
    store refuses this second claim of it."""
    sidecar = b"prompt: a calm sea\n"
    (tmp_path / "sea.yaml").write_bytes(sidecar)
    job, error = examine(tmp_path, PairReady("sea", "sea.jpg", "sea.yaml"))
    assert isinstance(error, E.InputVanished) and "sea.jpg left the inbox" in error.message
    assert [(i.role, i.path, i.sha256, i.size) for i in job.inputs] == [
        ("sidecar", "sea.yaml", sha256(sidecar), len(sidecar))
    ]
