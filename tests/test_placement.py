"""Placing the three kinds of drop: the output JSON, the moves to done/ and failed/.

Job records are built directly (no intake); the files are real files in tmp_path.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from seedance_watch import errors as E
from seedance_watch.config import BudgetConfig
from seedance_watch.core.budget import BudgetPrices
from seedance_watch.core.jobs import InputFile, Job, Stage, State
from seedance_watch.pipeline.placement import _output_metadata
from seedance_watch.pipeline.stage import Fail

from .fakes import make_engine
from .helpers import sha256

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40
VIDEO_SHA = sha256(VIDEO)


def _input(role: str, path: str, sha: str) -> InputFile:
    return InputFile(role=role, path=path, sha256=sha, size=1, dev=1, ino=1, mtime_ns=1)


def job_of(kind: str, state: State = State.PLACING, **fields: Any) -> Job:
    """A record of ``kind`` in ``state``: ``sub/beach.*`` (frames end on beach-end.png),
    the sidecar ``sub/poem.yaml`` alone for text, ``sub/ad.yaml`` and the images it
    lists (``sub/shoe.jpg`` then ``sub/heel.png``) for reference."""
    if kind == "text":
        source, sidecar = "sub/poem.yaml", "sub/poem.yaml"
        inputs: tuple[InputFile, ...] = (_input("sidecar", source, "c" * 64),)
    elif kind == "reference":
        source, sidecar = "sub/ad.yaml", "sub/ad.yaml"
        inputs = (
            _input("sidecar", source, "c" * 64),
            _input("reference", "sub/shoe.jpg", "e" * 64),
            _input("reference", "sub/heel.png", "b" * 64),
        )
    else:
        source, sidecar = "sub/beach.jpg", "sub/beach.yaml"
        inputs = (_input("image", source, "a" * 64),)
        if kind == "frames":
            inputs += (_input("last_frame", "sub/beach-end.png", "b" * 64),)
        inputs += (_input("sidecar", sidecar, "c" * 64),)
    base: dict[str, Any] = {
        "job_id": "j1",
        "state": state,
        "source": source,
        "sidecar": sidecar,
        "created_at": 1.0,
        "updated_at": 2.0,
        "model": "m",
        "prompt": "p",
        "text": "p --resolution 720p",
        "task_id": "t1",
        "submitted_at": 1757535045.0,
        "completed_at": 1757535100.0,
        "usage": {"completion_tokens": 10},
        "image_sha256": None if kind in ("text", "reference") else "a" * 64,
        "kind": kind,
        "inputs": inputs,
        "output": "sub/beach.mp4",
        "video_sha256": VIDEO_SHA,
        "video_bytes": len(VIDEO),
    }
    return Job(**{**base, **fields})


def test_output_metadata_of_an_image_drop_keeps_every_field_and_adds_its_kind() -> None:
    """An image drop's JSON: the docs/design.md, "Outputs" fields, ``kind: image``, the image's
    hash, and the recorded cost."""
    cost = {"cents": 20, "per": "generation", "rate": "0.20", "settled": True}
    meta = _output_metadata(job_of("image", cost=cost))
    assert meta == {
        "job_id": "j1",
        "kind": "image",
        "task_id": "t1",
        "model": "m",
        "prompt": "p",
        "text": "p --resolution 720p",
        "source": "sub/beach.jpg",
        "source_sha256": "a" * 64,
        "video_sha256": VIDEO_SHA,
        "video_bytes": len(VIDEO),
        "usage": {"completion_tokens": 10},
        "cost": {"amount": 0.2, "currency": "USD", "per": "generation"},
        "submitted_at": "2025-09-10T20:10:45Z",
        "completed_at": "2025-09-10T20:11:40Z",
    }


def test_output_metadata_cost_per_second_priced_now_or_none_for_a_copy() -> None:
    """A per-second cost shows its seconds; a record without a cost (written before
    costs were kept) is priced at today's prices in budget.currency; a duplicate
    paid nothing: null."""
    cost = {"cents": 144, "per": "second", "rate": "0.24", "seconds": 6, "settled": True}
    meta = _output_metadata(job_of("image", cost=cost))
    assert meta["cost"] == {"amount": 1.44, "currency": "USD", "per": "second", "seconds": 6}
    prices = BudgetPrices.from_config(BudgetConfig(currency="EUR", prices={"m": 0.37}))
    older = _output_metadata(job_of("image"), prices)
    assert older["cost"] == {"amount": 0.37, "currency": "EUR", "per": "generation"}
    copy = _output_metadata(job_of("image", duplicate_of="j0"), prices)
    assert copy["cost"] is None and copy["duplicate_of"] == "j0"


def test_output_metadata_of_a_v1_record_takes_the_image_hash() -> None:
    """A record without inputs (schema v1) names ``image_sha256`` as the source's hash."""
    meta = _output_metadata(job_of("image", inputs=(), image_sha256="d" * 64))
    assert meta["source_sha256"] == "d" * 64 and meta["kind"] == "image"
    assert "last_frame_sha256" not in meta


def test_output_metadata_of_a_frames_drop_names_its_end_image() -> None:
    """Frames add the end image's inbox path and hash; the source stays the image."""
    meta = _output_metadata(job_of("frames", duplicate_of="j0"))
    assert meta["kind"] == "frames"
    assert meta["source"] == "sub/beach.jpg" and meta["source_sha256"] == "a" * 64
    assert meta["last_frame"] == "sub/beach-end.png"
    assert meta["last_frame_sha256"] == "b" * 64
    assert meta["duplicate_of"] == "j0"


def test_output_metadata_of_a_text_drop_is_the_sidecar_s() -> None:
    """A text drop's ``source`` and ``source_sha256`` are its sidecar's (docs/design.md, "The
    sidecar")."""
    meta = _output_metadata(job_of("text"))
    assert meta["kind"] == "text"
    assert meta["source"] == "sub/poem.yaml" and meta["source_sha256"] == "c" * 64
    assert "last_frame" not in meta and "last_frame_sha256" not in meta


def test_output_metadata_of_a_reference_drop_lists_its_images_in_order() -> None:
    """A reference drop's ``source`` and ``source_sha256`` are its sidecar's; it adds
    ``reference_sha256s`` (and the images' paths) in the sidecar's order."""
    meta = _output_metadata(job_of("reference"))
    assert meta["kind"] == "reference"
    assert meta["source"] == "sub/ad.yaml" and meta["source_sha256"] == "c" * 64
    assert meta["reference_sha256s"] == ["e" * 64, "b" * 64]
    assert meta["references"] == ["sub/shoe.jpg", "sub/heel.png"]
    assert "last_frame" not in meta and "last_frame_sha256" not in meta
    for kind in ("image", "frames", "text"):
        assert "reference_sha256s" not in _output_metadata(job_of(kind))


def write_inputs(inbox: Path, job: Job) -> dict[str, bytes]:
    """Create the job's input files in the inbox; return their bytes by inbox path."""
    data: dict[str, bytes] = {}
    for item in job.inputs:
        path = inbox / item.path
        path.parent.mkdir(parents=True, exist_ok=True)
        data[item.path] = f"bytes of {item.path}".encode()
        path.write_bytes(data[item.path])
    return data


async def test_a_frames_job_is_placed_with_its_three_files_under_one_suffix(
    tmp_path: Path,
) -> None:
    """The video and its JSON go to the outbox; the image, the end image and the sidecar
    to done/, all with -2 when only the end image's name was taken there."""
    engine, store, _, _ = make_engine(tmp_path)
    job = job_of("frames", state=State.SUCCEEDED, output=None, video_sha256=None)
    inputs = write_inputs(tmp_path / "inbox", job)
    # finish_moves checks each input's identity: record the ones the files really have.
    job = replace(job, inputs=tuple(_real(tmp_path / "inbox", i) for i in job.inputs))
    store.put(job)
    (tmp_path / "done" / "sub").mkdir(parents=True)
    (tmp_path / "done" / "sub" / "beach-end.png").write_bytes(b"an earlier drop's end")
    staging = engine.placement.staging(job)
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.write_bytes(VIDEO)

    await engine.placement.place(job, VIDEO_SHA, len(VIDEO))

    stored = store.get("j1")
    assert stored is not None and stored.state is State.DONE
    assert stored.moved_to == (
        ("sub/beach.jpg", "done/sub/beach-2.jpg"),
        ("sub/beach-end.png", "done/sub/beach-end-2.png"),
        ("sub/beach.yaml", "done/sub/beach-2.yaml"),
    )
    for src, dst in stored.moved_to:
        assert (tmp_path / dst).read_bytes() == inputs[src]
        assert not (tmp_path / "inbox" / src).exists()
    assert (tmp_path / "done/sub/beach-end.png").read_bytes() == b"an earlier drop's end"
    assert (tmp_path / "outbox/sub/beach.mp4").read_bytes() == VIDEO
    meta = json.loads((tmp_path / "outbox/sub/beach.json").read_text())
    assert meta["kind"] == "frames" and meta["last_frame"] == "sub/beach-end.png"
    assert meta["last_frame_sha256"] == sha256(inputs["sub/beach-end.png"])
    assert meta["source_sha256"] == sha256(inputs["sub/beach.jpg"])


def _real(inbox: Path, item: InputFile) -> InputFile:
    st = (inbox / item.path).stat()
    sha = sha256((inbox / item.path).read_bytes())
    return replace(
        item, sha256=sha, size=st.st_size, dev=st.st_dev, ino=st.st_ino, mtime_ns=st.st_mtime_ns
    )


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (
            "frames",
            [
                "beach-2.error.json",
                "beach-2.jpg",
                "beach-2.yaml",
                "beach-end-2.png",
                "beach.error.json",
            ],
        ),
        ("text", ["beach.error.json", "poem.error.json", "poem.yaml"]),
        (
            "reference",
            ["ad.error.json", "ad.yaml", "beach.error.json", "heel.png", "shoe.jpg"],
        ),
    ],
)
async def test_a_failed_drop_moves_all_its_files_beside_the_lead_s_report(
    tmp_path: Path, kind: str, expected: list[str]
) -> None:
    """A failed frames drop moves its three files to failed/ with one suffix (the lead's
    report name was taken); a text drop its sidecar, beside ``poem.error.json``."""
    engine, store, _, _ = make_engine(tmp_path)
    job = job_of(kind, state=State.SUBMITTED, output=None, video_sha256=None, video_bytes=None)
    write_inputs(tmp_path / "inbox", job)
    job = replace(job, inputs=tuple(_real(tmp_path / "inbox", i) for i in job.inputs))
    store.put(job)
    (tmp_path / "failed" / "sub").mkdir(parents=True)
    (tmp_path / "failed" / "sub" / "beach.error.json").write_text('{"job_id": "j0"}')

    await engine.apply(job, Stage.POLL, Fail(E.TaskFailed("it failed", task_id="t1")))

    stored = store.get("j1")
    assert stored is not None and stored.state is State.FAILED
    assert sorted(p.name for p in (tmp_path / "failed" / "sub").iterdir()) == expected
    assert [p for p in (tmp_path / "inbox").rglob("*") if p.is_file()] == []
    report_name = {"text": "poem.error.json", "reference": "ad.error.json"}.get(
        kind, "beach-2.error.json"
    )
    report = json.loads((tmp_path / "failed" / "sub" / report_name).read_text())
    assert report["job_id"] == "j1" and report["code"] == "task_failed"
    assert report["source"] == job.source


async def test_a_reference_job_is_placed_with_all_its_files_under_one_suffix(
    tmp_path: Path,
) -> None:
    """The video is named after the sidecar; the sidecar and its images go to done/ all
    with -2 when only one image's name was taken there; the JSON has the images' hashes
    in the sidecar's order."""
    engine, store, _, _ = make_engine(tmp_path)
    job = job_of("reference", state=State.SUCCEEDED, output=None, video_sha256=None)
    inputs = write_inputs(tmp_path / "inbox", job)
    job = replace(job, inputs=tuple(_real(tmp_path / "inbox", i) for i in job.inputs))
    store.put(job)
    (tmp_path / "done" / "sub").mkdir(parents=True)
    (tmp_path / "done" / "sub" / "heel.png").write_bytes(b"an earlier drop's image")
    staging = engine.placement.staging(job)
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.write_bytes(VIDEO)

    await engine.placement.place(job, VIDEO_SHA, len(VIDEO))

    stored = store.get("j1")
    assert stored is not None and stored.state is State.DONE
    assert stored.moved_to == (
        ("sub/ad.yaml", "done/sub/ad-2.yaml"),
        ("sub/shoe.jpg", "done/sub/shoe-2.jpg"),
        ("sub/heel.png", "done/sub/heel-2.png"),
    )
    for src, dst in stored.moved_to:
        assert (tmp_path / dst).read_bytes() == inputs[src]
    assert (tmp_path / "outbox/sub/ad.mp4").read_bytes() == VIDEO
    meta = json.loads((tmp_path / "outbox/sub/ad.json").read_text())
    assert meta["kind"] == "reference" and meta["source"] == "sub/ad.yaml"
    assert meta["source_sha256"] == sha256(inputs["sub/ad.yaml"])
    assert meta["reference_sha256s"] == [
        sha256(inputs[p]) for p in ("sub/shoe.jpg", "sub/heel.png")
    ]
