"""Resilience (docs/design.md, "The gateway protocol", "Outputs"): the real daemon against a faulty
simulator and S3 emulator.

Every transient fault is retried to an exact result with no duplicate submit; a
submit whose answer was lost is never sent again; task outcomes, broken and
expired downloads and gateway refusals become the right reports; a refused key or
an unusable bucket pauses the pipeline without failing (or losing) anything.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import stamina
from structlog.testing import capture_logs

from seedance_watch.commands.status import format_status, status_report
from seedance_watch.ledger.jsonl import JsonlReader
from seedance_watch.providers.pixazo import SUBMIT_PATH
from seedance_watch.simulator import Simulator, SimulatorConfig
from seedance_watch.testing.s3emulator import S3Emulator

from .daemon_harness import BUCKET, DaemonProcess, files_under, run_once, wait_for, write_config

pytestmark = pytest.mark.timeout(60)

WritePair = Callable[..., tuple[Path, Path]]
FAST = {"queued_seconds": 0.05, "running_seconds": 0.2, "video_seconds": 0.5}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(**FAST)) as simulator:  # type: ignore[arg-type]
        yield simulator


def configure(tmp_path: Path, s3: S3Emulator, sim: Simulator, **replace: str) -> Path:
    """``write_config`` with some of its text replaced (e.g. the bucket, a timeout)."""
    path = write_config(tmp_path, s3, sim)
    text = path.read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


def report_of(tmp_path: Path, stem: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "failed" / f"{stem}.error.json").read_text())
    return data


@pytest.mark.slow
@pytest.mark.timeout(180)  # an unlucky streak of faults backs a job off for a minute
def test_fault_mix_batch_completes_with_exact_videos(
    tmp_path: Path, s3_server: S3Emulator, write_pair: WritePair
) -> None:
    """5xx, 429 with Retry-After, slow replies (everywhere), dropped connections on polls
    and videos, and truncated videos, all at double-digit rates: every job still ends
    with the exact video, each job is submitted exactly once, and each retry is a
    `job.retry` event with its stage, attempt, delay and reason."""
    faults = SimulatorConfig(
        **FAST,  # type: ignore[arg-type]
        seed=11,
        # At these rates a poll or a download fails about one time in three; higher,
        # a streak of six failures (a minute of backoff) becomes a matter of luck.
        error_5xx_rate=0.1,
        rate_429=0.1,
        slow_reply_rate=0.15,
        slow_reply_seconds=0.3,
        drop_connection_rate=0.1,
        drop_on=frozenset({"poll", "video"}),
        truncate_video_rate=0.15,
    )
    stems = [f"shot{i}" for i in range(8)]
    with Simulator(faults) as sim:
        config = configure(
            tmp_path, s3_server, sim, **{"task_timeout: 60": "task_timeout: 60, max_in_flight: 4"}
        )
        for stem in stems:
            write_pair(tmp_path / "inbox", stem)

        def where_things_stand() -> None:  # shown if the run outlives the timeout
            import sys

            from seedance_watch.ledger.jsonl import read_jobs

            jobs = {
                j.source: (j.state.value, j.task_id) for j in read_jobs(tmp_path / "state").values()
            }
            print(f"STILL RUNNING: jobs {jobs}; tasks {sim.tasks_by_status()}", file=sys.stderr)
            print(
                f"last requests {[(r.path, r.status) for r in sim.requests[-20:]]}", file=sys.stderr
            )

        watchdog = threading.Timer(150, where_things_stand)
        watchdog.start()
        try:
            with capture_logs() as logs:
                result, _ = run_once(config)
        finally:
            watchdog.cancel()
        requests = sim.requests
        submits = sim.submits

        assert result.exit_code == 0, (result.summary, files_under(tmp_path / "failed"))
        assert len(result.summary.done) == len(stems) and not result.summary.failed
        # No duplicate submit: one task per job, each job's text exactly once.
        assert len(submits) == len(stems)
        assert len({record.text for record in submits}) == len(stems)
        for stem in stems:
            meta = json.loads((tmp_path / "outbox" / f"{stem}.json").read_text())
            video = (tmp_path / "outbox" / f"{stem}.mp4").read_bytes()
            assert video == sim.video_bytes(meta["task_id"])
        assert files_under(tmp_path / "inbox") == []
    # The faults really happened, on every kind of request.
    statuses = {r.status for r in requests}
    assert statuses & {500, 502, 503} and 429 in statuses and None in statuses
    assert sum(1 for r in requests if r.path.startswith("/videos/")) > len(stems)
    retries = [e for e in logs if e["event"] == "job.retry"]
    assert {"poll", "download"} <= {e["stage"] for e in retries}
    # Every submit the gateway refused with 5xx/429 was retried (the seeded dice decide
    # how many there are; the retries must match them one for one).
    refused = [r for r in requests if r.path == SUBMIT_PATH and r.status in (429, 500, 502, 503)]
    assert len([e for e in retries if e["stage"] == "submit"]) == len(refused)
    for event in retries:
        assert event["job_id"] and event["attempt"] >= 1 and event["delay"] >= 0
        assert event["reason"]
    limited = [e for e in retries if "HTTP 429" in e["reason"]]  # not a task id with 429 in it
    assert limited and all(e["delay"] == 1.0 for e in limited)  # Retry-After: 1 honoured


def test_submit_answer_lost_is_ambiguous_and_never_resent(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """The gateway creates the task, then the connection drops before the answer:
    the job fails as submit_ambiguous with a hint, and exactly one submit was made."""
    sim.configure(submit_accept_then_drop_rate=1.0)
    write_pair(tmp_path / "inbox", "lost")
    result, _ = run_once(write_config(tmp_path, s3_server, sim))
    assert result.exit_code == 4
    assert len(sim.submits) == 1 and sim.submit_attempts == 1
    report = report_of(tmp_path, "lost")
    assert report["code"] == "submit_ambiguous"
    assert "seedance-watch retry" in report["hint"]
    assert (tmp_path / "failed" / "lost.jpg").exists()


@pytest.mark.parametrize(
    ("knobs", "replace", "code", "words"),
    [
        ({"fail_task_rate": 1.0}, {}, "task_failed", "InternalServiceError"),
        ({"expire_task_rate": 1.0}, {}, "task_expired", "expired"),
        (
            {"running_seconds": 30.0},
            {"task_timeout: 60": "task_timeout: 1"},
            "task_timeout",
            "did not finish within 1 s",
        ),
    ],
    ids=["failed", "expired", "timeout"],
)
def test_task_outcomes_become_reports(
    tmp_path: Path,
    s3_server: S3Emulator,
    sim: Simulator,
    write_pair: WritePair,
    knobs: dict[str, Any],
    replace: dict[str, str],
    code: str,
    words: str,
) -> None:
    """A failed, expired or never-ending task lands in failed/ with its code, the
    gateway's words and the task id; `run --once` exits 4."""
    sim.configure(**knobs)
    write_pair(tmp_path / "inbox", "scene")
    result, _ = run_once(configure(tmp_path, s3_server, sim, **replace))
    assert result.exit_code == 4
    report = report_of(tmp_path, "scene")
    assert report["code"] == code
    assert report["task_id"] == sim.submits[0].task_id
    assert sim.submits[0].task_id in report["message"] and words in report["message"]
    assert report["hint"]
    assert len(sim.submits) == 1


def test_bad_key_once_exits_3_then_the_right_key_finishes(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """With a refused key `run --once` exits 3, fails nothing, keeps every input and
    says which key source it used (never the key), also in `status`; with the right
    key the next run finishes every job with one submit each."""
    for stem in ("a", "b"):
        write_pair(tmp_path / "inbox", stem)
    config = write_config(tmp_path, s3_server, sim)
    with capture_logs() as logs:
        result, cfg = run_once(config, key="wrong-key-123")
    assert result.exit_code == 3
    assert not result.summary.failed and sim.submits == []
    assert files_under(tmp_path / "inbox") == ["a.jpg", "a.yaml", "b.jpg", "b.yaml"]
    assert files_under(tmp_path / "failed") == []
    refused = [e for e in logs if e["event"] == "gateway.credentials_refused"]
    assert refused and refused[0]["log_level"] == "error"
    assert refused[0]["key_source"] == "PIXAZO_API_KEY" and refused[0]["http_status"] == 401
    assert "wrong-key-123" not in repr(logs)
    report = status_report(JsonlReader(cfg.paths.state))
    paused = report["daemon"]["paused"]["credentials"]
    assert paused["key_source"] == "PIXAZO_API_KEY" and paused["http_status"] == 401
    assert report["daemon"]["pid"] == os.getpid()  # in-process run
    assert "wrong-key-123" not in (cfg.paths.state / "daemon.json").read_text()
    assert "paused: credentials" in format_status(report)

    result, _ = run_once(config)
    assert result.exit_code == 0 and len(result.summary.done) == 2
    assert len(sim.submits) == 2
    assert status_report(JsonlReader(cfg.paths.state))["daemon"]["paused"] == {}


@pytest.mark.slow
def test_revoked_key_pauses_submits_and_polls_then_resumes(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """Daemon mode: the gateway starts refusing the key while tasks run.  Polls and new
    submits pause (the key probed with a free call, not hammered), a new drop is taken
    but not uploaded while the key is refused (no image waits in the bucket), nothing
    fails, `status` shows the pause; once the gateway accepts the key again everything
    finishes by itself."""
    sim.configure(running_seconds=2.0)
    config = write_config(tmp_path, s3_server, sim)
    state = tmp_path / "state"
    for stem in ("one", "two"):
        write_pair(tmp_path / "inbox", stem)
    daemon = DaemonProcess(config)
    try:
        wait_for(lambda: len(sim.submits) == 2, timeout=20)
        sim.configure(api_key="rotated-elsewhere")  # the daemon's key is refused now
        write_pair(tmp_path / "inbox", "three")
        wait_for(lambda: daemon.has_event("gateway.credentials_refused"), timeout=20)
        three = wait_for(
            lambda: next(
                (
                    e["job_id"]
                    for e in daemon.events()
                    if e.get("event") == "job.created" and e.get("source") == "three.jpg"
                ),
                None,
            ),
            timeout=20,
        )
        # Probed at least once more after three was taken: still no upload of it.
        probes = sum(1 for r in sim.requests if r.status == 401)
        wait_for(lambda: sum(1 for r in sim.requests if r.status == 401) > probes, timeout=20)
        assert not any(three in key for key in s3_server.keys(BUCKET))
        assert not any(
            e.get("event") == "job.uploaded" and e.get("job_id") == three for e in daemon.events()
        )
        report = wait_for(
            lambda: (
                (r := status_report(JsonlReader(state)))["daemon"] and r["daemon"]["paused"] and r
            ),
            timeout=10,
        )
        info = report["daemon"]["paused"]["credentials"]
        assert report["daemon"]["running"] is True and info["key_source"] == "PIXAZO_API_KEY"
        assert len(sim.submits) == 2 and files_under(tmp_path / "failed") == []
        refusals = sum(1 for r in sim.requests if r.status == 401)
        assert refusals <= 4, refusals  # one probe at a time, not one call per job

        sim.configure(api_key="sim-key")
        wait_for(
            lambda: all(
                (tmp_path / "outbox" / f"{s}.mp4").exists() for s in ("one", "two", "three")
            ),
            timeout=30,
        )
        assert daemon.has_event("gateway.credentials_accepted")
        assert len(sim.submits) == 3 and files_under(tmp_path / "failed") == []
        wait_for(lambda: status_report(JsonlReader(state))["daemon"]["paused"] == {}, timeout=5)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        daemon.kill()


def test_download_that_keeps_failing_ends_download_failed(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """Every video body is truncated: the download is tried exactly its budget of
    attempts (stamina's test mode skips the waits), then fails as download_failed
    with the task id."""
    sim.configure(truncate_video_rate=1.0, faults_on=frozenset({"video"}))
    write_pair(tmp_path / "inbox", "broken")
    with stamina.set_testing(True, attempts=100, cap=True):
        result, _ = run_once(write_config(tmp_path, s3_server, sim))
    assert result.exit_code == 4
    report = report_of(tmp_path, "broken")
    assert report["code"] == "download_failed"
    assert report["task_id"] == sim.submits[0].task_id
    assert "after 8 attempt(s)" in report["message"]
    gets = [r for r in sim.requests if r.path.startswith("/videos/")]
    assert len(gets) == 8
    assert files_under(tmp_path / "outbox") == []


def test_expired_video_url_fails_at_once(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """A 403 from the video host (expired URL) is not retried: download_failed with the
    task id and the HTTP status."""
    sim.configure(video_ttl_seconds=0.0)
    write_pair(tmp_path / "inbox", "late")
    result, _ = run_once(write_config(tmp_path, s3_server, sim))
    assert result.exit_code == 4
    report = report_of(tmp_path, "late")
    assert report["code"] == "download_failed" and report["http_status"] == 403
    assert report["task_id"] == sim.submits[0].task_id
    assert "expired" in report["message"]
    assert sum(1 for r in sim.requests if r.path.startswith("/videos/")) == 1


def test_gateway_rejections_fail_with_message_status_and_hint(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """404 (unknown model) and 400 (the gateway cannot fetch the image) fail the job as
    gateway_rejected with the gateway's message, the HTTP status and a hint."""
    write_pair(tmp_path / "inbox", "odd", sidecar='prompt: "x"\nmodel: seedance-9-nope\n')
    result, _ = run_once(write_config(tmp_path, s3_server, sim))
    assert result.exit_code == 4
    report = report_of(tmp_path, "odd")
    assert report["code"] == "gateway_rejected" and report["http_status"] == 404
    assert "seedance-9-nope" in report["message"] and "generateImage2VideoTask" in report["message"]
    assert "model name" in report["hint"]

    other = tmp_path / "public"
    other.mkdir()
    write_pair(other / "inbox", "unreachable")
    config = configure(
        other,
        s3_server,
        sim,
        **{
            "region: us-east-1}": "region: us-east-1, url_mode: public, "
            "public_base_url: 'http://127.0.0.1:9'}"
        },
    )
    result, _ = run_once(config)
    assert result.exit_code == 4
    report = report_of(other, "unreachable")
    assert report["code"] == "gateway_rejected" and report["http_status"] == 400
    assert "image_url could not be fetched" in report["message"] and report["hint"]


def test_missing_bucket_once_exits_1_with_inputs_intact(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """A bucket that does not exist pauses the pipeline with one clear error: `--once`
    exits 1, nothing fails, nothing is submitted, every input stays in the inbox."""
    for stem in ("a", "b", "c"):
        write_pair(tmp_path / "inbox", stem)
    config = configure(tmp_path, s3_server, sim, **{f"bucket: {BUCKET}": "bucket: no-such"})
    with capture_logs() as logs:
        result, cfg = run_once(config)
    assert result.exit_code == 1
    assert not result.summary.failed and sim.submit_attempts == 0
    assert len(files_under(tmp_path / "inbox")) == 6 and files_under(tmp_path / "failed") == []
    paused = [e for e in logs if e["event"] == "storage.paused"]
    assert len(paused) == 1 and "no-such" in paused[0]["reason"]
    info = status_report(JsonlReader(cfg.paths.state))["daemon"]["paused"]["storage"]
    assert "no-such" in info["message"]


@pytest.mark.slow
def test_missing_bucket_daemon_resumes_when_it_appears(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """Daemon mode: uploads pause while the bucket is missing (nothing fails) and
    resume by themselves once it is created."""
    bucket = f"late-{uuid.uuid4().hex[:8]}"
    config = configure(tmp_path, s3_server, sim, **{f"bucket: {BUCKET}": f"bucket: {bucket}"})
    for stem in ("a", "b"):
        write_pair(tmp_path / "inbox", stem)
    daemon = DaemonProcess(config)
    try:
        wait_for(lambda: daemon.has_event("storage.paused"), timeout=20)
        wait_for(
            lambda: (status_report(JsonlReader(tmp_path / "state"))["daemon"] or {}).get("paused")
        )
        assert files_under(tmp_path / "failed") == [] and sim.submit_attempts == 0
        s3_server.client().create_bucket(Bucket=bucket)
        wait_for(
            lambda: all((tmp_path / "outbox" / f"{s}.mp4").exists() for s in ("a", "b")),
            timeout=30,
        )
        assert daemon.has_event("storage.resumed") and len(sim.submits) == 2
        assert sum(1 for e in daemon.events() if e.get("event") == "storage.paused") == 1
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        daemon.kill()
