"""The engine with a fake clock, a fake provider, a fake store and a fake bucket.

No network, no simulator: each test seeds a job in the in-memory store and checks
what applying one stage outcome (or running one stage) does to the ledger, the
timer heap, the queues and the slots.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from seedance_watch import errors as E
from seedance_watch.core.jobs import ACTIVE_STATES, RESUME, Job, Stage, State, SubmitRefused
from seedance_watch.daemon import health_check
from seedance_watch.pipeline.dispatch import Waiting
from seedance_watch.pipeline.engine import StageCrashed
from seedance_watch.pipeline.poll import TASK_NOT_FOUND_LIMIT
from seedance_watch.pipeline.stage import Advance, Done, Fail, Pause, Retry, Wait
from seedance_watch.service.http import Heartbeat

from .fakes import make_engine, seed

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def test_every_unfinished_state_routes_to_one_stage() -> None:
    """RESUME covers every active state, and recovery and timers share it."""
    assert set(RESUME) == ACTIVE_STATES
    assert RESUME[State.SUBMITTING] is Stage.SUBMIT and RESUME[State.SUBMITTED] is Stage.POLL


async def test_advance_writes_the_event_first_then_routes(tmp_path: Path) -> None:
    """Advance(Submitted) is in the ledger before the job is scheduled for its first poll."""
    engine, store, _, clock = make_engine(tmp_path)
    job = seed(store, State.SUBMITTING, uploads=(("image", "k"),))
    from seedance_watch.core.jobs import Submitted

    await engine.apply(
        job, Stage.SUBMIT, Advance(Submitted("t-9", None, "envelope"), at=clock.now + 7)
    )
    stored = store.get("j1")
    assert stored is not None and stored.state is State.SUBMITTED and stored.task_id == "t-9"
    assert stored.dialect == "envelope"
    # Due for its first poll, and it holds a slot until its task ends.
    assert engine.view().waiting("j1") == Waiting(due=clock.now + 7, holds_slot=True)


async def test_a_failing_status_file_cannot_lose_a_billed_task_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status file write that follows a submit fails (EROFS): the task id is durable
    anyway, and the engine goes on (defect 1 of the hardening issue)."""
    engine, store, _, _ = make_engine(tmp_path)
    job = seed(store, State.SUBMITTING, uploads=(("image", "k"),))

    def broken(*_: Any, **__: Any) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(engine.pauses, "credentials_ok", broken)
    from seedance_watch.core.jobs import Submitted

    await engine.apply(job, Stage.SUBMIT, Advance(Submitted("t-1")))
    stored = store.get("j1")
    assert stored is not None and stored.task_id == "t-1" and stored.state is State.SUBMITTED
    assert engine.fatal is None


async def test_retry_applies_its_event_and_backs_off(tmp_path: Path) -> None:
    """Retry(SubmitRefused) puts the job back to UPLOADED and on the timer heap."""
    engine, store, _, clock = make_engine(tmp_path)
    job = seed(store, State.SUBMITTING, intent_at=5.0)
    with capture_logs() as logs:
        await engine.apply(
            job, Stage.SUBMIT, Retry("HTTP 503", retry_after=3.0, event=SubmitRefused())
        )
    stored = store.get("j1")
    assert stored is not None and stored.state is State.UPLOADED and stored.intent_at is None
    assert engine.view().waiting("j1") == Waiting(due=clock.now + 3.0, holds_slot=False)
    assert [(e["stage"], e["attempt"]) for e in logs if e["event"] == "job.retry"] == [
        (Stage.SUBMIT, 1)
    ]


async def test_wait_schedules_without_counting_an_attempt(tmp_path: Path) -> None:
    """Wait puts the job on the timer heap and ends a run of retries: the next
    retry counts from 1 again."""
    engine, store, _, clock = make_engine(tmp_path)
    job = seed(store, State.SUBMITTED, task_id="t")
    with capture_logs() as logs:
        for _ in range(4):
            await engine.apply(job, Stage.POLL, Retry("poll failed"))
        await engine.apply(job, Stage.POLL, Wait(clock.now + 5))
        waiting = engine.view().waiting("j1")
        await engine.apply(job, Stage.POLL, Retry("poll failed"))
    assert waiting.due == clock.now + 5
    assert [e["attempt"] for e in logs if e["event"] == "job.retry"] == [1, 2, 3, 4, 1]


async def test_pause_keeps_the_job_first_in_line(tmp_path: Path) -> None:
    """Pause(credentials) fails nothing: the job waits at the head of the ready queue."""
    engine, store, _, _ = make_engine(tmp_path)
    job = seed(store, State.SUBMITTING)
    refused = E.CredentialsRefused("bad key", http_status=401)
    await engine.apply(job, Stage.SUBMIT, Pause("credentials", refused, event=SubmitRefused()))
    stored = store.get("j1")
    assert stored is not None and stored.state is State.UPLOADED
    assert engine.view().submit_queue() == ("j1",) and engine.pauses.credentials.is_open


async def test_fail_writes_the_report_and_moves_the_inputs(tmp_path: Path) -> None:
    engine, store, _, _ = make_engine(tmp_path)
    (tmp_path / "inbox" / "beach.jpg").write_bytes(b"x")
    (tmp_path / "inbox" / "beach.yaml").write_text("prompt: p\n")
    job = seed(store, State.SUBMITTED, task_id="t")
    await engine.apply(job, Stage.POLL, Fail(E.TaskFailed("it failed", task_id="t")))
    stored = store.get("j1")
    assert stored is not None and stored.state is State.FAILED
    assert stored.error is not None and stored.error["code"] == "task_failed"
    assert sorted(p.name for p in (tmp_path / "failed").iterdir()) == [
        "beach.error.json",
        "beach.jpg",
        "beach.yaml",
    ]
    assert engine.summary.failed == ["j1"]


async def test_done_changes_nothing(tmp_path: Path) -> None:
    engine, store, _, _ = make_engine(tmp_path)
    job = seed(store, State.PLACING)
    before = len(store.puts)
    await engine.apply(job, Stage.FINISH, Done())
    assert len(store.puts) == before and engine.view().waiting("j1").due is None


async def test_task_not_found_after_the_set_number_of_404s(tmp_path: Path) -> None:
    """docs/design.md, "The gateway protocol": a 404 for a task we submitted is retried, then the
    job fails."""
    engine, store, provider, _ = make_engine(tmp_path)
    job = seed(store, State.SUBMITTED, task_id="t-1", submitted_at=1_000_000.0)
    gone = E.TaskNotFound("the gateway does not know task t-1", task_id="t-1", http_status=404)
    provider.statuses = [gone] * TASK_NOT_FOUND_LIMIT
    for _ in range(TASK_NOT_FOUND_LIMIT - 1):
        await engine.step(Stage.POLL, "j1")
        assert store.get("j1").state is State.SUBMITTED  # type: ignore[union-attr]
    await engine.step(Stage.POLL, "j1")
    stored = store.get("j1")
    assert stored is not None and stored.state is State.FAILED
    assert stored.error is not None and stored.error["code"] == "task_not_found"
    assert job.job_id in engine.summary.failed


async def test_a_crashing_stage_stops_the_daemon_cleanly(tmp_path: Path) -> None:
    """A bug in a stage never leaves a silently dead worker: the engine records a fatal
    error (``/healthz`` turns 503 on it) and ``run`` ends with it."""
    engine, store, _, _ = make_engine(tmp_path)
    seed(store, State.SUCCEEDED, task_id="t", video_url="http://v/x.mp4")

    class Boom:
        stage = Stage.DOWNLOAD

        async def run(self, job: Job) -> Any:
            raise RuntimeError("a bug")

    engine.stages[Stage.DOWNLOAD] = Boom()  # type: ignore[assignment]
    stop = asyncio.Event()

    async def no_watch(_handler: Any) -> None:
        await asyncio.Event().wait()

    engine.inbox.run = no_watch  # type: ignore[attr-defined]
    with pytest.raises(StageCrashed, match="a bug"):
        await asyncio.wait_for(engine.run(stop), timeout=10)
    assert isinstance(engine.fatal, StageCrashed)
    await engine.shutdown(1.0)
    # /healthz says so: 503 with the reason, although the loop beats and the ledger writes.
    check = health_check(Heartbeat(), engine.view())
    healthy, detail = check()
    assert not healthy and "a bug" in detail["engine_error"]


async def test_a_submitting_job_found_at_start_fails_ambiguous_and_is_not_resent(
    tmp_path: Path,
) -> None:
    engine, store, provider, _ = make_engine(tmp_path)
    seed(store, State.SUBMITTING, uploads=(("image", "k"),))
    await engine.step(Stage.SUBMIT, "j1")
    stored = store.get("j1")
    assert stored is not None and stored.state is State.FAILED
    assert stored.error is not None and stored.error["code"] == "submit_ambiguous"
    assert provider.created == []


async def test_submit_sends_the_request_and_a_fresh_url_per_image(tmp_path: Path) -> None:
    """The submit stage presigns every uploaded image and records the task reference."""
    engine, store, provider, _ = make_engine(
        tmp_path, webhook_url="https://me.example/webhooks/pixazo"
    )
    seed(store, State.UPLOADED, kind="frames", uploads=(("image", "k1"), ("last_frame", "k2")))
    from seedance_watch.core.jobs import InputFile

    store.put(
        Job(
            **{
                **store.get("j1").to_dict(),  # type: ignore[union-attr]
                "state": State.UPLOADED,
                "kind": "frames",
                "uploads": (("image", "k1"), ("last_frame", "k2")),
                "inputs": (
                    InputFile("image", "a.jpg", "aa", 1, 1, 1, 1),
                    InputFile("last_frame", "b.jpg", "bb", 1, 1, 2, 1),
                    InputFile("sidecar", "a.yaml", "cc", 1, 1, 3, 1),
                ),
            }
        )
    )
    await engine.step(Stage.SUBMIT, "j1")
    stored = store.get("j1")
    assert stored is not None and stored.state is State.SUBMITTED and stored.task_id == "t-1"
    (created,) = provider.created
    assert created.request.kind == "frames"
    assert created.media == (
        ("image", "https://bucket.example/k1?sig=x"),
        ("last_frame", "https://bucket.example/k2?sig=x"),
    )
    assert stored.webhook_token and created.webhook_url == (
        f"https://me.example/webhooks/pixazo?token={stored.webhook_token}"
    )
    assert engine.poke(stored.webhook_token) and not engine.poke("bogus")


async def test_a_burst_of_429s_slows_submits_but_never_below_a_quarter(tmp_path: Path) -> None:
    """Adaptive limiting after 429s halves the submit rate, down to a quarter of
    gateway.requests_per_minute at most (not to one a minute: minutes of stall)."""
    engine, store, provider, _ = make_engine(tmp_path, requests_per_minute=60)
    for _ in range(10):
        seed_uploaded = seed(store, State.UPLOADED, uploads=(("image", "k"),))
        provider.submits.append(E.RateLimited("slow down", retry_after=1.0, http_status=429))
        await engine.step(Stage.SUBMIT, seed_uploaded.job_id)
        assert store.get("j1").state is State.UPLOADED  # type: ignore[union-attr]
    assert len(provider.created) == 10 and not provider.submits
    assert engine.view().submit_rate() == 15.0


async def test_an_object_refused_alone_fails_its_job_and_ends_a_storage_pause(
    tmp_path: Path,
) -> None:
    """The bucket refused one object but answers a HEAD (StorageRejected): the upload
    stage fails that job alone, and the storage pause it was probing for ends, so the
    other uploads go on (issue 21, item 4: one object name paused every upload).  The
    keys are the job id and the role, never the file's name."""
    engine, store, _, clock = make_engine(tmp_path)
    (tmp_path / "inbox" / "beach.jpg").write_bytes(b"bytes")
    job = seed(store, State.NEW)
    keys: list[str] = []

    def refuse(path: Path, key: str, **_: Any) -> int:
        keys.append(key)
        raise E.StorageRejected("S3 upload failed for s3://b/p/j1/image.jpg: NoSuchKey")

    engine.deps.storage.upload = refuse  # type: ignore[method-assign]
    engine.pauses.pause_storage("S3 upload failed: an earlier refusal")
    clock.now += 60  # the probe is due: this upload is it
    outcome = await engine.stages[Stage.UPLOAD].run(job)
    assert isinstance(outcome, Fail) and outcome.error.code == "storage_rejected"
    assert keys == ["p/j1/image.jpg"]
    assert not engine.pauses.storage.is_open


async def test_with_one_slot_free_waiting_jobs_go_by_priority(tmp_path: Path) -> None:
    """Three uploaded jobs with priorities 0, 5 and 10, dropped together, reach the
    gateway 10, 5, 0 when one slot frees at a time (max_in_flight 1)."""
    engine, store, provider, _ = make_engine(tmp_path, max_in_flight=1)
    base = seed(store, State.UPLOADED, uploads=(("image", "k/j1"),))
    for job_id, priority in (("p0", 0), ("p5", 5), ("p10", 10)):
        store.put(dataclasses.replace(base, job_id=job_id, priority=priority))
    submitter = asyncio.create_task(engine.dispatch.submitter())
    order = ("p10", "p5", "p0")
    try:
        for job_id in ("p0", "p5", "p10"):
            engine.dispatch.route(store.get(job_id))  # type: ignore[arg-type]
        for n, job_id in enumerate(order, 1):
            deadline = asyncio.get_running_loop().time() + 10
            while len(provider.created) < n or store.get(job_id).task_id is None:  # type: ignore[union-attr]
                assert asyncio.get_running_loop().time() < deadline, provider.created
                await asyncio.sleep(0.01)
            assert len(provider.created) == n  # one slot: the next waits for it
            job = store.get(job_id)
            assert job is not None and job.task_id == f"t-{n}"
            engine.dispatch.track(dataclasses.replace(job, state=State.DONE))  # slot freed
    finally:
        submitter.cancel()
        await asyncio.gather(submitter, return_exceptions=True)


PRESIGNED = (
    "https://bucket.s3.example/in/a.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLE%2F20260101&X-Amz-Signature=deadbeef"
)
CALLBACK = "https://me.example/webhooks/pixazo?token=per-job-secret-abc"


async def test_a_url_in_a_gateway_error_keeps_no_query_in_the_report(tmp_path: Path) -> None:
    """A gateway error quoting a presigned URL (a credential while it is valid) or our
    webhook URL (its token) fails the job with both URLs cut at the query string: in
    the ledger's error (which the page, ``status`` and notifications read) and in the
    error report (item 13 of the third hardening round)."""
    engine, store, _, _ = make_engine(tmp_path)
    (tmp_path / "inbox" / "beach.jpg").write_bytes(b"x")
    (tmp_path / "inbox" / "beach.yaml").write_text("prompt: p\n")
    job = seed(store, State.SUBMITTED, task_id="t")
    error = E.TaskFailed(f"could not fetch {PRESIGNED}; callback {CALLBACK} refused", task_id="t")
    error.hint = f"see {PRESIGNED}"
    await engine.apply(job, Stage.POLL, Fail(error))
    stored = store.get("j1")
    assert stored is not None and stored.error is not None
    report = (tmp_path / "failed" / "beach.error.json").read_text()
    for text in (stored.error["message"], stored.error["hint"], report):
        assert "X-Amz-" not in text and "deadbeef" not in text and "per-job-secret" not in text
    assert stored.error["message"] == (
        "could not fetch https://bucket.s3.example/in/a.jpg; "
        "callback https://me.example/webhooks/pixazo refused"
    )


class Told:
    """An Announcer that keeps what it was told."""

    def __init__(self) -> None:
        self.pauses: list[tuple[str, str]] = []

    def job_ended(self, end: Any) -> None:
        pass

    def pause_started(self, reason: str, message: str, lifts_at: float | None = None) -> None:
        self.pauses.append((reason, message))

    def pause_ended(self, reason: str) -> None:
        pass

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109
        return True


async def test_a_url_in_a_pause_reason_keeps_no_query(tmp_path: Path) -> None:
    """A pause whose reason quotes a presigned URL (the bucket's answer, the gateway's)
    records and announces it without the query string: daemon.json (``status``, the
    page) and the notification."""
    engine, _, _, _ = make_engine(tmp_path)
    told = Told()
    engine.pauses._notes = told
    engine.pauses.pause_storage(f"the bucket refused {PRESIGNED}")
    engine.pauses.pause_credentials(
        E.CredentialsRefused(f"403 for {CALLBACK} and {PRESIGNED}", http_status=403)
    )
    daemon_json = (tmp_path / "state" / "daemon.json").read_text()
    for text in [daemon_json, *(message for _, message in told.pauses)]:
        assert "X-Amz-" not in text and "per-job-secret" not in text, text
    assert told.pauses[0] == ("storage", "the bucket refused https://bucket.s3.example/in/a.jpg")


async def test_a_late_callback_of_a_finished_job_is_known_after_a_restart(
    tmp_path: Path,
) -> None:
    """A finished job's webhook token stays known while the daemon runs (a late callback
    gets 204), and so it does after a restart: recovery knows the tokens of every job
    in the store, not only the unfinished ones (item 14 of the third hardening round)."""
    from dataclasses import replace

    engine, store, _, _ = make_engine(tmp_path)
    done = seed(store, State.DONE, webhook_token="late-token", task_id="t-1")
    store.put(replace(done, job_id="j2", state=State.FAILED, webhook_token="failed-token"))
    store.put(replace(done, job_id="j3", state=State.SUBMITTED, webhook_token="live-token"))
    await engine.recover()
    for token in ("late-token", "failed-token", "live-token"):
        assert engine.poke(token), token
    assert not engine.poke("bogus") and not engine.poke("")
    # The job that ends now, while the daemon runs, keeps its token known too.
    live = store.get("j3")
    assert live is not None
    await engine.apply(live, Stage.POLL, Fail(E.TaskFailed("it failed", task_id="t-1")))
    assert store.get("j3").state is State.FAILED and engine.poke("live-token")  # type: ignore[union-attr]


async def test_a_submit_that_wrote_no_intent_frees_its_slot(tmp_path: Path) -> None:
    """The submitter takes a slot before the submit step runs; when the step writes no
    intent (the shared store's database away, or this host's lease not valid), the slot
    is free again, so that with max_in_flight 1 the host still submits after the
    renewal (it stalled for good)."""
    engine, store, provider, _ = make_engine(tmp_path, max_in_flight=1)
    seed(store, State.UPLOADED, uploads=(("image", "k"),))
    real_put_intent = store.put_intent

    def away(*_: Any, **__: Any) -> None:
        raise E.StoreUnavailable("the database is out of reach")

    store.put_intent = away  # type: ignore[method-assign]
    engine.dispatch.in_flight.add("j1")  # as the submitter does
    with capture_logs():
        await engine.step(Stage.SUBMIT, "j1")
    assert "j1" not in engine.dispatch.in_flight
    assert provider.created == [] and store.get("j1").state is State.UPLOADED  # type: ignore[union-attr]

    store.put_intent = real_put_intent  # type: ignore[method-assign]
    engine.session.valid = lambda: False  # type: ignore[method-assign]
    engine.dispatch.in_flight.add("j1")
    await engine.step(Stage.SUBMIT, "j1")
    assert "j1" not in engine.dispatch.in_flight and provider.created == []

    engine.session.valid = lambda: True  # type: ignore[method-assign]
    engine.dispatch.in_flight.add("j1")
    await engine.step(Stage.SUBMIT, "j1")  # renewed: the one slot takes the submit
    assert len(provider.created) == 1 and engine.dispatch.in_flight == {"j1"}
    assert store.get("j1").state is State.SUBMITTED  # type: ignore[union-attr]
