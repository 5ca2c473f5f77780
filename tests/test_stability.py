"""The pure core of the inbox, with a fake clock: no files, no threads, no sleeps."""

from __future__ import annotations

from seedance_watch.core.stability import (
    AmbiguousDrop,
    Candidate,
    DropHint,
    FileSig,
    Orphan,
    Pairer,
    PairReady,
    StabilityTracker,
    Unsafe,
    is_watched_path,
)

NOW = 1_000_000.0
OLD = NOW - 3600


def sig(
    size: int = 10, mtime: float = NOW, ctime: float | None = None, link: bool = False
) -> FileSig:
    ctime = mtime if ctime is None else ctime
    return FileSig(size, int(mtime * 1e9), int(ctime * 1e9), 7, link)


# --- StabilityTracker ------------------------------------------------------------------


def test_unchanged_sig_for_settle_is_ready() -> None:
    """A file observed with the same sig settle_seconds apart becomes ready, once."""
    t = StabilityTracker(2.0, trust_file_times=False)
    t.observe("a.jpg", sig(), NOW)
    assert t.ready(NOW + 1.9) == []
    assert t.due(NOW + 2.0) == ["a.jpg"]  # the shell must look again before trusting it
    assert t.ready(NOW + 2.0) == []
    t.observe("a.jpg", sig(), NOW + 2.0)
    assert t.due(NOW + 2.0) == []
    assert t.ready(NOW + 2.0) == ["a.jpg"]
    assert t.is_stable("a.jpg")
    assert t.ready(NOW + 10) == []


def test_change_resets_the_wait() -> None:
    """A changed size or mtime starts the settle period again from that observation."""
    t = StabilityTracker(2.0, trust_file_times=False)
    t.observe("a.jpg", sig(10), NOW)
    t.observe("a.jpg", sig(20), NOW + 1.5)
    t.observe("a.jpg", sig(20), NOW + 2.5)
    assert t.ready(NOW + 2.5) == []
    assert t.next_deadline() == NOW + 3.5
    t.observe("a.jpg", sig(20), NOW + 3.5)
    assert t.ready(NOW + 3.5) == ["a.jpg"]


def test_change_after_stable_makes_it_pending_again() -> None:
    """A stable file that changes is no longer stable and is reported again once it settles."""
    t = StabilityTracker(1.0, trust_file_times=False)
    t.observe("a.jpg", sig(10), NOW)
    t.observe("a.jpg", sig(10), NOW + 1)
    assert t.ready(NOW + 1) == ["a.jpg"]
    t.observe("a.jpg", sig(11), NOW + 2)
    assert not t.is_stable("a.jpg")
    assert t.pending() == ["a.jpg"]
    t.observe("a.jpg", sig(11), NOW + 3)
    assert t.ready(NOW + 3) == ["a.jpg"]


def test_vanished_file_is_dropped() -> None:
    """Observing None forgets the file: it never becomes ready and has no deadline."""
    t = StabilityTracker(1.0, trust_file_times=False)
    t.observe("a.jpg", sig(), NOW)
    t.observe("a.jpg", None, NOW + 0.5)
    assert "a.jpg" not in t
    assert t.next_deadline() is None
    assert t.due(NOW + 5) == []
    assert t.ready(NOW + 5) == []


def test_trusted_old_file_is_ready_at_once() -> None:
    """With trust_file_times, a file first seen with old mtime and ctime is stable immediately."""
    t = StabilityTracker(2.0, trust_file_times=True)
    t.observe("old.jpg", sig(mtime=OLD), NOW)
    t.observe("fresh.jpg", sig(mtime=NOW - 0.5), NOW)
    assert t.due(NOW) == []
    assert t.ready(NOW) == ["old.jpg"]
    assert t.next_deadline() == NOW + 2.0


def test_recent_ctime_defeats_the_shortcut() -> None:
    """An old mtime with a fresh ctime (copy tool preserving times) still waits for settle."""
    t = StabilityTracker(2.0, trust_file_times=True)
    t.observe("copied.jpg", sig(mtime=OLD, ctime=NOW - 0.1), NOW)
    assert t.ready(NOW) == []


def test_without_trust_old_files_still_wait() -> None:
    """Without trust (polling, network FS) only observation counts, however old the mtime."""
    t = StabilityTracker(2.0, trust_file_times=False)
    t.observe("old.jpg", sig(mtime=OLD), NOW)
    assert t.ready(NOW) == []
    assert t.next_deadline() == NOW + 2.0


def test_next_deadline_is_the_earliest_pending_file() -> None:
    """next_deadline is the earliest time a pending file could be ready; None when idle."""
    t = StabilityTracker(2.0, trust_file_times=False)
    assert t.next_deadline() is None
    t.observe("b.jpg", sig(), NOW + 1)
    t.observe("a.jpg", sig(), NOW)
    assert t.next_deadline() == NOW + 2
    t.forget("a.jpg")
    assert t.next_deadline() == NOW + 3
    t.observe("b.jpg", sig(), NOW + 3)
    assert t.ready(NOW + 3) == ["b.jpg"]
    assert t.next_deadline() is None


# --- Pairer ----------------------------------------------------------------------------


def stable(mtime: float = NOW) -> Candidate:
    return Candidate(mtime, True)


def test_pair_ready_needs_both_stable() -> None:
    """Image and sidecar pair only when both are stable; either may have come first."""
    p = Pairer(300)
    out = p.evaluate({"a.jpg": stable(), "a.yaml": Candidate(NOW, False)}, NOW)
    assert out.events == []
    assert out.waiting == []  # a partner that is still being written counts as a partner
    out = p.evaluate({"a.jpg": Candidate(NOW, False), "a.yaml": stable()}, NOW)
    assert out.events == []
    out = p.evaluate({"a.yaml": stable(), "a.jpg": stable()}, NOW)
    assert out.events == [PairReady("a", "a.jpg", "a.yaml")]


def test_pairs_in_subfolders_case_insensitive_and_yml() -> None:
    """Pairing is by stem within a folder, with any-case image extensions and .yml sidecars."""
    p = Pairer(300)
    files = {
        "sub/dir/beach.JPG": stable(),
        "sub/dir/beach.yml": stable(),
        "other/beach.yaml": stable(),
        "x.PnG": stable(),
        "x.yaml": stable(),
    }
    out = p.evaluate(files, NOW)
    assert PairReady("sub/dir/beach", "sub/dir/beach.JPG", "sub/dir/beach.yml") in out.events
    assert PairReady("x", "x.PnG", "x.yaml") in out.events
    # other/beach.yaml does not pair with sub/dir/beach.JPG: different folder.
    assert [e for e in out.events if not isinstance(e, PairReady)] == []
    assert out.waiting == [("other/beach.yaml", NOW + 300)]
    assert out.next_deadline == NOW + 300


def test_two_sidecar_spellings_are_ambiguous() -> None:
    """NAME.yaml beside NAME.yml is an error for that pair, not a guess."""
    out = Pairer(300).evaluate({"a.jpg": stable(), "a.yaml": stable(), "a.yml": stable()}, NOW)
    assert len(out.events) == 1
    event = out.events[0]
    assert isinstance(event, AmbiguousDrop)
    assert event.paths == ("a.jpg", "a.yaml", "a.yml")
    assert "a.yaml" in event.message and "a.yml" in event.message


def test_two_images_with_one_stem_are_ambiguous() -> None:
    """NAME.jpg and NAME.png with one sidecar is ambiguous, once all of them are stable."""
    p = Pairer(300)
    files = {"a.jpg": stable(), "a.png": Candidate(NOW, False), "a.yaml": stable()}
    assert p.evaluate(files, NOW).events == []
    files["a.png"] = stable()
    (event,) = p.evaluate(files, NOW).events
    assert isinstance(event, AmbiguousDrop)
    assert event.paths == ("a.jpg", "a.png", "a.yaml")
    assert "image" in event.message


def test_orphans_after_pair_timeout_by_mtime() -> None:
    """A lone stable file becomes an orphan when its mtime is pair_timeout old, not before."""
    p = Pairer(300)
    files = {"img.jpg": stable(NOW - 299), "side.yaml": stable(NOW - 299)}
    out = p.evaluate(files, NOW)
    assert out.events == []
    assert out.next_deadline == NOW + 1
    out = p.evaluate(files, NOW + 1)
    assert out.events == [
        Orphan("img.jpg", "missing_sidecar"),
        Orphan("side.yaml", "missing_image"),
    ]


def test_unstable_lone_file_is_not_an_orphan() -> None:
    """A file still being written is never reported as an orphan, however old its mtime."""
    out = Pairer(300).evaluate({"img.jpg": Candidate(OLD, False)}, NOW)
    assert out.events == []


def test_symlinks_are_unsafe_and_never_pair() -> None:
    """A symlink (file or folder) is reported Unsafe and never pairs; its real partner of
    the same stem fails with it, under one report (one drop, one report)."""
    files = {
        "a.jpg": Candidate(NOW, True, is_symlink=True),
        "a.yaml": stable(NOW),
        "linked-dir": Candidate(NOW, True, is_symlink=True),
        "b.jpg": Candidate(NOW, False, is_symlink=True),
    }
    out = Pairer(300).evaluate(files, NOW)
    assert out.events == [Unsafe("a.jpg", ("a.yaml",)), Unsafe("linked-dir")]
    assert out.waiting == []


def test_ignored_names_never_appear() -> None:
    """Hidden, temp and partial names, files in hidden folders and non-inputs are skipped."""
    names_ = [
        ".a.jpg",
        "~a.yaml",
        "a.jpg.part",
        "a.tmp",
        "b.jpg.crdownload",
        "b.partial",
        "b.yaml.swp",
        ".hidden/c.jpg",
        ".hidden/c.yaml",
        "notes.txt",
    ]
    out = Pairer(0).evaluate({n: stable(OLD) for n in names_}, NOW)
    assert out.events == []
    assert out.waiting == []
    assert not is_watched_path(".hidden/c.jpg")
    assert is_watched_path("sub/c.jpg")


# --- kinds of drop: first and last frame, text (docs/design.md, "Pairing")
# ---------------------------------


def frames_sidecar(frame: str = "end.png", mtime: float = NOW, stable_: bool = True) -> Candidate:
    return Candidate(mtime, stable_, hint=DropHint(last_frame=frame))


def text_sidecar(mtime: float = NOW) -> Candidate:
    return Candidate(mtime, True, hint=DropHint(alone=True))


def test_a_frames_drop_is_ready_with_its_last_frame_of_another_stem() -> None:
    files = {"sub/a.jpg": stable(), "sub/a.yaml": frames_sidecar(), "sub/end.png": stable()}
    out = Pairer(300).evaluate(files, NOW)
    assert out.events == [PairReady("sub/a", "sub/a.jpg", "sub/a.yaml", "sub/end.png")]
    assert out.events[0].paths == ("sub/a.jpg", "sub/end.png", "sub/a.yaml")  # type: ignore[union-attr]
    assert out.waiting == []


def test_a_frames_drop_waits_for_its_last_frame_from_the_sidecars_mtime() -> None:
    """Not there yet: the drop waits (the image is no orphan); the named file is never a
    drop of its own while it is still being written either."""
    p = Pairer(300)
    files = {"a.jpg": stable(OLD), "a.yaml": frames_sidecar(mtime=NOW - 100)}
    out = p.evaluate(files, NOW)
    assert out.events == []
    assert out.waiting == [("a.yaml", NOW + 200)]
    files["end.png"] = Candidate(NOW, False)
    assert p.evaluate(files, NOW).events == []
    assert p.evaluate(files, NOW).waiting == []  # present, being written: a partner
    files["end.png"] = stable()
    assert p.evaluate(files, NOW).events == [PairReady("a", "a.jpg", "a.yaml", "end.png")]


def test_a_last_frame_that_never_comes_fails_the_drop_naming_it() -> None:
    files = {"a.jpg": stable(), "a.yaml": frames_sidecar(mtime=NOW - 300)}
    out = Pairer(300).evaluate(files, NOW)
    assert out.events == [Orphan("a.yaml", "missing_image", ("a.jpg",), ("end.png",), "last_frame")]
    # Neither image: the sidecar waits, then fails with nothing beside it.
    out = Pairer(300).evaluate({"a.yaml": frames_sidecar(mtime=NOW - 300)}, NOW)
    assert out.events == [Orphan("a.yaml", "missing_image", (), ("end.png",), "last_frame")]
    # The last frame but no image of the sidecar's name: the frame fails with it.
    files = {"a.yaml": frames_sidecar(mtime=NOW - 300), "end.png": stable(OLD)}
    out = Pairer(300).evaluate(files, NOW)
    assert out.events == [Orphan("a.yaml", "missing_image", ("end.png",), (), "last_frame")]


def test_an_early_last_frame_is_never_an_orphan_once_claimed() -> None:
    """The end image came first and is older than pair_timeout: alone it is an orphan,
    but once a sidecar names it, it belongs to that drop."""
    p = Pairer(300)
    assert p.evaluate({"end.png": stable(OLD)}, NOW).events == [
        Orphan("end.png", "missing_sidecar")
    ]
    files = {"end.png": stable(OLD), "a.yaml": frames_sidecar(mtime=NOW)}
    out = p.evaluate(files, NOW)
    assert out.events == []
    assert out.waiting == [("a.yaml", NOW + 300)]


def test_a_last_frame_with_a_sidecar_of_its_own_is_still_the_claimers() -> None:
    """end.png is named by a.yaml: end.yaml beside it is left waiting for an image."""
    files = {
        "a.jpg": stable(),
        "a.yaml": frames_sidecar(),
        "end.png": stable(),
        "end.yaml": stable(NOW - 300),
    }
    out = Pairer(300).evaluate(files, NOW)
    assert out.events == [
        PairReady("a", "a.jpg", "a.yaml", "end.png"),
        Orphan("end.yaml", "missing_image"),
    ]


def test_two_sidecars_naming_one_last_frame_are_ambiguous() -> None:
    files = {
        "a.jpg": stable(),
        "a.yaml": frames_sidecar(),
        "b.jpg": stable(),
        "b.yaml": frames_sidecar(),
        "end.png": stable(),
    }
    (event,) = Pairer(300).evaluate(files, NOW).events
    assert isinstance(event, AmbiguousDrop)
    assert event.paths == ("a.jpg", "b.jpg", "end.png", "a.yaml", "b.yaml")
    assert "end.png" in event.message and "a.yaml" in event.message and "b.yaml" in event.message


def test_a_symlinked_last_frame_fails_the_whole_drop() -> None:
    files = {
        "a.jpg": stable(),
        "a.yaml": frames_sidecar(),
        "end.png": Candidate(NOW, True, is_symlink=True),
    }
    assert Pairer(300).evaluate(files, NOW).events == [Unsafe("end.png", ("a.jpg", "a.yaml"))]


def test_a_text_sidecar_is_ready_alone_and_an_image_beside_it_goes_with_it() -> None:
    p = Pairer(300)
    assert p.evaluate({"poem.yaml": text_sidecar()}, NOW).events == [
        PairReady("poem", None, "poem.yaml")
    ]
    files = {"poem.yaml": text_sidecar(), "poem.jpg": Candidate(NOW, False)}
    assert p.evaluate(files, NOW).events == []  # the image is still being written
    files["poem.jpg"] = stable()
    assert p.evaluate(files, NOW).events == [PairReady("poem", "poem.jpg", "poem.yaml")]


def test_a_sidecar_without_a_hint_is_an_image_drop() -> None:
    """A sidecar the shell could not read (or a test's plain Candidate) pairs as today."""
    files = {"a.jpg": stable(), "a.yaml": Candidate(NOW, True, hint=None)}
    assert Pairer(300).evaluate(files, NOW).events == [PairReady("a", "a.jpg", "a.yaml")]


# --- reference drops: a sidecar and the images it lists ----------------------------------


def ref_sidecar(*refs: str, mtime: float = NOW, stable_: bool = True) -> Candidate:
    return Candidate(mtime, stable_, hint=DropHint(alone=True, references=refs))


def test_a_reference_drop_is_ready_with_every_listed_image_in_the_sidecars_order() -> None:
    """The sidecar and the images it lists are one drop, the sidecar its lead, the images
    in the order the sidecar lists them (not the order of their names)."""
    files = {
        "sub/ad.yaml": ref_sidecar("shoe-2.jpg", "shoe.png", "heel.webp"),
        "sub/shoe.png": stable(),
        "sub/shoe-2.jpg": stable(),
        "sub/heel.webp": stable(),
    }
    out = Pairer(300).evaluate(files, NOW)
    refs = ("sub/shoe-2.jpg", "sub/shoe.png", "sub/heel.webp")
    assert out.events == [PairReady("sub/ad", None, "sub/ad.yaml", references=refs)]
    assert out.events[0].paths == ("sub/ad.yaml", *refs)  # type: ignore[union-attr]
    assert out.waiting == []


def test_a_reference_drop_waits_for_every_image_it_lists() -> None:
    """One listed image missing: the drop waits from the sidecar's mtime; one present
    but still being written: it waits too, and nothing fails in the meantime."""
    p = Pairer(300)
    files = {"ad.yaml": ref_sidecar("a.jpg", "b.jpg", mtime=NOW - 100), "a.jpg": stable(OLD)}
    out = p.evaluate(files, NOW)
    assert out.events == []
    assert out.waiting == [("ad.yaml", NOW + 200)]
    files["b.jpg"] = Candidate(NOW, False)
    out = p.evaluate(files, NOW + 1000)  # long past the timeout: b.jpg is a partner
    assert (out.events, out.waiting) == ([], [])
    files["b.jpg"] = stable()
    assert p.evaluate(files, NOW).events == [
        PairReady("ad", None, "ad.yaml", references=("a.jpg", "b.jpg"))
    ]


def test_reference_images_that_never_come_fail_the_drop_naming_them() -> None:
    """Past pair_timeout (from the sidecar's mtime) the drop is an orphan that names
    every missing image in the sidecar's order, with the images that did come."""
    files = {
        "ad.yaml": ref_sidecar("c.jpg", "a.jpg", "b.jpg", mtime=NOW - 300),
        "a.jpg": stable(),
    }
    assert Pairer(300).evaluate(files, NOW - 1).events == []
    out = Pairer(300).evaluate(files, NOW)
    assert out.events == [
        Orphan("ad.yaml", "missing_image", ("a.jpg",), ("c.jpg", "b.jpg"), "reference")
    ]
    out = Pairer(300).evaluate({"ad.yaml": ref_sidecar("a.jpg", mtime=NOW - 300)}, NOW)
    assert out.events == [Orphan("ad.yaml", "missing_image", (), ("a.jpg",), "reference")]


def test_a_listed_image_is_never_a_drop_of_its_own() -> None:
    """Older than pair_timeout, alone it is an orphan; listed by a sidecar it belongs to
    that drop, even with a sidecar of its own name beside it (left waiting)."""
    p = Pairer(300)
    assert p.evaluate({"a.jpg": stable(OLD)}, NOW).events == [Orphan("a.jpg", "missing_sidecar")]
    files = {"a.jpg": stable(OLD), "ad.yaml": ref_sidecar("a.jpg", "b.jpg")}
    out = p.evaluate(files, NOW)
    assert (out.events, out.waiting) == ([], [("ad.yaml", NOW + 300)])
    files |= {"b.jpg": stable(), "a.yaml": stable(NOW - 300)}
    assert p.evaluate(files, NOW).events == [
        Orphan("a.yaml", "missing_image"),
        PairReady("ad", None, "ad.yaml", references=("a.jpg", "b.jpg")),
    ]


def test_two_sidecars_listing_one_image_are_one_ambiguous_drop_with_all_their_files() -> None:
    """A reference image listed twice, or listed by one and the last frame of another,
    belongs to neither: every file of both drops (their other images too) fails at once."""
    files = {
        "ad.yaml": ref_sidecar("shared.jpg", "x.jpg"),
        "bd.yaml": ref_sidecar("y.jpg", "shared.jpg"),
        "shared.jpg": stable(),
        "x.jpg": stable(),
        "y.jpg": stable(),
    }
    (event,) = Pairer(300).evaluate(files, NOW).events
    assert isinstance(event, AmbiguousDrop)
    assert event.paths == ("shared.jpg", "x.jpg", "y.jpg", "ad.yaml", "bd.yaml")
    assert "shared.jpg" in event.message and "ad.yaml, bd.yaml" in event.message
    assert "references" in event.message

    files = {
        "a.jpg": stable(),
        "a.yaml": frames_sidecar("end.png"),
        "ad.yaml": ref_sidecar("end.png", "x.jpg"),
        "end.png": stable(),
        "x.jpg": stable(),
    }
    (event,) = Pairer(300).evaluate(files, NOW).events
    assert isinstance(event, AmbiguousDrop)
    assert event.paths == ("a.jpg", "end.png", "x.jpg", "a.yaml", "ad.yaml")
    assert "last_frame and references" in event.message


def test_two_sidecar_spellings_keep_every_file_they_claim() -> None:
    """NAME.yaml beside NAME.yml, each naming other images: all of them fail together
    under one report (none stays behind unheld)."""
    files = {
        "ad.yaml": ref_sidecar("a.jpg"),
        "ad.yml": ref_sidecar("b.jpg"),
        "a.jpg": stable(),
        "b.jpg": stable(),
    }
    (event,) = Pairer(300).evaluate(files, NOW).events
    assert isinstance(event, AmbiguousDrop)
    assert event.paths == ("a.jpg", "b.jpg", "ad.yaml", "ad.yml")
    assert "more than one sidecar" in event.message


def test_an_image_of_the_reference_sidecars_own_name_goes_with_its_drop() -> None:
    """A reference drop has no image of the sidecar's name: one beside it neither makes
    the drop an image drop nor waits for a sidecar of its own; it goes with the drop,
    once the listed images are there, for intake to refuse (naming both)."""
    p = Pairer(300)
    files = {"ad.yaml": ref_sidecar("a.jpg"), "ad.jpg": stable(OLD)}
    assert p.evaluate(files, NOW).events == []
    files["a.jpg"] = stable()
    assert p.evaluate(files, NOW).events == [
        PairReady("ad", "ad.jpg", "ad.yaml", references=("a.jpg",))
    ]
    assert p.evaluate(files, NOW).events[0].paths == ("ad.jpg", "ad.yaml", "a.jpg")  # type: ignore[union-attr]
    # A list that names only its own image (or that intake refuses) claims nothing:
    # the drop is ready at once, and fails at intake.
    files = {"ad.yaml": Candidate(NOW, True, hint=DropHint(alone=True)), "ad.jpg": stable()}
    assert p.evaluate(files, NOW).events == [PairReady("ad", "ad.jpg", "ad.yaml")]


def test_a_symlinked_reference_fails_the_whole_drop() -> None:
    files = {
        "ad.yaml": ref_sidecar("a.jpg", "b.jpg"),
        "a.jpg": stable(),
        "b.jpg": Candidate(NOW, True, is_symlink=True),
    }
    assert Pairer(300).evaluate(files, NOW).events == [Unsafe("b.jpg", ("a.jpg", "ad.yaml"))]
