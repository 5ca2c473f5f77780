"""``seedance-watch retry``: failed jobs' inputs go back to the inbox as new drops.

Works whether or not the daemon runs: it reads the store through a
:class:`~seedance_watch.ledger.base.JobReader` (which takes nothing from a running
daemon) and only moves files (failed/ → inbox/) and removes the error report; the daemon
sees the files as a new drop, with a new job id.  A ``submit_ambiguous`` job is
therefore submitted once more, on purpose.  Every file of the drop comes back (a
frames drop's three, a text drop's sidecar, a reference drop's sidecar and images)
under its inbox name; when the image's or the sidecar's name is taken there, both
take one free ``NAME-N``, while a file the sidecar names (a last frame, a reference
image) keeps its name or, when that is taken, the job stays.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from seedance_watch.config import Config
from seedance_watch.core.jobs import Job, State
from seedance_watch.core.stability import CLAIM_ROLES
from seedance_watch.files.fsutil import move_file, next_free_suffix
from seedance_watch.files.outbox import error_report_rel
from seedance_watch.ledger import open_reader
from seedance_watch.ledger.base import JobReader

__all__ = ["RequeueResult", "requeue"]


@dataclass
class RequeueResult:
    moved: dict[str, list[str]] = field(default_factory=dict)  # job_id → inbox paths
    problems: dict[str, str] = field(default_factory=dict)  # job_id → why not


def requeue(
    config: Config,
    job_ids: Iterable[str],
    *,
    all_failed: bool = False,
    reader: JobReader | None = None,
) -> RequeueResult:
    """Move the inputs of the failed jobs ``job_ids`` (and with ``all_failed``, of every
    failed job whose inputs still wait in failed/) back to the inbox.

    ``reader``: the store to read (default: the one ``config`` names).
    """
    if reader is None:
        with contextlib.closing(open_reader(config)) as own:
            jobs = {job.job_id: job for job in own.snapshot()}
    else:
        jobs = {job.job_id: job for job in reader.snapshot()}
    result = RequeueResult()
    wanted = [j.job_id for j in jobs.values() if j.state is State.FAILED] if all_failed else []
    for job_id in wanted:
        # ``--failed`` means the failed jobs whose inputs still wait in failed/; a job
        # retried before (its inputs went back to the inbox) is history, not a problem.
        failed = jobs[job_id]
        if any(_resolve(_roots(config), dst).exists() for _, dst in failed.moved_to):
            _requeue_job(config, failed, result)
    for job_id in job_ids:
        job = jobs.get(job_id)
        if job is None:
            result.problems[job_id] = "no such job in the ledger"
        elif job.state is not State.FAILED:
            result.problems[job_id] = f"the job is {job.state.value}, not failed"
        else:
            _requeue_job(config, job, result)
    return result


def _roots(config: Config) -> dict[str, Path]:
    return {"failed": config.paths.failed, "done": config.paths.done}


def _requeue_job(config: Config, job: Job, result: RequeueResult) -> None:
    roots = _roots(config)
    present = [(src, dst) for src, dst in job.moved_to if _resolve(roots, dst).exists()]
    if not present:
        if not all(_is_failed(dst) for _, dst in job.moved_to) or not job.moved_to:
            result.problems[job.job_id] = "its inputs are not in failed/"
        else:
            result.problems[job.job_id] = "its inputs are no longer in failed/ (already retried?)"
        return
    inbox = config.paths.inbox
    # A last frame or a reference image keeps its inbox name: the sidecar names it.
    # The image and the sidecar share one free stem, so that they stay a pair (a text
    # or reference drop: its sidecar).
    named = {item.path for item in job.inputs if item.role in CLAIM_ROLES}
    kept = [src for src, _ in present if src in named]
    paired = [src for src, _ in present if src not in named]
    busy = [src for src in kept if os.path.lexists(inbox / src)]
    if busy:
        result.problems[job.job_id] = (
            f"the inbox already holds {', '.join(busy)}, which its sidecar names; "
            "move that file away and retry"
        )
        return
    targets = {src: PurePosixPath(src) for src in kept}
    if paired:
        # ``beach`` → ``beach-2``: every paired file takes that same ``-N``.
        folder = inbox / PurePosixPath(paired[0]).parent
        parts = [(PurePosixPath(src).stem, PurePosixPath(src).suffix) for src in paired]
        tail = next_free_suffix(folder, parts)
        for src in paired:
            path = PurePosixPath(src)
            targets[src] = path.with_stem(path.stem + tail)
    moved: list[str] = []
    for src, dst in present:
        move_file(_resolve(roots, dst), inbox / targets[src])
        moved.append(str(targets[src]))
    report = config.paths.failed / error_report_rel(job.moved_to)
    report.unlink(missing_ok=True)
    result.moved[job.job_id] = moved


def _is_failed(dst: str) -> bool:
    return dst.startswith("failed/")


def _resolve(roots: dict[str, Path], dst: str) -> Path:
    kind, _, rel = dst.partition("/")
    return roots[kind] / rel
