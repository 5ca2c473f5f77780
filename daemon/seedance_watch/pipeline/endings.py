"""After a job ends: its notification and its hook (docs/design.md, "Hooks and notifications").

Both run off the pipeline: a notification is queued (Apprise sends it from its
own thread), a hook runs in a bounded pool of subprocesses.  Neither can block or
fail a job.  A hook runs after the job's end is durable; ``HookRan`` is recorded
when it returns, so a hook that a crash interrupted runs again after the restart
(the job's ``Finished`` record said a hook was due) and one that finished does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import PurePosixPath
from typing import Any

import structlog

from seedance_watch.config import PathsConfig
from seedance_watch.core.jobs import Event, HookRan, Job, State
from seedance_watch.files.outbox import error_report_rel
from seedance_watch.pipeline.ports import Announcer, HookRunner, JobEnd

__all__ = ["Endings", "job_end"]

log = structlog.get_logger(__name__)


class Endings:
    """Tells people and their programs that a job ended."""

    def __init__(
        self,
        paths: PathsConfig,
        *,
        hooks: HookRunner | None,
        notes: Announcer | None,
        get: Callable[[str], Job | None],
        put: Callable[[Job, Event], Job],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self._paths, self.hooks, self.notes = paths, hooks, notes
        self._get, self._put, self._spawn = get, put, spawn

    def hook_due(self, state: State) -> bool:
        """Whether a job ending in ``state`` has a hook to run (recorded in ``Finished``)."""
        if self.hooks is None:
            return False
        return self.hooks.command("done" if state is State.DONE else "failed") is not None

    def ended(self, job: Job) -> None:
        """``job`` is durably DONE or FAILED."""
        if self.notes is None and not (job.hook_due and not job.hook_done):
            return  # nobody to tell
        try:
            end = job_end(job, self._paths)
        except ValueError:
            log.exception("job.end_unreadable", job_id=job.job_id)
            return
        if self.notes is not None:
            self.notes.job_ended(end)
        if job.hook_due and not job.hook_done:
            self._spawn(self._run_hook(job.job_id, end))

    def resume(self, jobs: list[Job]) -> int:
        """Start-up: run the hooks a crash interrupted (due, not recorded as ran)."""
        due = [j for j in jobs if j.terminal and j.hook_due and not j.hook_done]
        for job in due:
            self.ended_hook_only(job)
        return len(due)

    def ended_hook_only(self, job: Job) -> None:
        try:
            end = job_end(job, self._paths)
        except ValueError:
            return
        self._spawn(self._run_hook(job.job_id, end))

    async def _run_hook(self, job_id: str, end: JobEnd) -> None:
        assert self.hooks is not None
        await self.hooks.run(end)  # never raises but CancelledError (then: not recorded)
        job = self._get(job_id)
        if job is not None and not job.hook_done:
            self._put(job, HookRan())

    # Notifications wait in a thread, which asyncio cannot cancel: it needs its own bound.
    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109
        """``run --once``: wait (bounded) for hooks and notifications still going."""
        if self.hooks is not None:
            try:
                async with asyncio.timeout(timeout):
                    await self.hooks.wait_idle()
            except TimeoutError:
                log.warning("hook.drain_timeout", timeout=timeout)
        if self.notes is not None:
            await self.notes.drain(timeout)


def job_end(job: Job, paths: PathsConfig) -> JobEnd:
    """The end of a DONE or FAILED job record, with the paths its end left behind."""
    if job.state is State.DONE:
        if job.output is None:
            raise ValueError(f"job {job.job_id} is done without an output")
        output = paths.outbox.joinpath(*PurePosixPath(job.output).parts)
        return JobEnd("done", job.job_id, job.source, output.with_suffix(".json"), output)
    if job.state is State.FAILED:
        error = job.error or {}
        report = paths.failed.joinpath(*PurePosixPath(error_report_rel(job.moved_to)).parts)
        return JobEnd(
            "failed",
            job.job_id,
            job.source,
            report,
            code=str(error.get("code") or "unknown"),
            message=_text(error.get("message")),
            hint=_text(error.get("hint")),
        )
    raise ValueError(f"job {job.job_id} has not ended (state {job.state})")


def _text(value: object) -> str | None:
    return None if value is None else str(value)
