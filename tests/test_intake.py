"""The intake stage: a ready event's files become a routed job (real files)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from seedance_watch import errors as E
from seedance_watch.config import Config
from seedance_watch.core.jobs import Job, State
from seedance_watch.core.stability import Orphan, PairReady
from seedance_watch.files.drop import event_files
from seedance_watch.pipeline.intake import Intake
from tests.test_drop import NOW, reference_drop


def folders_config(tmp_path: Path) -> Config:
    """A config whose five folders are below ``tmp_path`` (none created)."""
    return Config.model_validate(
        {
            "paths": {k: str(tmp_path / k) for k in ("inbox", "outbox", "done", "failed", "state")},
            "storage": {"bucket": "b"},
            "dedupe": False,
        }
    )


class Store(dict[str, Job]):
    """The store intake needs, of one host: a claim records the job (nothing is anyone
    else's)."""

    def put(self, job: Job) -> None:
        self[job.job_id] = job

    def claim(self, job: Job) -> None:
        self[job.job_id] = job

    def find(self, job_id: str) -> Job | None:
        return self.get(job_id)


def drain(
    intake: Intake,
    events: list[Any],
    route: Callable[[Job], None],
    fail: Callable[[Job, E.JobError], Awaitable[None]],
    later: list[Any] | None = None,
) -> None:
    """Submit ``events``, run one intake worker until none is pending, then run each
    ``finish`` the store left for later (the database answering again)."""

    async def main() -> None:
        for event in events:
            intake.submit(event, event_files(event))
        idle = asyncio.Event()
        worker = asyncio.create_task(
            intake.worker(route, fail, guard=None, idle=idle.set)  # type: ignore[arg-type]
        )
        try:
            async with asyncio.timeout(10):
                while intake.pending:
                    idle.clear()
                    await idle.wait()
                for finish in later or []:
                    await finish()
        finally:
            worker.cancel()

    asyncio.run(main())


def bad_drop(inbox: Path) -> PairReady:
    """bad.jpg (not an image) and its sidecar in ``inbox``: a drop that fails."""
    inbox.mkdir(parents=True)
    (inbox / "bad.jpg").write_bytes(b"not an image at all")
    (inbox / "bad.yaml").write_text("prompt: a calm sea\n")
    return PairReady("bad", "bad.jpg", "bad.yaml")


def test_intake_takes_a_ready_reference_drop_with_its_images(tmp_path: Path) -> None:
    """The intake stage hands the event's references to the examination: the job routed
    on holds them, in order."""
    config = folders_config(tmp_path)
    reference_drop(config.paths.inbox, refs=("b.jpg", "a.jpg"))

    store = Store()
    routed: list[Job] = []
    intake = Intake(config, store, placement=None, clock=lambda: NOW)  # type: ignore[arg-type]

    async def main() -> None:
        taken = asyncio.Event()

        def route(job: Job) -> None:
            routed.append(job)
            taken.set()

        async def fail(job: Job, error: E.JobError) -> None:
            raise AssertionError(f"the drop failed: {error.message}")

        event = PairReady("ad", None, "ad.yaml", references=("b.jpg", "a.jpg"))
        intake.submit(event, event_files(event))
        worker = asyncio.create_task(intake.worker(route, fail, guard=None))  # type: ignore[arg-type]
        try:
            async with asyncio.timeout(10):
                await taken.wait()
        finally:
            worker.cancel()

    asyncio.run(main())
    (job,) = routed
    assert job.kind == "reference" and store[job.job_id] == job
    assert [(i.role, i.path) for i in job.inputs] == [
        ("sidecar", "ad.yaml"),
        ("reference", "b.jpg"),
        ("reference", "a.jpg"),
    ]


def test_a_drop_whose_files_all_left_before_intake_makes_no_job(tmp_path: Path) -> None:
    """A pair (or an orphan) that left the inbox before it was examined (taken back, or
    ended by another host of a shared store) makes no job and no failure; a pair of which one
    file is still there fails as input_vanished, so that file moves to failed/."""
    config = folders_config(tmp_path)
    inbox = config.paths.inbox
    inbox.mkdir(parents=True)
    (inbox / "half.yaml").write_text("prompt: a calm sea\n")  # half.jpg is gone already
    store = Store()
    failed: list[tuple[str, str]] = []
    intake = Intake(config, store, placement=None, clock=lambda: NOW)  # type: ignore[arg-type]

    def route(job: Job) -> None:
        raise AssertionError(f"{job.source} was routed")

    async def fail(job: Job, error: E.JobError) -> None:
        failed.append((job.source, error.code))

    pairs = [PairReady(stem, f"{stem}.jpg", f"{stem}.yaml") for stem in ("gone", "half")]
    orphan = Orphan("lone.jpg", "missing_sidecar")  # failed elsewhere meanwhile
    with capture_logs() as logs:
        drain(intake, [*pairs, orphan], route, fail)
    assert failed == [("half.jpg", "input_vanished")]
    vanished = [e["files"] for e in logs if e["event"] == "inbox.drop_vanished"]
    assert vanished == [["gone.jpg", "gone.yaml"], ["lone.jpg"]]


def test_a_failing_drop_whose_store_went_away_after_its_claim_still_fails(
    tmp_path: Path,
) -> None:
    """A shared store claims the drop, then goes away before its failure is written:
    once it answers again, the drop fails with its own error -- it is never started
    as if it were valid (it would be uploaded and submitted)."""
    config = folders_config(tmp_path)
    event = bad_drop(config.paths.inbox)
    store = Store()
    failed: list[str] = []
    later: list[Any] = []
    intake = Intake(config, store, placement=None, clock=lambda: NOW)  # type: ignore[arg-type]
    intake.store_down = lambda exc, finish: later.append(finish)

    def route(job: Job) -> None:
        raise AssertionError(f"{job.source} was routed to an upload")

    async def fail(job: Job, error: E.JobError) -> None:
        if not later:
            raise E.StoreUnavailable("the database is out of reach")
        failed.append(error.code)

    drain(intake, [event], route, fail, later)
    assert len(later) == 1 and failed == ["invalid_image"]


def test_a_drop_whose_failure_was_written_before_the_store_went_away_ends_from_it(
    tmp_path: Path,
) -> None:
    """The failure of a drop is recorded, then the store goes away before its end is:
    once it answers, the job goes on from its record (the finish stage, as at
    recovery) -- failing it a second time was an illegal transition that stopped the
    daemon."""
    config = folders_config(tmp_path)
    event = bad_drop(config.paths.inbox)
    store = Store()
    fails: list[str] = []
    routed: list[Job] = []
    later: list[Any] = []
    intake = Intake(config, store, placement=None, clock=lambda: NOW)  # type: ignore[arg-type]
    intake.store_down = lambda exc, finish: later.append(finish)

    async def fail(job: Job, error: E.JobError) -> None:
        fails.append(error.code)
        store[job.job_id] = dataclasses.replace(job, state=State.FAILING)  # written...
        raise E.StoreUnavailable("the database is out of reach")  # ...its end is not

    drain(intake, [event], routed.append, fail, later)
    assert len(later) == 1 and fails == ["invalid_image"]
    assert [(job.source, job.state) for job in routed] == [("bad.jpg", State.FAILING)]
