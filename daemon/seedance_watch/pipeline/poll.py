"""The poll stage: ask how a submitted task is doing (``SUBMITTED``).

Polls are idempotent, so every transient error is retried until the task's own
deadline (``gateway.task_timeout`` from the submit); a 404 for a task we created
is retried a few times, then the job fails as ``task_not_found``.  The provider
maps the gateway's statuses and builds the error of a task that ended badly.
"""

from __future__ import annotations

import structlog

from seedance_watch import errors as E
from seedance_watch.core.jobs import Job, Stage, TaskSucceeded
from seedance_watch.core.scheduling import task_kind
from seedance_watch.pipeline.stage import Advance, Fail, Outcome, Pause, Retry, StageDeps, Wait
from seedance_watch.providers.base import TaskRef

__all__ = ["TASK_NOT_FOUND_LIMIT", "PollStage"]

log = structlog.get_logger(__name__)

#: A poll answered 404 for a task we submitted this many times fails the job.
TASK_NOT_FOUND_LIMIT = 3


class PollStage:
    stage = Stage.POLL

    def __init__(self, deps: StageDeps) -> None:
        self.deps = deps
        self._not_found: dict[str, int] = {}

    @property
    def interval(self) -> float:
        gw = self.deps.config.gateway
        return gw.webhook_poll_interval if gw.webhook_url else gw.poll_interval

    def forget(self, job_id: str) -> None:
        self._not_found.pop(job_id, None)

    async def run(self, job: Job) -> Outcome:
        d = self.deps
        assert job.task_id is not None
        # While the key is refused, polls pause too; one of them may be the probe.
        wait = d.pauses.credentials.acquire(d.clock())
        if wait > 0:
            return Wait(d.clock() + wait)
        d.observer.polled()
        ref = TaskRef(job.task_id, job.poll_url, job.dialect)
        try:
            status = await d.providers.of(job).task_status(ref)
        except E.TaskNotFound as exc:
            seen = self._not_found[job.job_id] = self._not_found.get(job.job_id, 0) + 1
            if seen >= TASK_NOT_FOUND_LIMIT:
                return Fail(exc)
            return Retry(exc.message)
        except E.CredentialsRefused as exc:
            return Pause("credentials", exc)
        except E.TransientError as exc:
            if self._overdue(job):
                return Fail(self._timeout(job, f"the last poll failed: {exc.message}"))
            return Retry(exc.message, exc.retry_after)
        except E.JobError as exc:  # 400: the gateway refuses to answer for this task
            exc.task_id = exc.task_id or job.task_id
            return Fail(exc)
        self._not_found.pop(job.job_id, None)
        d.observer.gateway_ok()
        d.pauses.credentials_ok()
        log.debug("task.polled", job_id=job.job_id, task_id=job.task_id, status=status.raw_status)
        done = {"pending": False, "succeeded": True}.get(status.state)
        d.estimator.first_polled(job.job_id, done)
        if status.state == "pending":
            if self._overdue(job):
                return Fail(self._timeout(job, f"last status {status.raw_status!r}"))
            return Wait(d.clock() + self.interval)
        if status.state == "succeeded":
            assert status.video_url is not None
            elapsed = d.clock() - (job.submitted_at or d.clock())
            d.estimator.observe(
                task_kind(job.model, job.options, job.text), elapsed, poll_interval=self.interval
            )
            log.info(
                "task.succeeded", job_id=job.job_id, task_id=job.task_id, seconds=round(elapsed, 3)
            )
            return Advance(TaskSucceeded(video_url=status.video_url, usage=status.usage))
        assert status.error is not None
        return Fail(status.error)

    def _overdue(self, job: Job) -> bool:
        elapsed = self.deps.clock() - (job.submitted_at or self.deps.clock())
        return elapsed > self.deps.config.gateway.task_timeout

    def _timeout(self, job: Job, why: str) -> E.TaskTimeout:
        limit = self.deps.config.gateway.task_timeout
        return E.TaskTimeout(
            f"Task {job.task_id} did not finish within {limit:g} s ({why}).",
            task_id=job.task_id,
        )
