"""Restart semantics (docs/design.md, "The ledger and crash guarantees"), driven deterministically.

Each test puts a job in a chosen durable state -- by writing the ledger with
``Ledger`` directly, or by SIGKILLing the real daemon at a chosen log event --
then restarts the daemon (``run --once`` in-process) and checks what it did.
The last tests inject disk-full errors at every step of a job.
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from seedance_watch.config import Config, load_config
from seedance_watch.core.jobs import Fail, Job, State, SubmitIntent, Uploaded, apply
from seedance_watch.daemon import RunResult
from seedance_watch.errors import DurabilityError
from seedance_watch.files.drop import examine_drop
from seedance_watch.files.outbox import plan_moves, staging_path
from seedance_watch.ledger.jsonl import Ledger
from seedance_watch.simulator import Simulator
from seedance_watch.testing.s3emulator import S3Emulator

from .batches import check_batch, make_batch
from .daemon_harness import DaemonProcess, daemon_env, files_under, wait_for, write_config
from .daemon_harness import run_once as _run_once
from .simhelpers import quick_tasks

pytestmark = pytest.mark.timeout(90)

WritePair = Callable[..., tuple[Path, Path]]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = quick_tasks()
    with Simulator(config) as simulator:
        yield simulator


def run_once(config_path: Path) -> tuple[RunResult, Config]:
    """``run --once`` in-process; a collection afterwards surfaces any coroutine that was
    never awaited (a RuntimeWarning, an error here) in this test rather than a later one."""
    result = _run_once(config_path)
    gc.collect()
    return result


def new_job(config: Config, image: str, sidecar: str) -> Job:
    """The NEW job the daemon's intake makes of a pair in the inbox."""
    drop = examine_drop(
        config.paths.inbox,
        image,
        sidecar,
        defaults=config.defaults,
        models=config.gateway.models,
        now=time.time(),
    )
    assert drop.error is None
    return drop.job


def put(config: Config, *jobs: Job) -> None:
    with Ledger.open(config.paths.state) as ledger:
        for job in jobs:
            ledger.put(job)


def ledger_jobs(config: Config) -> dict[str, Job]:
    with Ledger.open(config.paths.state) as ledger:
        return dict(ledger.jobs())


def kill_at(config_path: Path, event: str) -> tuple[DaemonProcess, dict[str, Any]]:
    """Start the daemon, SIGKILL it as soon as ``event`` is in its log; return that event."""
    daemon = DaemonProcess(config_path)
    try:
        found = wait_for(
            lambda: next((e for e in daemon.events() if e.get("event") == event), None),
            timeout=30,
            interval=0.005,
        )
        daemon.proc.send_signal(signal.SIGKILL)
    finally:
        daemon.kill()
    return daemon, found


# --- restart semantics ------------------------------------------------------------------


def test_submitting_at_start_up_fails_as_ambiguous_and_is_never_resubmitted(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """A job found in SUBMITTING (intent durable, outcome unknown) fails with code
    submit_ambiguous and a hint; no submit is sent, now or on a later run."""
    config_path = write_config(tmp_path, s3_server, sim)
    config = load_config(config_path, {})
    write_pair(config.paths.inbox, "beach")
    job = new_job(config, "beach.jpg", "beach.yaml")
    job = apply(
        job, Uploaded(uploads=(("image", f"seedance-watch/{job.job_id}/beach.jpg"),)), time.time()
    )
    put(config, apply(job, SubmitIntent(), time.time()))

    result, _ = run_once(config_path)

    assert result.exit_code == 4 and result.summary.failed == [job.job_id]
    report = json.loads((tmp_path / "failed" / "beach.error.json").read_text())
    assert report["code"] == "submit_ambiguous" and report["job_id"] == job.job_id
    assert report["hint"] and report["stage"] == "submitting"
    assert sorted(files_under(tmp_path / "failed")) == [
        "beach.error.json",
        "beach.jpg",
        "beach.yaml",
    ]
    assert sim.submit_attempts == 0
    # A later run (with other work) does not resubmit it either.
    write_pair(config.paths.inbox, "other", sidecar='prompt: "another scene"\n')
    again, _ = run_once(config_path)
    assert again.exit_code == 0 and len(again.summary.done) == 1
    assert [r.text.split(" --")[0] for r in sim.submits] == ["another scene"]
    assert ledger_jobs(config)[job.job_id].state is State.FAILED


def test_submitted_resumes_polling_without_a_new_submit(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """Killed right after the task id was recorded, the restarted daemon polls that task
    and places its video: one submit in all."""
    sim.configure(running_seconds=1.0)
    config_path = write_config(tmp_path, s3_server, sim, poll_interval=0.05)
    write_pair(tmp_path / "inbox", "beach")
    _, submitted = kill_at(config_path, "job.submitted")
    assert ledger_jobs(load_config(config_path, {}))[submitted["job_id"]].state is State.SUBMITTED
    polls_before = sim.polls

    result, _ = run_once(config_path)

    assert result.exit_code == 0 and result.summary.done == [submitted["job_id"]]
    assert len(sim.submits) == 1 and sim.polls > polls_before
    meta = json.loads((tmp_path / "outbox" / "beach.json").read_text())
    assert meta["task_id"] == submitted["task_id"]
    assert (tmp_path / "outbox" / "beach.mp4").read_bytes() == sim.video_bytes(meta["task_id"])


def test_succeeded_with_a_half_written_staging_file_downloads_again(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """Killed during the download (a half-written staging file), the restart downloads
    again and places exactly one complete output; no new submit."""
    sim.configure(slow_reply_rate=1.0, slow_reply_seconds=3.0, faults_on=frozenset({"video"}))
    config_path = write_config(tmp_path, s3_server, sim, poll_interval=0.05)
    config = load_config(config_path, {})
    write_pair(tmp_path / "inbox", "beach")
    _, succeeded = kill_at(config_path, "task.succeeded")
    job = ledger_jobs(config)[succeeded["job_id"]]
    assert job.state is State.SUCCEEDED
    video = sim.video_bytes(succeeded["task_id"])
    staging = staging_path(config.paths.outbox, "", job.job_id)
    staging.write_bytes(video[: len(video) // 2])
    sim.configure(slow_reply_rate=0.0)

    result, _ = run_once(config_path)

    assert result.exit_code == 0 and result.summary.done == [job.job_id]
    assert files_under(tmp_path / "outbox") == ["beach.json", "beach.mp4"]
    assert (tmp_path / "outbox" / "beach.mp4").read_bytes() == video
    assert len(sim.submits) == 1


def test_placing_with_the_output_already_placed_writes_no_second_output(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """A crash after the mp4 got its final name but before the staging name went and the
    inputs moved: the restart finishes the job with that same file, no NAME-2.mp4."""
    config_path = write_config(tmp_path, s3_server, sim)
    config = load_config(config_path, {})
    write_pair(tmp_path / "inbox", "beach")
    first, _ = run_once(config_path)
    assert first.exit_code == 0
    (job_id,) = first.summary.done
    done_job = ledger_jobs(config)[job_id]
    # Roll the disk and the ledger back to "PLACING, mp4 placed, inputs not moved yet".
    for name in ("beach.jpg", "beach.yaml"):
        (tmp_path / "done" / name).rename(tmp_path / "inbox" / name)
    mp4 = tmp_path / "outbox" / "beach.mp4"
    os.link(mp4, staging_path(config.paths.outbox, "", job_id))
    inode = mp4.stat().st_ino
    put(config, dataclasses.replace(done_job, state=State.PLACING, seq=done_job.seq + 1))

    result, _ = run_once(config_path)

    assert result.exit_code == 0 and result.summary.done == [job_id]
    assert files_under(tmp_path / "outbox") == ["beach.json", "beach.mp4"]
    assert mp4.stat().st_ino == inode and mp4.stat().st_nlink == 1
    assert files_under(tmp_path / "done") == ["beach.jpg", "beach.yaml"]
    assert files_under(tmp_path / "inbox") == []
    assert len(sim.submits) == 1
    assert ledger_jobs(config)[job_id].state is State.DONE


def test_failing_at_start_up_completes_the_report_and_the_moves(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """A FAILING record (one input already moved, no report yet) is finished on restart:
    the report is written, the other input moves, the job is FAILED."""
    config_path = write_config(tmp_path, s3_server, sim)
    config = load_config(config_path, {})
    write_pair(tmp_path / "inbox", "beach")
    job = new_job(config, "beach.jpg", "beach.yaml")
    moves = plan_moves(
        config.paths.inbox, "", ["beach.jpg", "beach.yaml"], "failed", config.paths.failed
    )
    error = {"code": "task_failed", "message": "The task failed.", "hint": "Try again."}
    put(config, apply(job, Fail(error=error, moved_to=moves), time.time()))
    (tmp_path / "inbox" / "beach.yaml").rename(tmp_path / "failed" / "beach.yaml")

    result, _ = run_once(config_path)

    assert result.exit_code == 4 and result.summary.failed == [job.job_id]
    assert files_under(tmp_path / "failed") == ["beach.error.json", "beach.jpg", "beach.yaml"]
    assert files_under(tmp_path / "inbox") == []
    report = json.loads((tmp_path / "failed" / "beach.error.json").read_text())
    assert report["code"] == "task_failed" and report["job_id"] == job.job_id
    assert report["stage"] == "new" and report["at"].endswith("Z")
    assert sim.submit_attempts == 0


def test_accepted_then_dropped_submit_is_ambiguous_and_retry_submits_once_more(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """A gateway that accepts a submit and drops the connection: the job fails as
    submit_ambiguous with no automatic resubmission; ``retry --failed`` (the CLI) leaves
    it, saying it may be billed; with ``--include-ambiguous`` it moves the inputs back and
    the next run submits exactly once more (2 submits in all)."""
    sim.configure(submit_accept_then_drop_rate=1.0, faults_on=frozenset({"submit"}))
    config_path = write_config(tmp_path, s3_server, sim)
    image, _ = write_pair(tmp_path / "inbox", "beach")
    image_bytes = image.read_bytes()

    first, _ = run_once(config_path)

    assert first.exit_code == 4
    report = json.loads((tmp_path / "failed" / "beach.error.json").read_text())
    assert report["code"] == "submit_ambiguous" and report["hint"]
    assert sim.submit_attempts == 1 and len(sim.submits) == 1

    sim.configure(submit_accept_then_drop_rate=0.0)

    RETRY = (sys.executable, "-m", "seedance_watch", "retry", "--failed")

    def retry_failed(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*RETRY, *flags, "--config", str(config_path)],
            capture_output=True,
            text=True,
            env=daemon_env(),
            timeout=60,
        )

    skipped = retry_failed()
    assert skipped.returncode == 0, skipped.stderr
    assert f"{first.summary.failed[0]}: skipped: submit_ambiguous" in skipped.stdout
    assert "may exist at the gateway and be billed" in skipped.stdout
    assert files_under(tmp_path / "inbox") == []
    out = retry_failed("--include-ambiguous")
    assert out.returncode == 0, out.stderr
    assert first.summary.failed[0] in out.stdout
    assert files_under(tmp_path / "inbox") == ["beach.jpg", "beach.yaml"]
    assert files_under(tmp_path / "failed") == []

    second, _ = run_once(config_path)

    assert second.exit_code == 0
    assert second.summary.done and second.summary.done[0] != first.summary.failed[0]
    assert len(sim.submits) == 2
    assert {r.image_sha256 for r in sim.submits} == {
        __import__("hashlib").sha256(image_bytes).hexdigest()
    }
    meta = json.loads((tmp_path / "outbox" / "beach.json").read_text())
    assert meta["task_id"] == sim.submits[1].task_id


# --- disk full and I/O errors at each step ----------------------------------------------


class DiskFull:
    """Wrap ``os.<name>`` so that its ``n``-th call on a file under ``root`` raises ENOSPC.

    Calls on other files (the emulators' own, pytest's) pass through uncounted.
    With ``n == 0`` nothing fails and the calls are only counted.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path, names: tuple[str, ...]) -> None:
        self.root = str(root)
        self.calls = 0
        self.n = 0
        self.fired = False
        for name in names:
            original = getattr(os, name)
            monkeypatch.setattr(os, name, self._wrap(original, name))

    def _ours(self, name: str, args: tuple[Any, ...]) -> bool:
        target = args[0] if args else None
        if isinstance(target, int):
            try:
                target = Path(f"/proc/self/fd/{target}").readlink()
            except OSError:
                return False
        return target is not None and os.fspath(target).startswith(self.root)

    def _wrap(self, original: Callable[..., Any], name: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self._ours(name, args):
                self.calls += 1
                if self.calls == self.n:
                    self.fired = True
                    raise OSError(errno.ENOSPC, f"No space left on device (injected {name})")
            return original(*args, **kwargs)

        return wrapper


OPS = {
    "fsync": ("fsync",),
    "write": ("write",),
    "rename": ("rename", "replace"),
    "link": ("link",),
}
#: Failure points tried per operation (spread evenly over the calls a job makes).
POINTS = 5


def _points(total: int) -> list[int]:
    if total <= POINTS:
        return list(range(1, total + 1))
    return sorted({1 + round(i * (total - 1) / (POINTS - 1)) for i in range(POINTS)})


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("op", sorted(OPS))
def test_disk_full_at_each_step_never_corrupts_and_a_restart_finishes(
    op: str,
    tmp_path: Path,
    s3_server: S3Emulator,
    sim: Simulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ENOSPC from os.<op> at the n-th call of one job (n spread over all its calls): the
    run either copes (retries the step) or ends with DurabilityError (a ledger fsync or
    write); the ledger reopens, no empty or partial file carries a final name, and a
    restart finishes the job with one output and at most one submit."""
    # Count the calls one clean job makes.
    counting = tmp_path / "count"
    counting.mkdir()
    with monkeypatch.context() as mp:
        probe = DiskFull(mp, counting, OPS[op])
        sources = make_batch(counting / "inbox", 1, seed=99)
        result, _ = run_once(write_config(counting, s3_server, sim))
    assert result.exit_code == 0 and probe.calls > 0
    assert check_batch(counting, sources, sim).problems() == {}

    outcomes: dict[int, str] = {}
    for n in _points(probe.calls):
        folder = tmp_path / f"n{n}"
        folder.mkdir()
        sources = make_batch(folder / "inbox", 1, seed=1000 + n)
        config_path = write_config(folder, s3_server, sim)
        with monkeypatch.context() as mp:
            fault = DiskFull(mp, folder, OPS[op])
            fault.n = n
            try:
                first, _ = run_once(config_path)
                outcomes[n] = f"exit {first.exit_code}"
            except DurabilityError:
                outcomes[n] = "DurabilityError"
        assert fault.fired, (n, probe.calls)
        # Whatever happened, no final name holds an empty or partial file...
        for path in (folder / "outbox").rglob("*.mp4"):
            if not path.name.startswith("."):
                assert path.stat().st_size > 0 and path.read_bytes()[4:8] == b"ftyp", path
        # ...and a restart (ledger reopens: not corrupt) finishes the job.
        second, _ = run_once(config_path)
        assert second.exit_code in (0, 4), (n, outcomes[n])
        verdict = check_batch(folder, sources, sim)
        assert verdict.problems() == {}, (n, outcomes[n], verdict)
        assert verdict.done + verdict.failed == 1
    # The ledger's own failures (an append's write or fsync) stop the run; the file
    # steps (renames, links) are retried in place and the first run itself finishes.
    if op in ("fsync", "write"):
        assert "DurabilityError" in outcomes.values(), outcomes
    else:
        assert all(o in ("exit 0", "exit 4") for o in outcomes.values()), outcomes


def test_a_failing_orphan_without_sidecar_survives_a_restart(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """A job with no sidecar (an orphan image) recorded as FAILING is read back after a
    restart (its record omits ``sidecar``) and finished, instead of the ledger being
    refused as damaged."""
    config_path = write_config(tmp_path, s3_server, sim)
    config = load_config(config_path, {})
    (tmp_path / "inbox" / "lonely.jpg").write_bytes(b"not even an image")
    job = Job("0123456789abcdef", State.NEW, "lonely.jpg", None, time.time(), time.time())
    moves = plan_moves(config.paths.inbox, "", ["lonely.jpg"], "failed", config.paths.failed)
    error = {"code": "missing_sidecar", "message": "No sidecar.", "hint": "Add one."}
    put(config, apply(job, Fail(error=error, moved_to=moves), time.time()))
    assert ledger_jobs(config)[job.job_id].sidecar is None

    result, _ = run_once(config_path)

    assert result.exit_code == 4 and result.summary.failed == [job.job_id]
    assert files_under(tmp_path / "failed") == ["lonely.error.json", "lonely.jpg"]
