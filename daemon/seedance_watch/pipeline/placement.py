"""Carrying out the file plans of a job: its output into outbox/, or its failure.

A finished job's files go where its ledger record says, in two steps each: the
plan is made durable first (``Placing``: the output's name, the video's hash and
where the inputs move; ``Fail``: the error report and the moves), then the files
follow.  The second step is idempotent, so it is also the crash-recovery path
(:meth:`Placement.finish_placing`, :meth:`Placement.finish_failing`).

The engine decides *when* a job ends; this module knows *how* its files end up in
done/, failed/ and outbox/.  It touches the ledger and the file system, nothing
else, and hands the job back through two callbacks: finished, or download again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import structlog

from seedance_watch import errors as E
from seedance_watch.config import PathsConfig
from seedance_watch.core.budget import BudgetPrices, recorded_cost, submit_time
from seedance_watch.core.jobs import (
    Event,
    Fail,
    Finished,
    Job,
    Placing,
    Redownload,
    State,
    job_files,
)
from seedance_watch.core.names import split_source
from seedance_watch.core.timestamps import iso_utc
from seedance_watch.files.outbox import (
    OutputConflict,
    StagingMissing,
    copy_for_duplicate,
    error_report_rel,
    finish_moves,
    place_output,
    plan_moves,
    plan_output,
    staging_path,
    write_error_report,
)
from seedance_watch.ledger.base import JobStore

__all__ = ["Placement"]

log = structlog.get_logger(__name__)


class ObjectBucket(Protocol):
    """Where a job's uploads are deleted when it ends (``storage.delete_after``)."""

    def delete(self, key: str) -> None: ...


class Placement:
    """Places a job's output (``PLACING → DONE``) or its failure (``FAILING → FAILED``).

    ``on_finished`` is called with each job that reached DONE or FAILED;
    ``download_again`` with the id of a job whose staged video vanished before it
    was placed (the job is back in SUCCEEDED).
    """

    def __init__(
        self,
        *,
        store: JobStore,
        put: Callable[[Job, Event], Job],
        paths: PathsConfig,
        on_finished: Callable[[Job], None],
        download_again: Callable[[str], Awaitable[None]],
        bucket: ObjectBucket | None = None,
        hook_due: Callable[[State], bool] = lambda _state: False,
        prices: BudgetPrices | None = None,
    ) -> None:
        self._ledger = store
        self._prices = prices
        self._put = put
        self._outbox = paths.outbox
        self._roots = {"inbox": paths.inbox, "done": paths.done, "failed": paths.failed}
        self._on_finished = on_finished
        self._download_again = download_again
        self._bucket = bucket
        self._hook_due = hook_due
        # Names planned but not yet carried out (outputs; done/ and failed/ destinations),
        # so two jobs never plan the same one.
        self._planned_outputs: set[str] = set()
        self._planned_moves: set[str] = set()

    def reserve(self, job: Job) -> None:
        """Hold the names a recorded plan uses (recovery: before any new job plans)."""
        if job.output is not None and not job.terminal:
            self._planned_outputs.add(job.output)
        if not job.terminal:
            self._planned_moves.update(_names_of(job))

    async def _release_objects(self, job: Job) -> None:
        """Delete the job's uploads before ``Finished``: a crash in between deletes again.

        Best effort: a bucket that refuses the delete never holds a job back.
        """
        if self._bucket is None:
            return
        for key in job.object_keys:
            try:
                await asyncio.to_thread(self._bucket.delete, key)
            except (E.StorageTransient, E.StorageUnavailable) as exc:
                log.warning("storage.delete_failed", job_id=job.job_id, s3_key=key, reason=str(exc))

    def _release_names(self, job: Job) -> None:
        if job.output is not None:
            self._planned_outputs.discard(job.output)
        self._planned_moves.difference_update(_names_of(job))

    def staging(self, job: Job) -> Path:
        """Where the job's video is downloaded (or copied) before it is placed."""
        sub, _ = split_source(job.source)
        return staging_path(self._outbox, sub, job.job_id)

    # --- output ---------------------------------------------------------------------------------

    async def dedupe(self, job: Job) -> bool:
        """Copy an earlier identical job's video instead of paying again."""
        assert job.content_key is not None
        earlier = self._ledger.find_done_by_content_key(job.content_key)
        if earlier is None or earlier.output is None or earlier.video_sha256 is None:
            return False
        video = self._outbox / earlier.output
        if not video.is_file() or video.stat().st_size != earlier.video_bytes:
            return False
        staging = self.staging(job)
        sha, size = await asyncio.to_thread(copy_for_duplicate, video, staging)
        if sha != earlier.video_sha256:
            staging.unlink(missing_ok=True)
            log.warning("job.dedupe_mismatch", job_id=job.job_id, earlier=earlier.job_id)
            return False
        job = replace(
            job,
            task_id=earlier.task_id,
            submitted_at=earlier.submitted_at,
            completed_at=earlier.completed_at,
            usage=earlier.usage,
        )
        # Name the job that was paid for, even when the earlier one was itself a copy.
        original = earlier.duplicate_of or earlier.job_id
        await self.place(job, sha, size, duplicate_of=original)
        log.info("job.duplicate", job_id=job.job_id, duplicate_of=original)
        return True

    async def place(
        self,
        job: Job,
        sha: str,
        size: int,
        *,
        duplicate_of: str | None = None,
        length: float | None = None,
    ) -> None:
        """Plan the output and the input moves durably, then carry them out.

        ``length`` (the video's seconds, from its header) settles a ``duration:
        auto`` reservation in the same record, before the output JSON shows it.
        """
        sub, stem = split_source(job.source)
        output = plan_output(self._outbox, sub, stem, taken=self._planned_outputs)
        moves = plan_moves(
            self._roots["inbox"],
            sub,
            job_files(job),
            "done",
            self._roots["done"],
            taken=self._planned_moves,
        )
        event = Placing(
            output=output,
            video_sha256=sha,
            video_bytes=size,
            moved_to=moves,
            duplicate_of=duplicate_of,
            cost=_settled(job, length),
        )
        job = self._put(job, event)
        self.reserve(job)
        await self.finish_placing(job)

    async def finish_placing(self, job: Job) -> None:
        """Carry out a PLACING record (idempotent: also the crash-recovery path)."""
        assert job.output is not None and job.video_sha256 is not None
        self._planned_outputs.add(job.output)
        try:
            await asyncio.to_thread(
                place_output,
                outbox=self._outbox,
                staging=self.staging(job),
                output_rel=job.output,
                video_sha256=job.video_sha256,
                metadata=_output_metadata(job, self._prices),
            )
            await asyncio.to_thread(
                finish_moves,
                roots=self._roots,
                moves=job.moved_to,
                job_id=job.job_id,
                expect={i.path: i for i in job.inputs},
            )
        except StagingMissing:
            self._planned_outputs.discard(job.output)
            if job.duplicate_of is not None or job.video_url is None:
                await self.fail(
                    job, E.DownloadFailed("The earlier video to copy vanished during placement.")
                )
                return
            job = self._put(job, Redownload())
            await self._download_again(job.job_id)
            return
        except OutputConflict as exc:
            self._release_names(job)
            # The staged video is this job's own: it must not wait for a restart's sweep.
            self.staging(job).unlink(missing_ok=True)
            await self.fail(job, E.DownloadFailed(f"Could not place the output: {exc}"))
            return
        await self._release_objects(job)
        self._release_names(job)
        job = self._put(job, Finished(hook_due=self._hook_due(State.DONE)))
        self._on_finished(job)
        log.info(
            "job.done",
            job_id=job.job_id,
            output=job.output,
            duplicate_of=job.duplicate_of,
        )

    # --- failure --------------------------------------------------------------------------------

    async def fail(self, job: Job, error: E.JobError) -> None:
        """Record the failure durably, then write the report and move the inputs."""
        self._release_names(job)  # a placement plan it had is replaced
        sub, _ = split_source(job.source)
        moves = plan_moves(
            self._roots["inbox"],
            sub,
            job_files(job),
            "failed",
            self._roots["failed"],
            taken=self._planned_moves,
        )
        report = error.report()
        if isinstance(report.get("hint"), str):  # the retry command names this very job
            report["hint"] = report["hint"].replace("JOB_ID", job.job_id)
        if job.task_id is not None:
            report.setdefault("task_id", job.task_id)
        job = self._put(job, Fail(error=report, moved_to=moves))
        self.reserve(job)
        log.warning(
            "job.failed",
            job_id=job.job_id,
            code=error.code,
            message=error.message,
            task_id=job.task_id,
        )
        await self.finish_failing(job)

    async def finish_failing(self, job: Job) -> None:
        """Carry out a FAILING record (idempotent: also the crash-recovery path)."""
        assert job.error is not None
        report = {
            "job_id": job.job_id,
            "source": job.source,
            **job.error,
            "at": iso_utc(job.updated_at),
        }
        report.setdefault("http_status", None)
        report.setdefault("task_id", job.task_id)
        await asyncio.to_thread(
            write_error_report,
            failed_root=self._roots["failed"],
            report_rel=error_report_rel(job.moved_to),
            report=report,
            job_id=job.job_id,
        )
        await asyncio.to_thread(
            finish_moves,
            roots=self._roots,
            moves=job.moved_to,
            job_id=job.job_id,
            expect={i.path: i for i in job.inputs},
        )
        await self._release_objects(job)
        self._release_names(job)
        job = self._put(job, Finished(hook_due=self._hook_due(State.FAILED)))
        self._on_finished(job)


def _names_of(job: Job) -> list[str]:
    """The done/ and failed/ names a job's plan uses (``failed/…`` with its report)."""
    names = [dst for _, dst in job.moved_to]
    if job.error is not None and job.moved_to:
        names.append("failed/" + error_report_rel(job.moved_to))
    return names


def _settled(job: Job, length: float | None) -> dict[str, Any] | None:
    """``job``'s reservation settled at ``length`` seconds (None: nothing to settle)."""
    cost = recorded_cost(job)
    if cost is None or length is None:
        return None
    settled = cost.settle(length)
    return None if settled == cost else settled.to_dict()


def _cost(job: Job, prices: BudgetPrices | None) -> dict[str, Any] | None:
    """The output JSON's ``cost``: the recorded one, or for a record without one
    (written before costs were kept) its price now; None for a duplicate (a copy of
    an earlier job's video: nothing was paid for it)."""
    currency = prices.currency if prices is not None else "USD"
    cost = recorded_cost(job)
    if cost is None and prices is not None and submit_time(job) is not None:
        cost = prices.cost_of(job)
    return None if cost is None else cost.to_output(currency)


def _output_metadata(job: Job, prices: BudgetPrices | None = None) -> dict[str, Any]:
    """The ``NAME.json`` written beside the video: where it came from and what it cost.

    ``source_sha256`` is the hash of the input at ``source`` (a text or reference
    drop's sidecar), else, for records without inputs (schema v1), the image's; a
    frames drop adds its end image's path and hash, a reference drop its images'
    paths and hashes, in the sidecar's order.  ``cost`` is what the submit cost
    (``amount`` in ``budget.currency``, ``per`` generation or second, the ``seconds``
    charged).
    """
    by_path = {item.path: item for item in job.inputs}
    source = by_path.get(job.source)
    meta: dict[str, Any] = {
        "job_id": job.job_id,
        "kind": job.kind,
        "task_id": job.task_id,
        "model": job.model,
        "prompt": job.prompt,
        "text": job.text,
        "source": job.source,
        "source_sha256": source.sha256 if source is not None else job.image_sha256,
        "video_sha256": job.video_sha256,
        "video_bytes": job.video_bytes,
        "usage": job.usage,
        "cost": _cost(job, prices),
        "submitted_at": iso_utc(job.submitted_at) if job.submitted_at else None,
        "completed_at": iso_utc(job.completed_at) if job.completed_at else None,
    }
    if job.kind == "frames":
        last = next((item for item in job.inputs if item.role == "last_frame"), None)
        meta["last_frame"] = last.path if last is not None else None
        meta["last_frame_sha256"] = last.sha256 if last is not None else None
    if job.kind == "reference":
        references = [item for item in job.inputs if item.role == "reference"]
        meta["references"] = [item.path for item in references]
        meta["reference_sha256s"] = [item.sha256 for item in references]
    if job.duplicate_of is not None:
        meta["duplicate_of"] = job.duplicate_of
    return meta
