"""The download stage: a succeeded task's video into a staging file (``SUCCEEDED``).

The shared downloader checks and fsyncs it; a broken body is retried in this
coroutine (stamina) within the download budget, a gone URL fails the job.  A
checked video is handed back as :class:`Place`: the engine places it.  When the
job's cost is a ``duration: auto`` reservation, the video's length is read from
its header here, so that placement records the settled cost before the output.
"""

from __future__ import annotations

import asyncio
import time

import stamina
import structlog

from seedance_watch import errors as E
from seedance_watch.core.budget import recorded_cost
from seedance_watch.core.jobs import Job, Stage
from seedance_watch.core.scheduling import STAGE_POLICIES
from seedance_watch.files.fsutil import make_dirs
from seedance_watch.files.mp4 import video_seconds
from seedance_watch.pipeline.placement import Placement
from seedance_watch.pipeline.stage import Done, Fail, Outcome, Place, StageDeps

__all__ = ["DownloadStage"]

log = structlog.get_logger(__name__)


class DownloadStage:
    stage = Stage.DOWNLOAD

    def __init__(self, deps: StageDeps, placement: Placement) -> None:
        self.deps = deps
        self.placement = placement

    async def run(self, job: Job) -> Outcome:
        d = self.deps
        if job.video_url is None:
            return Done()
        staging = self.placement.staging(job)
        # The staging name may be a hard link to a placed video after a crash mid-move:
        # unlink it rather than truncate it.
        staging.unlink(missing_ok=True)
        await asyncio.to_thread(make_dirs, staging.parent)
        started = time.monotonic()
        policy = STAGE_POLICIES[self.stage]
        hook = d.retry_hook(job.job_id, self.stage, E.DownloadIncomplete)
        # Only the attempts themselves hold up a shutdown, not the waits between them.
        try:
            async for attempt in stamina.retry_context(
                on=hook, attempts=policy.attempts, timeout=None
            ):
                with attempt, d.critical():
                    result = await d.downloader.download(
                        job.video_url, staging, max_bytes=d.config.gateway.max_video_bytes
                    )
        except E.DownloadIncomplete as exc:
            what = f"after {hook.attempts} attempt(s): {exc.message}"
            return Fail(self._failed(job, what, exc.http_status))
        except E.DownloadFailed as exc:
            gone = " (its URL has probably expired)" if exc.http_status in (403, 404) else ""
            return Fail(self._failed(job, f": {exc.message}{gone}", exc.http_status))
        d.observer.downloaded(result.size, time.monotonic() - started)
        length = None
        cost = recorded_cost(job)
        if cost is not None and not cost.settled:
            length = await asyncio.to_thread(video_seconds, staging)
            if length is None:
                # The reservation stands (the longest duration): never under-counted.
                log.warning("budget.length_unknown", job_id=job.job_id, cents=cost.cents)
        return Place(result.sha256, result.size, length)

    @staticmethod
    def _failed(job: Job, what: str, status: int | None) -> E.DownloadFailed:
        sep = "" if what.startswith(":") else " "
        return E.DownloadFailed(
            f"The video of task {job.task_id} could not be downloaded{sep}{what}",
            task_id=job.task_id,
            http_status=status,
        )
