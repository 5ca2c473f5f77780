"""Crash torture: the real daemon, SIGKILLed at seeded random moments, loses nothing.

The checker in this file is written from docs/design.md, "Outputs", "The ledger and crash
guarantees", "Identity and duplicates" alone: it reads the folders and the simulator's records,
never the daemon's ledger or helpers. ``bench/torture.py`` runs the same scenario with hundreds of
kills.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from seedance_watch.simulator import Simulator, SimulatorConfig
from seedance_watch.simulator.config import SubmitRecord
from seedance_watch.testing.s3emulator import S3Emulator

from .batches import Verdict, check_batch, make_batch
from .helpers import DaemonProcess, daemon_env, fresh_bucket, wait_for, write_config
from .simhelpers import quick_tasks

#: Log events that mark the stages a kill should land in or right after.
PHASES = (
    "job.created",  # the upload is running
    "job.uploaded",  # a submit comes next
    "job.submitted",  # right after a submit
    "task.polled",  # during polls
    "task.succeeded",  # the download is running
    "outbox.placed",  # during placement and the input moves
    "outbox.input_moved",
)


def torture_simulator_config(seed: int) -> SimulatorConfig:
    """Fast tasks and small videos: a batch lives a few seconds."""
    return quick_tasks(running_seconds=0.3, seed=seed)


# --- the independent checker ------------------------------------------------------------


# --- the torture ------------------------------------------------------------------------


@dataclass
class TortureResult:
    kills: int
    phases: Counter[str]
    seconds: float
    verdict: Verdict
    final_exit: int


def _nth_stage_event(daemon: DaemonProcess, n: int, inbox: Path) -> str | None:
    """The name of the ``n``-th stage event in the daemon's log; ``idle`` when the batch
    ended first, ``exited`` when the daemon did; else None (keep waiting)."""
    seen = [e["event"] for e in daemon.events() if e.get("event") in PHASES]
    if len(seen) >= n:
        return str(seen[n - 1])
    if daemon.proc.poll() is not None:
        return "exited"
    if _inbox_empty(inbox):
        return "idle"  # a kill now still tests a restart
    return None


def _inbox_empty(inbox: Path) -> bool:
    return not any(p.is_file() for p in inbox.rglob("*"))


def torture(
    folder: Path,
    s3: S3Emulator,
    sim: Simulator,
    *,
    pairs: int,
    kills: int,
    seed: int,
    max_events: int = 10,
    on_kill: Any = None,
    kinds: bool = False,
) -> TortureResult:
    """Drop ``pairs`` pairs (with ``kinds``, drops of all three kinds: see ``make_batch``),
    SIGKILL the daemon ``kills`` times, finish with ``run --once``.

    Each daemon is killed at its n-th stage event (n seeded, 1..``max_events``) plus
    0-40 ms of jitter, so kills spread over uploads, submits, polls, downloads and
    placements, following the batch through its life.  The daemon's environment is this
    process's (``SEEDANCE_WATCH_GATEWAY__MAX_IN_FLIGHT`` keeps the batch long enough).
    """
    rng = random.Random(seed)
    config_path = write_config(
        folder, s3, sim, settle=0.1, poll_interval=0.05, bucket=fresh_bucket(s3)
    )
    inbox = folder / "inbox"
    sources = make_batch(inbox, pairs, seed, kinds=kinds)
    started = time.monotonic()
    phases: Counter[str] = Counter()
    done_kills = 0
    while done_kills < kills:
        daemon = DaemonProcess(config_path)
        target = 1 + rng.randrange(max_events)
        try:
            try:
                last = wait_for(
                    lambda d=daemon, t=target: _nth_stage_event(d, t, inbox),  # type: ignore[misc]
                    timeout=30,
                    interval=0.005,
                )
            except AssertionError as exc:
                raise AssertionError(
                    f"{exc}: the daemon in {folder} made no progress; its log ends with:\n"
                    f"{_tail(daemon)}"
                ) from None
            if daemon.proc.poll() is not None:
                raise AssertionError(f"the daemon exited on its own:\n{_tail(daemon)}")
            threading.Event().wait(rng.uniform(0, 0.04))  # jitter: the random moment itself
            daemon.proc.send_signal(signal.SIGKILL)
        finally:
            daemon.kill()
        phase = str(last)
        phases[phase] += 1
        done_kills += 1
        if on_kill is not None:
            on_kill(done_kills, phase)
    final = DaemonProcess(config_path, once=True)
    try:
        code = final.wait(timeout=120)
    finally:
        final.kill()
    seconds = time.monotonic() - started
    return TortureResult(done_kills, phases, seconds, check_batch(folder, sources, sim), code)


def _tail(daemon: DaemonProcess, lines: int = 30) -> str:
    return "\n".join(daemon.log_path.read_text(errors="replace").splitlines()[-lines:])


# --- tests ------------------------------------------------------------------------------

#: The mixed batch's seed; the batch passed with seeds 1-8 and 20260413 as well.
MIXED_SEED = 2


#: The torture tests' simulator (the ``sim`` fixture): the bench's, seeded.
pytestmark = pytest.mark.sim(torture_simulator_config(seed=3))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkill_at_random_moments_loses_nothing_and_never_pays_twice(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 pairs, 8 SIGKILLs at seeded random stages, restarts, then ``run --once``: every
    input in done/ or failed/, one mp4 per done job with the served bytes, no staging
    leftovers or empty files, valid JSON, at most one submit per job (bar ambiguous)."""
    monkeypatch.setenv("SEEDANCE_WATCH_GATEWAY__MAX_IN_FLIGHT", "4")
    result = torture(tmp_path, s3_server, sim, pairs=12, kills=8, seed=20250910)
    verdict = result.verdict
    assert verdict.problems() == {}, (verdict, result.phases)
    assert verdict.done + verdict.failed == 12
    assert verdict.failed == verdict.ambiguous  # the only failure a kill may cause
    # 4 only when a job failed during the final run itself (docs/design.md, "Exit codes": "of this
    # run").
    assert result.final_exit in (0, 4)
    assert result.kills == 8
    # The kills really landed in different stages of the batch.
    assert len(set(result.phases) - {"idle"}) >= 3, result.phases


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkill_during_a_mixed_batch_moves_every_drop_whole_and_never_pays_twice(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 drops of the three kinds (4 frames drops of three files, 2 text drops of a
    sidecar alone), 8 SIGKILLs at seeded random stages, then ``run --once``: each drop's
    files together in done/ or failed/ with one suffix and their bytes, one mp4 + JSON of
    the right kind (and end image hash) per done drop, at most one submit per drop on the
    image, frames and text endpoints alike (bar ambiguous)."""
    monkeypatch.setenv("SEEDANCE_WATCH_GATEWAY__MAX_IN_FLIGHT", "4")
    result = torture(tmp_path, s3_server, sim, pairs=12, kills=8, seed=MIXED_SEED, kinds=True)
    verdict = result.verdict
    assert verdict.problems() == {}, (verdict, result.phases)
    assert verdict.done + verdict.failed == 12
    assert verdict.failed == verdict.ambiguous
    assert result.final_exit in (0, 4)
    assert result.kills == 8
    assert len(set(result.phases) - {"idle"}) >= 3, result.phases


@pytest.mark.timeout(60)
def test_checker_catches_a_duplicate_output_and_a_lost_input(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: Any
) -> None:
    """The independent checker is not vacuous: it reports a second mp4 for one job,
    a staging leftover, a zero-byte file and an input that vanished."""
    from .helpers import run_once

    config_path = write_config(tmp_path, s3_server, sim)
    sources = make_batch(tmp_path / "inbox", 2, seed=1)
    result, _ = run_once(config_path)
    assert result.exit_code == 0
    assert check_batch(tmp_path, sources, sim).problems() == {}
    outbox = tmp_path / "outbox"
    (outbox / "shot-000-2.mp4").write_bytes((outbox / "shot-000.mp4").read_bytes())
    (outbox / "shot-000-2.json").write_text((outbox / "shot-000.json").read_text())
    (outbox / ".seedance-x.mp4.part").write_bytes(b"half")
    (outbox / "empty.json").write_bytes(b"")
    (tmp_path / "done" / "shot-001.jpg").unlink()
    problems = check_batch(tmp_path, sources, sim).problems()
    assert problems.keys() >= {"duplicate_outputs", "staging_leftovers", "lost_inputs"}
    assert any("empty.json" in p for p in problems["bad_json"])


@pytest.mark.timeout(90)
def test_status_works_while_the_daemon_runs_and_never_blocks_it(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """``status --json`` (the CLI) answers during a batch, with every job once, while the
    daemon keeps going and finishes the batch; status never takes the lock."""
    config_path = write_config(
        tmp_path,
        s3_server,
        sim,
        settle=0.1,
        poll_interval=0.05,
        bucket=fresh_bucket(s3_server),
    )
    sources = make_batch(tmp_path / "inbox", 8, seed=5)
    daemon = DaemonProcess(config_path)
    reports: list[dict[str, Any]] = []
    try:
        wait_for(lambda: daemon.has_event("job.created"), timeout=30)

        def status() -> dict[str, Any]:
            t0 = time.monotonic()
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "seedance_watch",
                    "status",
                    "--json",
                    "--config",
                    str(config_path),
                ],
                capture_output=True,
                text=True,
                env=daemon_env(),
                timeout=30,
                check=True,
            )
            report: dict[str, Any] = json.loads(out.stdout)
            report["seconds"] = time.monotonic() - t0
            reports.append(report)
            return report

        def finished() -> bool:
            counts = status()["counts"]
            return counts.get("done", 0) == len(sources)

        wait_for(finished, timeout=60, interval=0.01)
        assert daemon.proc.poll() is None  # still running: status did not disturb it
    finally:
        daemon.signal(signal.SIGTERM)
        code = daemon.wait(timeout=40)
    assert code == 0
    assert len(reports) >= 2
    # At least one report saw the batch unfinished: status ran *during* the batch.
    assert any(r["counts"].get("done", 0) < len(sources) for r in reports[:-1])
    for report in reports:
        ids = [job["job_id"] for job in report["jobs"]]
        assert len(ids) == len(set(ids)) == sum(report["counts"].values())
    assert check_batch(tmp_path, sources, sim).problems() == {}


@pytest.mark.timeout(60)
def test_checker_catches_a_frames_drop_torn_apart_and_a_wrong_kind(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator
) -> None:
    """The checker's rules for frames and text drops are not vacuous: an end image left
    behind in failed/, one deleted, one with another suffix than its drop, a text sidecar
    copied twice, a JSON with the wrong kind or end image hash, a video of another drop's
    task, a drop in failed/ without its report, and a second submit of a frames request
    are each reported."""
    from .helpers import run_once

    config_path = write_config(tmp_path, s3_server, sim)
    sources = make_batch(tmp_path / "inbox", 10, seed=2, kinds=True)
    kinds = Counter(drop.kind for drop in sources.drops.values())
    assert kinds == {"image": 5, "frames": 3, "text": 2}
    result, _ = run_once(config_path)
    assert result.exit_code == 0
    assert check_batch(tmp_path, sources, sim).problems() == {}
    done, outbox = tmp_path / "done", tmp_path / "outbox"
    assert (done / "shot-002-end.png").is_file() and (done / "b" / "shot-004.yaml").is_file()

    def problems() -> dict[str, list[str]]:
        return check_batch(tmp_path, sources, sim).problems()

    # An end image in the wrong place: split from its drop.
    (tmp_path / "failed").mkdir(exist_ok=True)
    (done / "shot-002-end.png").rename(tmp_path / "failed" / "shot-002-end.png")
    found = problems()
    assert list(found) == ["split_drops"] and "shot-002.jpg" in found["split_drops"][0]
    # ...or with another suffix than the drop's other files.
    (tmp_path / "failed" / "shot-002-end.png").rename(done / "shot-002-end-2.png")
    assert list(problems()) == ["split_drops"]
    # ...or gone.
    (done / "shot-002-end-2.png").unlink()
    found = problems()
    assert found["lost_inputs"] == ["shot-002-end.png: found 0 times in done/ and failed/"]
    # A text drop's sidecar in two places.
    (done / "shot-004.yaml").write_bytes((done / "b" / "shot-004.yaml").read_bytes())
    assert any(p.startswith("b/shot-004.yaml: found 2") for p in problems()["lost_inputs"])
    # Output JSON: the wrong kind, and a frames drop's end image hash changed.
    meta = json.loads((outbox / "b" / "shot-004.json").read_text())
    meta["kind"] = "image"
    (outbox / "b" / "shot-004.json").write_text(json.dumps(meta))
    frames = next(
        d.source for d in sources.drops.values() if d.kind == "frames" and "/" in d.source
    )
    frames_json = (outbox / frames).with_suffix(".json")
    meta = json.loads(frames_json.read_text())
    meta["last_frame_sha256"] = "0" * 64
    frames_json.write_text(json.dumps(meta))
    wrong = problems()["wrong_metadata"]
    assert any("b/shot-004.json: kind 'image'" in p for p in wrong), wrong
    assert any("last_frame_sha256 is not the hash" in p for p in wrong), wrong
    # An output whose video is another drop's (the JSON names that drop's task).
    meta, other = (json.loads((outbox / f"shot-{n}.json").read_text()) for n in ("000", "001"))
    meta["task_id"] = other["task_id"]
    (outbox / "shot-000.json").write_text(json.dumps(meta))
    (outbox / "shot-000.mp4").write_bytes((outbox / "shot-001.mp4").read_bytes())
    wrong = problems()["wrong_videos"]
    assert any(f"task {other['task_id']} was not submitted for shot-000" in p for p in wrong)
    # A drop in failed/ without its report (and with an output).
    for name in ("shot-002.jpg", "shot-002.yaml"):
        (done / name).rename(tmp_path / "failed" / name)
    (tmp_path / "failed" / "shot-002-end.png").write_bytes(
        sources.drops["shot-002.jpg"].files["shot-002-end.png"]
    )
    found = problems()
    assert found["missing_reports"] == [
        "shot-002.jpg: failed/shot-002.error.json missing, or 0 reports"
    ]
    assert "shot-002.jpg: failed, yet 1 outputs" in found["duplicate_outputs"]
    # A frames request submitted twice.
    record = next(r for r in sim.submits if r.kind == "frames")
    assert "2 submits" in str(check_batch(tmp_path, sources, Resubmitted(sim, record)))


@dataclass
class Resubmitted:
    """The simulator's records with one submit recorded a second time."""

    sim: Simulator
    again: SubmitRecord

    @property
    def submits(self) -> list[SubmitRecord]:
        return [*self.sim.submits, replace(self.again, task_id=self.again.task_id + "-again")]

    def video_bytes(self, task_id: str) -> bytes:
        return self.sim.video_bytes(task_id)
