"""Defects a line-by-line review found (the hardening issue), each with the test that
failed before its fix: error reports never overwrite each other, a file error during
intake never leaves a job stuck, staging and bucket objects never leak."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest

from seedance_watch import errors as E
from seedance_watch.core.jobs import Job, State
from seedance_watch.files import outbox
from seedance_watch.files.outbox import OutputConflict, write_error_report
from seedance_watch.simulator import Simulator
from seedance_watch.testing.s3emulator import S3Emulator

from .fakes import make_engine, seed
from .helpers import BUCKET, WritePair, files_under, run_once, write_config

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


def test_a_report_of_another_job_is_never_replaced(tmp_path: Path) -> None:
    """write_error_report refuses a name that holds another job's report (defect 3)."""
    write_error_report(failed_root=tmp_path, report_rel="x.error.json", report={"job_id": "a"})
    with pytest.raises(OutputConflict):
        write_error_report(
            failed_root=tmp_path, report_rel="x.error.json", report={"job_id": "b", "code": "c"}
        )
    assert json.loads((tmp_path / "x.error.json").read_text()) == {"job_id": "a"}
    # The same job's own report is rewritten idempotently.
    write_error_report(failed_root=tmp_path, report_rel="x.error.json", report={"job_id": "a"})


async def test_two_failures_of_one_stem_plan_different_names(tmp_path: Path) -> None:
    """A failure recorded but not yet carried out holds its names (also after a restart):
    a second job of the same stem plans ``x-2.*`` instead of the same report (defect 3)."""
    engine, store, _, _ = make_engine(tmp_path)
    inbox = tmp_path / "inbox"
    (inbox / "x.jpg").write_bytes(b"not really")
    (inbox / "x.yaml").write_text("prompt: p\n")
    first = Job(
        job_id="a", state=State.FAILING, source="x.jpg", sidecar=None, created_at=1, updated_at=1,
        error={"code": "unsafe_path", "message": "m"},
        moved_to=(("x.jpg", "failed/x.jpg"),),
    )  # fmt: skip
    store.put(first)
    engine.placement.reserve(first)  # as recovery does, before anything new is planned
    second = Job(
        job_id="b", state=State.NEW, source="x.yaml", sidecar=None, created_at=2, updated_at=2
    )
    await engine.placement.fail(second, E.MissingImage("no image"))
    b = store.get("b")
    assert b is not None and b.state is State.FAILED
    assert b.moved_to == (("x.yaml", "failed/x-2.yaml"),)
    await engine.placement.finish_failing(store.get("a"))  # type: ignore[arg-type]
    reports = {
        p.name: json.loads(p.read_text())["job_id"] for p in (tmp_path / "failed").glob("*.json")
    }
    assert reports == {"x.error.json": "a", "x-2.error.json": "b"}


def test_a_file_error_while_failing_a_drop_is_retried_and_once_ends(
    tmp_path: Path,
    s3_server: S3Emulator,
    sim: Simulator,
    write_pair: WritePair,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failing file step at intake (the moves of an invalid drop) is retried like any
    finish step: ``run --once`` ends with the drop in failed/ (defect 4: it waited for ever)."""
    config_path = write_config(tmp_path, s3_server, sim)
    write_pair(tmp_path / "inbox", "bad", sidecar="prompt: ''\n")
    real = outbox.finish_moves
    calls = {"n": 0}

    def flaky(**kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.EIO, "Input/output error")
        real(**kwargs)

    monkeypatch.setattr("seedance_watch.pipeline.placement.finish_moves", flaky)
    result, _ = run_once(config_path)
    assert result.exit_code == 4 and len(result.summary.failed) == 1
    assert calls["n"] == 2
    assert files_under(tmp_path / "inbox") == []
    assert sorted(files_under(tmp_path / "failed")) == ["bad.error.json", "bad.jpg", "bad.yaml"]


def test_the_bucket_is_emptied_before_a_job_is_finished(
    tmp_path: Path,
    s3_server: S3Emulator,
    sim: Simulator,
    write_pair: WritePair,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The upload is deleted before ``Finished`` is written, so a crash in between deletes
    again on recovery instead of leaking the object (defect 12)."""
    from seedance_watch.files.storage import Storage

    order: list[str] = []
    real_delete = Storage.delete

    def delete(self: Storage, key: str) -> None:
        order.append(f"delete {key.rsplit('/', 1)[-1]}")
        real_delete(self, key)

    monkeypatch.setattr(Storage, "delete", delete)
    from seedance_watch.ledger.jsonl import Ledger

    real_put = Ledger.put

    def put(self: Ledger, job: Job) -> None:
        if job.state is State.DONE:
            order.append("finished")
        real_put(self, job)

    monkeypatch.setattr(Ledger, "put", put)
    config_path = write_config(tmp_path, s3_server, sim)
    write_pair(tmp_path / "inbox", "beach")
    result, _ = run_once(config_path)
    assert result.exit_code == 0
    assert order == ["delete image.jpg", "finished"]
    listed = s3_server.client().list_objects_v2(Bucket=BUCKET).get("Contents", [])
    (job_id,) = result.summary.done
    assert [o["Key"] for o in listed if job_id in o["Key"]] == []


async def test_staging_is_removed_when_the_output_name_is_contested(tmp_path: Path) -> None:
    """An OutputConflict fails the job and removes its staged video at once (defect 12)."""
    engine, store, _, _ = make_engine(tmp_path)
    (tmp_path / "inbox" / "beach.jpg").write_bytes(b"x")
    (tmp_path / "inbox" / "beach.yaml").write_text("prompt: p\n")
    job = seed(store, State.SUCCEEDED, task_id="t", video_url="http://v/x.mp4")
    staging = engine.placement.staging(job)
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.write_bytes(b"\0\0\0\x18ftypmp42" + b"v" * 64)

    def contested(**_: Any) -> None:
        raise OutputConflict("beach.mp4 is someone else's", path="beach.mp4")

    import seedance_watch.pipeline.placement as placement_mod

    original = placement_mod.place_output
    placement_mod.place_output = contested  # type: ignore[assignment]
    try:
        await engine.placement.place(job, "ab" * 32, 72)
    finally:
        placement_mod.place_output = original
    stored = store.get(job.job_id)
    assert stored is not None and stored.state is State.FAILED
    assert not staging.exists()


def test_a_file_replaced_under_its_name_mid_job_is_never_uploaded_or_moved_as_the_old(
    tmp_path: Path,
    s3_server: S3Emulator,
    sim: Simulator,
    write_pair: WritePair,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job owns the exact files it examined (docs/design.md, "A job owns the files it examined",
    defect 2): the image is replaced right after intake hashed it; the job uploads nothing it did
    not hash (it fails as input_replaced, nothing is submitted) and the new file stays in the
    inbox."""
    from seedance_watch.pipeline import intake as intake_mod

    real = intake_mod.examine_drop

    def examine_then_replace(inbox: Path, image: str, *args: Any, **kwargs: Any) -> Any:
        drop = real(inbox, image, *args, **kwargs)
        replacement = inbox / "swap.tmp"
        replacement.write_bytes((inbox / image).read_bytes() + b"\0new")
        replacement.replace(inbox / image)  # a new inode under the same name
        return drop

    monkeypatch.setattr(intake_mod, "examine_drop", examine_then_replace)
    config_path = write_config(tmp_path, s3_server, sim)
    write_pair(tmp_path / "inbox", "beach")
    result, _ = run_once(config_path)
    assert result.exit_code == 4 and len(sim.submits) == 0
    report = json.loads((tmp_path / "failed" / "beach.error.json").read_text())
    assert report["code"] == "input_replaced"
    assert (tmp_path / "inbox" / "beach.jpg").read_bytes().endswith(b"\0new")
    assert not (tmp_path / "failed" / "beach.jpg").exists()


def test_a_symlink_swapped_in_after_intake_fails_the_job_instead_of_retrying_for_ever(
    tmp_path: Path,
    s3_server: S3Emulator,
    sim: Simulator,
    write_pair: WritePair,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A link that takes an examined image's name between intake and upload is never
    followed: the job fails as input_replaced at once (it used to be retried as a file
    error, for ever in daemon mode); nothing is uploaded from the link's target."""
    from seedance_watch.pipeline import intake as intake_mod

    real = intake_mod.examine_drop
    outside = tmp_path / "outside.jpg"

    def examine_then_link(inbox: Path, image: str, *args: Any, **kwargs: Any) -> Any:
        drop = real(inbox, image, *args, **kwargs)
        (inbox / image).rename(outside)
        (inbox / image).symlink_to(outside)
        return drop

    monkeypatch.setattr(intake_mod, "examine_drop", examine_then_link)
    config_path = write_config(tmp_path, s3_server, sim)
    write_pair(tmp_path / "inbox", "beach")
    result, _ = run_once(config_path)
    assert result.exit_code == 4 and result.summary.unfinished is None
    assert len(sim.submits) == 0
    report = json.loads((tmp_path / "failed" / "beach.error.json").read_text())
    assert report["code"] == "input_replaced" and "symbolic link" in report["message"]
    assert (tmp_path / "inbox" / "beach.jpg").is_symlink()  # left alone, never moved
