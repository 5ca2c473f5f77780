"""Identity and duplicates (docs/design.md, "Identity and duplicates"): ``seedance-watch retry``
and dedupe."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from seedance_watch.commands.requeue import requeue
from seedance_watch.commands.status import format_status, status_report
from seedance_watch.config import Config
from seedance_watch.core.jobs import InputFile, Job, State
from seedance_watch.files.outbox import error_report_rel, plan_moves
from seedance_watch.ledger.jsonl import JsonlReader, Ledger
from seedance_watch.simulator import Simulator
from seedance_watch.testing.s3emulator import S3Emulator

from .daemon_harness import DaemonProcess, daemon_env, files_under, run_once, wait_for, write_config
from .simhelpers import quick_tasks

pytestmark = pytest.mark.timeout(90)

WritePair = Callable[..., tuple[Path, Path]]
BAD_SIDECAR = "prompt: x\nresolutoin: 720p\n"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = quick_tasks()
    with Simulator(config) as simulator:
        yield simulator


def retry(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seedance_watch", "retry", "--config", str(config_path), *args],
        capture_output=True,
        text=True,
        env=daemon_env(),
        timeout=60,
    )


# --- retry ------------------------------------------------------------------------------


def test_retry_job_id_moves_the_pair_back_and_removes_the_report(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """``retry JOB_ID`` (daemon stopped) moves image and sidecar from failed/ to the inbox,
    removes NAME.error.json, and leaves other failed jobs alone; retrying it again, or an
    unknown id, is reported and exits 1."""
    config_path = write_config(tmp_path, s3_server, sim)
    inbox = tmp_path / "inbox"
    write_pair(inbox / "sub", "a", sidecar=BAD_SIDECAR)
    write_pair(inbox, "b", sidecar=BAD_SIDECAR)
    first, _ = run_once(config_path)
    assert first.exit_code == 4 and len(first.summary.failed) == 2
    a_id = json.loads((tmp_path / "failed" / "sub" / "a.error.json").read_text())["job_id"]

    out = retry(config_path, a_id)

    assert out.returncode == 0, out.stderr
    assert a_id in out.stdout
    assert files_under(inbox) == ["sub/a.jpg", "sub/a.yaml"]
    assert files_under(tmp_path / "failed") == ["b.error.json", "b.jpg", "b.yaml"]

    again = retry(config_path, a_id)
    assert again.returncode == 1
    assert "already retried" in again.stdout + again.stderr
    unknown = retry(config_path, "0123456789abcdef")
    assert unknown.returncode == 1
    assert "no such job" in unknown.stdout + unknown.stderr
    assert files_under(inbox) == ["sub/a.jpg", "sub/a.yaml"]


def test_retry_uses_a_free_name_when_the_inbox_has_that_name(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """When the inbox already holds NAME.jpg, the pair comes back as NAME-2.jpg +
    NAME-2.yaml (a pair still), and the file already there is untouched."""
    config_path = write_config(tmp_path, s3_server, sim, pair_timeout=3600)
    inbox = tmp_path / "inbox"
    write_pair(inbox, "beach", sidecar=BAD_SIDECAR)
    first, _ = run_once(config_path)
    assert first.exit_code == 4
    (inbox / "beach.jpg").write_bytes(b"a newer drop, not ours")

    out = retry(config_path, "--failed")

    assert out.returncode == 0, out.stderr
    assert files_under(inbox) == ["beach-2.jpg", "beach-2.yaml", "beach.jpg"]
    assert (inbox / "beach.jpg").read_bytes() == b"a newer drop, not ours"
    assert (inbox / "beach-2.yaml").read_text() == BAD_SIDECAR
    assert files_under(tmp_path / "failed") == []

    # Once retried, the old job is history: ``--failed`` has nothing more to do.
    again = retry(config_path, "--failed")
    assert again.returncode == 0, again.stderr
    assert "no failed jobs to retry" in again.stdout
    assert files_under(inbox) == ["beach-2.jpg", "beach-2.yaml", "beach.jpg"]


def failed_drop(tmp_path: Path, job_id: str, files: dict[str, str]) -> Config:
    """A FAILED job of ``files`` (inbox path → role) recorded in the ledger, its inputs
    in failed/ under the names :func:`plan_moves` gave them, beside its report."""
    config = Config.model_validate(
        {
            "paths": {k: str(tmp_path / k) for k in ("inbox", "outbox", "done", "failed", "state")},
            "storage": {"bucket": "b"},
        }
    )
    for folder in ("inbox", "failed", "state"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    paths = list(files)
    moves = plan_moves(config.paths.inbox, "", paths, "failed", config.paths.failed)
    for src, dst in moves:
        (tmp_path / dst).write_text(f"bytes of {src}")
    (config.paths.failed / error_report_rel(moves)).write_text(json.dumps({"job_id": job_id}))
    inputs = tuple(
        InputFile(role=role, path=path, sha256="0" * 64, size=1, dev=1, ino=1, mtime_ns=1)
        for path, role in files.items()
    )
    roles = set(files.values())
    job = Job(
        job_id=job_id,
        state=State.FAILED,
        source=paths[0],
        sidecar=next(p for p, role in files.items() if role == "sidecar"),
        created_at=1.0,
        updated_at=2.0,
        kind="frames"
        if "last_frame" in roles
        else "reference"
        if "reference" in roles
        else "image"
        if "image" in roles
        else "text",
        inputs=inputs,
        error={"code": "task_failed", "message": "it failed"},
        moved_to=moves,
    )
    with Ledger.open(config.paths.state) as ledger:
        ledger.put(job)
    return config


FRAMES = {"beach.jpg": "image", "beach-end.png": "last_frame", "beach.yaml": "sidecar"}


def test_retry_brings_back_the_three_files_of_a_frames_drop(tmp_path: Path) -> None:
    """A frames job's image, end image and sidecar all go back to the inbox under their
    own names (from their -2 names in failed/), and its report goes."""
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "beach.error.json").write_text('{"job_id": "earlier"}')
    config = failed_drop(tmp_path, "f1", FRAMES)
    assert files_under(tmp_path / "failed") == [
        "beach-2.error.json",
        "beach-2.jpg",
        "beach-2.yaml",
        "beach-end-2.png",
        "beach.error.json",
    ]

    result = requeue(config, ["f1"])

    assert result.problems == {}
    assert sorted(result.moved["f1"]) == ["beach-end.png", "beach.jpg", "beach.yaml"]
    assert files_under(tmp_path / "inbox") == ["beach-end.png", "beach.jpg", "beach.yaml"]
    assert (tmp_path / "inbox" / "beach-end.png").read_text() == "bytes of beach-end.png"
    assert files_under(tmp_path / "failed") == ["beach.error.json"]  # another job's


def test_retry_of_a_frames_drop_renames_the_pair_but_never_the_end_image(tmp_path: Path) -> None:
    """With beach.jpg taken in the inbox the image and sidecar come back as beach-2.*, the
    end image keeps the name its sidecar gives it; when that name is taken, nothing moves
    and the problem is reported."""
    config = failed_drop(tmp_path, "f1", FRAMES)
    (tmp_path / "inbox" / "beach.jpg").write_bytes(b"a newer drop")

    result = requeue(config, ["f1"])

    assert result.problems == {}
    assert files_under(tmp_path / "inbox") == [
        "beach-2.jpg",
        "beach-2.yaml",
        "beach-end.png",
        "beach.jpg",
    ]
    assert (tmp_path / "inbox" / "beach-2.yaml").read_text() == "bytes of beach.yaml"
    assert files_under(tmp_path / "failed") == []

    config = failed_drop(tmp_path / "two", "f2", FRAMES)
    (tmp_path / "two" / "inbox" / "beach-end.png").write_bytes(b"someone else's")
    result = requeue(config, ["f2"])
    assert "beach-end.png" in result.problems["f2"] and result.moved == {}
    assert files_under(tmp_path / "two" / "inbox") == ["beach-end.png"]
    assert len(files_under(tmp_path / "two" / "failed")) == 4


def test_retry_brings_back_a_text_drop_s_sidecar(tmp_path: Path) -> None:
    """A text job's one file, its sidecar, goes back (as poem-2.yaml when poem.yaml is
    taken) and poem.error.json goes."""
    config = failed_drop(tmp_path, "t1", {"poem.yaml": "sidecar"})
    assert files_under(tmp_path / "failed") == ["poem.error.json", "poem.yaml"]
    (tmp_path / "inbox" / "poem.yaml").write_text("prompt: a newer poem\n")

    result = requeue(config, [], all_failed=True)

    assert result.problems == {} and result.moved == {"t1": ["poem-2.yaml"]}
    assert (tmp_path / "inbox" / "poem-2.yaml").read_text() == "bytes of poem.yaml"
    assert files_under(tmp_path / "failed") == []


REFERENCES = {"ad.yaml": "sidecar", "shoe.jpg": "reference", "shoe-2.png": "reference"}


def test_retry_brings_back_every_file_of_a_reference_drop(tmp_path: Path) -> None:
    """The sidecar and its images come back from their -2 names in failed/; with the
    sidecar's name taken in the inbox it alone takes a free name, while the images keep
    the names the sidecar lists them by."""
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "ad.error.json").write_text('{"job_id": "earlier"}')
    config = failed_drop(tmp_path, "r1", REFERENCES)
    assert files_under(tmp_path / "failed") == [
        "ad-2.error.json",
        "ad-2.yaml",
        "ad.error.json",
        "shoe-2-2.png",
        "shoe-2.jpg",
    ]
    (tmp_path / "inbox" / "ad.yaml").write_text("prompt: a newer drop\n")

    result = requeue(config, ["r1"])

    assert result.problems == {}
    assert sorted(result.moved["r1"]) == ["ad-2.yaml", "shoe-2.png", "shoe.jpg"]
    assert files_under(tmp_path / "inbox") == ["ad-2.yaml", "ad.yaml", "shoe-2.png", "shoe.jpg"]
    assert (tmp_path / "inbox" / "shoe.jpg").read_text() == "bytes of shoe.jpg"
    assert (tmp_path / "inbox" / "ad-2.yaml").read_text() == "bytes of ad.yaml"
    assert files_under(tmp_path / "failed") == ["ad.error.json"]  # another job's


def test_retry_of_a_reference_drop_whose_image_name_is_taken_stays(tmp_path: Path) -> None:
    """A listed image's name taken in the inbox: nothing moves, the problem names it."""
    config = failed_drop(tmp_path, "r1", REFERENCES)
    (tmp_path / "inbox" / "shoe-2.png").write_bytes(b"someone else's")
    result = requeue(config, ["r1"])
    assert "shoe-2.png" in result.problems["r1"] and result.moved == {}
    assert files_under(tmp_path / "inbox") == ["shoe-2.png"]
    assert len(files_under(tmp_path / "failed")) == 4


def test_status_names_the_kind_of_a_job_that_is_not_image_to_video(tmp_path: Path) -> None:
    """``status`` prints ``(frames)``/``(text)`` after a job's source; image jobs stay as
    they were; ``--json`` has ``kind`` for every job."""
    failed_drop(tmp_path, "f1", FRAMES)
    config = failed_drop(tmp_path / "t", "t1", {"poem.yaml": "sidecar"})
    report = status_report(JsonlReader(tmp_path / "state"))
    assert [j["kind"] for j in report["jobs"]] == ["frames"]
    assert "beach.jpg (frames)  task_failed: it failed" in format_status(report)
    text = status_report(JsonlReader(config.paths.state))
    assert "poem.yaml (text)" in format_status(text)
    references = status_report(
        JsonlReader(failed_drop(tmp_path / "r", "r1", REFERENCES).paths.state)
    )
    assert references["jobs"][0]["kind"] == "reference"
    assert "ad.yaml (reference)  task_failed" in format_status(references)
    image = {**text, "jobs": [{**text["jobs"][0], "kind": "image", "source": "a.jpg"}]}
    assert "a.jpg  task_failed" in format_status(image) and "(image)" not in format_status(image)


def test_retry_failed_while_the_daemon_runs_makes_new_drops(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """``retry --failed`` while the daemon runs: the inputs come back, the daemon sees a
    new drop (a new job id) and this time, the sidecar fixed, makes the video."""
    config_path = write_config(tmp_path, s3_server, sim)
    inbox = tmp_path / "inbox"
    daemon = DaemonProcess(config_path)
    try:
        wait_for(lambda: daemon.has_event("inbox.watching"), timeout=30)
        write_pair(inbox, "beach", sidecar=BAD_SIDECAR)
        report_path = tmp_path / "failed" / "beach.error.json"
        wait_for(lambda: report_path.exists() and not files_under(inbox), timeout=30)
        old_id = json.loads(report_path.read_text())["job_id"]
        # The user fixes the sidecar in failed/, then retries.
        (tmp_path / "failed" / "beach.yaml").write_text("prompt: fixed now\n")

        out = retry(config_path, "--failed")

        assert out.returncode == 0, out.stderr
        assert not report_path.exists()
        wait_for(lambda: (tmp_path / "outbox" / "beach.json").exists(), timeout=30)
        meta = json.loads((tmp_path / "outbox" / "beach.json").read_text())
        assert meta["job_id"] != old_id and meta["prompt"] == "fixed now"
        assert len(sim.submits) == 1
    finally:
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=40) == 0
    assert files_under(tmp_path / "done") == ["beach.jpg", "beach.yaml"]


def status_json(config_path: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "seedance_watch", "status", "--json", "--config", str(config_path)],
        capture_output=True,
        text=True,
        env=daemon_env(),
        timeout=60,
        check=True,
    )
    report: dict[str, object] = json.loads(done.stdout)
    return report


def test_a_retried_job_tells_one_story_with_its_rerun(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """retry → rerun → status: done 1, retried 1 (not failed 1); the original points at
    its rerun (retried_as), the rerun back (retry_of); a second ``retry --failed`` finds
    nothing to retry and ``retry OLD`` says which job its drop became."""
    config_path = write_config(tmp_path, s3_server, sim)
    write_pair(tmp_path / "inbox", "beach", sidecar=BAD_SIDECAR)
    first, _ = run_once(config_path)
    (old_id,) = first.summary.failed
    report = json.loads((tmp_path / "failed" / "beach.error.json").read_text())
    assert report["hint"].endswith(f"then run: seedance-watch retry {old_id}")  # this very job
    (tmp_path / "failed" / "beach.yaml").write_text("prompt: fixed now\n")
    assert retry(config_path, "--failed").returncode == 0
    second, _ = run_once(config_path)
    (new_id,) = second.summary.done
    report = status_json(config_path)
    assert report["counts"] == {"done": 1, "retried": 1}
    jobs = {job["job_id"]: job for job in report["jobs"]}  # type: ignore[attr-defined]
    assert jobs[old_id]["state"] == "retried" and jobs[old_id]["retried_as"] == new_id
    assert jobs[new_id]["retry_of"] == old_id and jobs[new_id]["retried_as"] is None
    again = retry(config_path, "--failed")
    assert again.returncode == 0 and "no failed jobs to retry" in again.stdout
    named = retry(config_path, old_id)
    assert named.returncode == 1 and f"already retried: its drop became job {new_id}" in (
        named.stderr
    )
    text = subprocess.run(
        [sys.executable, "-m", "seedance_watch", "status", "--config", str(config_path)],
        capture_output=True,
        text=True,
        env=daemon_env(),
        timeout=60,
        check=True,
    ).stdout
    assert "done 1, retried 1" in text and f"retried as {new_id}" in text


def test_a_retry_never_moves_the_files_of_a_newer_job(tmp_path: Path) -> None:
    """A's drop went back to the inbox by hand (no retry), became job B and failed again
    under the same names: failed/ holds B's files now.  ``retry A`` is refused naming B,
    and nothing moves."""
    config = failed_drop(tmp_path, "A", {"beach.jpg": "image", "beach.yaml": "sidecar"})
    with Ledger.open(config.paths.state) as ledger:
        older = ledger.get("A")
        assert older is not None
        ledger.put(dataclasses.replace(older, created_at=0.5, seq=older.seq + 1))
        newer = dataclasses.replace(older, job_id="B", created_at=5.0)
        ledger.put(newer)
    (tmp_path / "failed" / "beach.jpg").write_bytes(b"B's own image, not A's")
    result = requeue(config, ["A"])
    assert result.moved == {} and "belongs to job B" in result.problems["A"]
    assert files_under(tmp_path / "inbox") == []
    assert (tmp_path / "failed" / "beach.jpg").read_bytes() == b"B's own image, not A's"


@pytest.mark.parametrize("code", ["submit_ambiguous", "task_timeout"])
def test_retry_failed_skips_a_job_that_may_be_billed_unless_asked(
    tmp_path: Path, code: str
) -> None:
    """A submit_ambiguous or task_timeout job may exist at the gateway and be billed:
    ``--failed`` skips it and says why; naming it needs include_ambiguous; with it, the
    files go back."""
    config = failed_drop(tmp_path, "amb", {"beach.jpg": "image", "beach.yaml": "sidecar"})
    with Ledger.open(config.paths.state) as ledger:
        job = ledger.get("amb")
        assert job is not None
        ledger.put(dataclasses.replace(job, error={"code": code}, seq=job.seq + 1))
    bulk = requeue(config, [], all_failed=True)
    assert bulk.moved == {} and "may exist at the gateway and be billed" in bulk.skipped["amb"]
    named = requeue(config, ["amb"])
    assert named.moved == {} and "--include-ambiguous" in named.problems["amb"]
    assert files_under(tmp_path / "inbox") == []
    forced = requeue(config, ["amb"], include_ambiguous=True)
    assert sorted(forced.moved["amb"]) == ["beach.jpg", "beach.yaml"]


def test_retry_without_arguments_is_a_usage_error(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """``retry`` with neither JOB_ID nor --failed exits 2 and says what to give."""
    out = retry(write_config(tmp_path, s3_server, sim))
    assert out.returncode == 2 and "--failed" in out.stderr


# --- dedupe -----------------------------------------------------------------------------


def test_duplicate_drop_copies_the_video_with_duplicate_of(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """An identical pair dropped again (in another subfolder) costs no submit: the earlier
    video is copied (a copy, not a link), its JSON says duplicate_of, inputs go to done/."""
    config_path = write_config(tmp_path, s3_server, sim)
    write_pair(tmp_path / "inbox", "beach")
    first, _ = run_once(config_path)
    write_pair(tmp_path / "inbox" / "again", "beach")
    second, _ = run_once(config_path)
    assert first.exit_code == second.exit_code == 0
    assert len(sim.submits) == 1
    original = tmp_path / "outbox" / "beach.mp4"
    copy = tmp_path / "outbox" / "again" / "beach.mp4"
    meta = json.loads(copy.with_suffix(".json").read_text())
    assert meta["duplicate_of"] == first.summary.done[0]
    assert meta["job_id"] == second.summary.done[0] != meta["duplicate_of"]
    assert meta["source"] == "again/beach.jpg"
    assert copy.read_bytes() == original.read_bytes()
    assert copy.stat().st_ino != original.stat().st_ino
    assert files_under(tmp_path / "done") == [
        "again/beach.jpg",
        "again/beach.yaml",
        "beach.jpg",
        "beach.yaml",
    ]


def test_failed_jobs_never_dedupe(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """A drop identical to a job that failed (its task failed) is submitted again."""
    sim.configure(fail_task_rate=1.0)
    config_path = write_config(tmp_path, s3_server, sim)
    write_pair(tmp_path / "inbox", "beach")
    first, _ = run_once(config_path)
    assert first.exit_code == 4
    sim.configure(fail_task_rate=0.0)
    write_pair(tmp_path / "inbox", "beach")
    second, _ = run_once(config_path)
    assert second.exit_code == 0
    assert len(sim.submits) == 2
    assert "duplicate_of" not in json.loads((tmp_path / "outbox" / "beach.json").read_text())


def test_dedupe_target_gone_from_the_outbox_makes_a_new_job(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """If the earlier video was removed (or changed) in the outbox, a new drop is submitted."""
    config_path = write_config(tmp_path, s3_server, sim)
    write_pair(tmp_path / "inbox", "beach")
    write_pair(tmp_path / "inbox", "dune")
    first, _ = run_once(config_path)
    assert first.exit_code == 0 and len(sim.submits) == 2
    (tmp_path / "outbox" / "beach.mp4").unlink()
    (tmp_path / "outbox" / "dune.mp4").write_bytes(b"edited by the user")
    write_pair(tmp_path / "inbox" / "again", "beach")
    write_pair(tmp_path / "inbox" / "again", "dune")
    second, _ = run_once(config_path)
    assert second.exit_code == 0
    assert len(sim.submits) == 4
    for stem in ("beach", "dune"):
        meta = json.loads((tmp_path / "outbox" / "again" / f"{stem}.json").read_text())
        assert "duplicate_of" not in meta
        video = (tmp_path / "outbox" / "again" / f"{stem}.mp4").read_bytes()
        assert video == sim.video_bytes(meta["task_id"])


def test_dedupe_false_submits_again(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """With ``dedupe: false`` an identical drop is a paid task like any other."""
    config_path = write_config(tmp_path, s3_server, sim, extra="dedupe: false\n")
    write_pair(tmp_path / "inbox", "beach")
    first, _ = run_once(config_path)
    write_pair(tmp_path / "inbox", "beach")
    second, _ = run_once(config_path)
    assert first.exit_code == second.exit_code == 0
    assert len(sim.submits) == 2
    meta = json.loads((tmp_path / "outbox" / "beach-2.json").read_text())
    assert "duplicate_of" not in meta and meta["task_id"] == sim.submits[1].task_id
