"""The real daemon against the gateway as it answers today (docs/design.md, "The gateway
protocol"): the envelope dialect end to end, failures with their gateway words, restarts mid-poll,
a ledger of the first release resumed, polling URLs on a foreign origin, 502/504 on submit, and
webhooks that are only ever a hint."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from seedance_watch.core.jobs import Job, State
from seedance_watch.files.drop import examine_drop
from seedance_watch.ledger.jsonl import Ledger, read_jobs
from seedance_watch.simulator import Simulator
from seedance_watch.testing.s3emulator import S3Emulator

from .helpers import (
    DaemonProcess,
    WritePair,
    files_under,
    free_port,
    run_once,
    wait_for,
    write_config,
)
from .simhelpers import SimFactory

pytestmark = [pytest.mark.timeout(120), pytest.mark.sim(submit_answer="envelope")]


def outputs(root: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in (root / "outbox").glob("*.json")}


def test_a_batch_with_task_failures_ends_with_every_job_done_or_failed_with_its_code(
    tmp_path: Path, s3_server: S3Emulator, write_pair: WritePair, sim_factory: SimFactory
) -> None:
    """The issue's bar: envelope dialect, injected failures, expiries and cancellations;
    every job ends done or failed with its gateway code, no submit_ambiguous, one submit
    per job, every video the one the gateway served."""
    knobs = {
        "seed": 5,
        "fail_task_rate": 0.2,
        "expire_task_rate": 0.15,
        "cancel_task_rate": 0.1,
        "media_url_style": "alternate",
        "error_style": "alternate",
    }
    stems = [f"clip{i}" for i in range(12)]
    sim = sim_factory(submit_answer="envelope", **knobs)
    config = write_config(tmp_path, s3_server, sim)
    for stem in stems:
        write_pair(tmp_path / "inbox", stem)
    result, _ = run_once(config)
    submits = sim.submits
    done = outputs(tmp_path)
    reports = {
        p.name.removesuffix(".error.json"): json.loads(p.read_text())
        for p in (tmp_path / "failed").glob("*.error.json")
    }
    for stem, meta in done.items():
        assert meta["task_id"].startswith("byteplus_")
        assert (tmp_path / "outbox" / f"{stem}.mp4").read_bytes() == sim.video_bytes(
            meta["task_id"]
        )
    assert len(submits) == len(stems) and {s.dialect for s in submits} == {"envelope"}
    assert set(done) | set(reports) == set(stems) and not set(done) & set(reports)
    codes = {r["code"] for r in reports.values()}
    assert codes and codes <= {"task_failed", "task_expired", "task_cancelled"}
    assert "submit_ambiguous" not in codes
    for report in reports.values():
        assert report["task_id"].startswith("byteplus_") and report["message"]
    assert result.exit_code == (4 if reports else 0)
    assert files_under(tmp_path / "inbox") == []


def test_a_restart_in_the_middle_of_polling_an_envelope_task_resumes_it(
    tmp_path: Path, s3_server: S3Emulator, write_pair: WritePair, sim_factory: SimFactory
) -> None:
    """SIGKILL while an envelope task runs: the next start polls it at its polling URL
    (no new submit) and places its video."""
    sim = sim_factory(submit_answer="envelope", running_seconds=2.0)
    config = write_config(tmp_path, s3_server, sim)
    daemon = DaemonProcess(config)
    try:
        write_pair(tmp_path / "inbox", "beach")
        wait_for(lambda: daemon.has_event("job.submitted"), timeout=30)
        daemon.kill()
    finally:
        daemon.wait(timeout=30)
    (job,) = read_jobs(tmp_path / "state").values()
    assert job.state is State.SUBMITTED and job.dialect == "envelope"
    assert job.poll_url == f"{sim.base_url}/v2/requests/status/{job.task_id}"
    result, _ = run_once(config)
    assert result.exit_code == 0 and len(sim.submits) == 1
    assert outputs(tmp_path)["beach"]["task_id"] == job.task_id


RETIRED = "seedance-1-0-lite-i2v-250428"  # switched off on 2026-05-13


@pytest.mark.parametrize("schema", ["first release", "current"])
def test_a_ledger_whose_task_has_a_since_retired_model_resumes_and_finishes(
    tmp_path: Path,
    s3_server: S3Emulator,
    write_pair: WritePair,
    schema: str,
    sim_factory: SimFactory,
) -> None:
    """A job submitted before its model was switched off keeps polling and finishes:
    as the first release wrote it (one ``s3_key``, a ``cgt-`` task, no kind, no dialect,
    polled the legacy way) and as today's code writes it.  The model a job was submitted
    with is never re-checked once the task exists; nothing is submitted again."""
    sim = sim_factory()  # today's default: the {"id"} answer
    config_path = write_config(tmp_path, s3_server, sim)
    from seedance_watch.config import load_config

    cfg = load_config(config_path, {})
    image, _ = write_pair(cfg.paths.inbox, "beach")
    drop = examine_drop(
        cfg.paths.inbox, "beach.jpg", "beach.yaml", defaults=cfg.defaults,
        models=cfg.gateway.models, now=time.time(),
    )  # fmt: skip
    from seedance_watch.files.storage import Storage

    storage = Storage(cfg.storage)
    key = storage.key_for(drop.job.job_id, "beach.jpg")
    storage.upload(image, key, content_type="image/jpeg")
    # The task was created while the model still ran (the simulator, like the
    # gateway today, refuses it now): the ledger remembers the retired model.
    task_id = sim_submit(sim, storage.url_for(key), drop.job)
    record = drop.job.to_dict()
    if schema == "first release":
        record = {k: v for k, v in record.items() if k not in ("inputs", "kind", "provider")}
        record.update(s3_key=key)
    else:
        record.update(uploads=[["image", key]], dialect="legacy", intent_at=time.time())
    record.update(
        state="submitted", model=RETIRED, task_id=task_id, submitted_at=time.time(), seq=3
    )
    with Ledger.open(cfg.paths.state) as ledger:
        ledger.put(Job.from_dict(record))
    result, _ = run_once(config_path)
    assert result.exit_code == 0 and len(sim.submits) == 1
    assert outputs(tmp_path)["beach"]["task_id"] == task_id
    assert outputs(tmp_path)["beach"]["model"] == RETIRED
    assert [p.name for p in (tmp_path / "done").iterdir()] != []


def sim_submit(sim: Simulator, url: str, job: Job) -> str:
    """A legacy submit made as the first release did (the daemon then only polls it)."""
    body = {
        "model": job.model,
        "content": [{"type": "text", "text": job.text}, {"type": "image_url", "image_url": url}],
    }
    headers = {"Ocp-Apim-Subscription-Key": "sim-key", "Cache-Control": "no-cache"}
    answer = httpx.post(
        f"{sim.base_url}/byteplus/v1/generateImage2VideoTask", json=body, headers=headers
    )
    answer.raise_for_status()
    task_id: str = answer.json()["id"]
    return task_id


class Recorder(BaseHTTPRequestHandler):
    """A foreign origin that records every request that reaches it."""

    seen: ClassVar[list[tuple[str, str, dict[str, str]]]] = []

    def do_GET(self) -> None:
        type(self).seen.append(("GET", self.path, dict(self.headers)))
        self.send_response(500)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def foreign() -> Iterator[str]:
    """A listener on another loopback address (127.0.0.2), another origin."""
    Recorder.seen = []
    try:
        server = ThreadingHTTPServer(("127.0.0.2", 0), Recorder)
    except OSError:
        server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_polling_url_on_a_foreign_origin_is_never_called(
    tmp_path: Path,
    s3_server: S3Emulator,
    write_pair: WritePair,
    foreign: str,
    sim_factory: SimFactory,
) -> None:
    """The key goes to gateway.base_url only: nothing reaches the foreign listener, the
    tasks are polled at {base_url}/v2/requests/status/{id}, every video is right."""
    sim = sim_factory(submit_answer="envelope", polling_origin=foreign)
    config = write_config(tmp_path, s3_server, sim)
    for stem in ("a", "b", "c"):
        write_pair(tmp_path / "inbox", stem)
    result, _ = run_once(config)
    assert result.exit_code == 0
    for stem, meta in outputs(tmp_path).items():
        video = (tmp_path / "outbox" / f"{stem}.mp4").read_bytes()
        assert video == sim.video_bytes(meta["task_id"])
    assert sim.polls > 0
    assert Recorder.seen == []


@pytest.mark.parametrize("status", [502, 504])
def test_a_proxy_error_on_submit_is_ambiguous_and_never_resent(
    tmp_path: Path,
    s3_server: S3Emulator,
    write_pair: WritePair,
    status: int,
    sim_factory: SimFactory,
) -> None:
    """502/504 may come after the gateway created the task: submit_ambiguous, one submit."""
    sim = sim_factory(
        submit_answer="envelope", submit_status_rate=1.0, submit_status_codes=(status,)
    )
    config = write_config(tmp_path, s3_server, sim)
    write_pair(tmp_path / "inbox", "beach")
    result, _ = run_once(config)
    assert len(sim.submits) == 1
    assert result.exit_code == 4
    report = json.loads((tmp_path / "failed" / "beach.error.json").read_text())
    assert report["code"] == "submit_ambiguous" and report["http_status"] == status


def test_webhooks_bring_the_batch_in_fast_and_forged_callbacks_change_nothing(
    tmp_path: Path,
    s3_server: S3Emulator,
    write_pair: WritePair,
    foreign: str,
    sim_factory: SimFactory,
) -> None:
    """With both poll intervals at 20 s and 1 s tasks, callbacks make the batch finish
    within seconds; forged callbacks (real ids, valid or bogus tokens, a video URL
    elsewhere) fetch nothing and change no job; a flood for one task stays near one
    poll a second."""
    port = free_port()
    hook_url = f"http://127.0.0.1:{port}/webhooks/pixazo"
    sim = sim_factory(submit_answer="envelope", running_seconds=1.0)
    config = write_config(
        tmp_path,
        s3_server,
        sim,
        poll_interval=20,
        extra=f"health: {{listen: '127.0.0.1:{port}'}}\n",
    )
    text = config.read_text().replace(
        "task_timeout: 60", f"task_timeout: 60, webhook_url: '{hook_url}', "
        "webhook_poll_interval: 20"
    )  # fmt: skip
    config.write_text(text)
    daemon = DaemonProcess(config)
    try:
        wait_for(lambda: daemon.has_event("inbox.watching"), timeout=30)
        started = time.monotonic()
        for stem in ("a", "b", "c"):
            write_pair(tmp_path / "inbox", stem)
        wait_for(lambda: len(list((tmp_path / "outbox").glob("*.mp4"))) == 3, timeout=20)
        elapsed = time.monotonic() - started
        assert elapsed < 12, elapsed  # the safety-net polls alone would take 20 s+
        assert all(s.webhook_url and "token=" in s.webhook_url for s in sim.submits)
        jobs = wait_for(
            lambda: (
                (js := read_jobs(tmp_path / "state"))
                and all(j.state is State.DONE for j in js.values())
                and js
            )
        )
        tokens = [j.webhook_token for j in jobs.values()]
        assert all(tokens) and len(set(tokens)) == 3
        before = {j.job_id: j.seq for j in jobs.values()}
        # Forged callbacks: a real task id in the body, a video elsewhere.
        forged = {"request_id": sim.submits[0].task_id, "status": "FAILED",
                  "output": {"media_url": f"{foreign}/evil.mp4"}}  # fmt: skip
        for token in ("bogus", sim.submits[0].task_id):
            assert httpx.post(f"{hook_url}?token={token}", json=forged).status_code == 404
        assert httpx.post(hook_url, json=forged).status_code == 404
        assert httpx.post(f"{hook_url}?token={tokens[0]}", json=forged).status_code == 204
        big = httpx.post(f"{hook_url}?token={tokens[0]}", content=b"x" * 70000)
        assert big.status_code == 413
        # A flood for one running task: about one poll a second, not one per callback.
        sim.configure(running_seconds=4.0)
        write_pair(tmp_path / "inbox", "d")
        wait_for(lambda: len(sim.submits) == 4, timeout=20)
        task = sim.submits[3].task_id
        token = wait_for(
            lambda: next(
                (
                    j.webhook_token
                    for j in read_jobs(tmp_path / "state").values()
                    if j.task_id == task
                ),
                None,
            )
        )
        polled = lambda: sum(1 for r in sim.requests if task in r.path)  # noqa: E731
        at_start = polled()
        flood_started = time.monotonic()
        while time.monotonic() - flood_started < 2.0:
            assert httpx.post(f"{hook_url}?token={token}", json={}).status_code == 204
        flood_polls = polled() - at_start
        assert flood_polls <= 4, flood_polls
        wait_for(lambda: len(list((tmp_path / "outbox").glob("*.mp4"))) == 4, timeout=20)
    finally:
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=40) == 0
    after = {j.job_id: j for j in read_jobs(tmp_path / "state").values()}
    assert all(after[job_id].seq == seq for job_id, seq in before.items())
    assert all(j.state is State.DONE for j in after.values())
    assert Recorder.seen == []  # the forged video URL was never fetched
    assert len(outputs(tmp_path)) == 4 and files_under(tmp_path / "failed") == []
