"""``seedance-watch retry``: failed jobs' inputs go back to the inbox as new drops.

Works whether or not the daemon runs: it reads the store through a
:class:`~seedance_watch.ledger.base.JobReader` (which takes nothing from a running
daemon), records a retry request (``ledger/retries.py``; on a shared store, its
table, so that whichever host takes the drop knows it), moves the files (failed/ →
inbox/) and removes the error report; the daemon sees the files as a new drop, with a
new job id that points back to the failed job (``retry_of``), and the failed job
becomes ``retried``, pointing to it (``retried_as``): docs/design.md, "Retry".

A job acts only on its own files: a name in failed/ that a newer job has used since
(the retried drop failed again under the same name, say) holds that job's file, and
the retry is refused naming it, unless the file there is still this job's very file
(its inode, or its bytes).  A file no other job names is this job's, edited or not:
fixing a sidecar in failed/ before a retry is the usual way.  A ``submit_ambiguous`` or
``task_timeout`` job may exist at the gateway and be billed: ``--failed`` skips those
and says why, and naming one needs ``include_ambiguous``.

Every file of the drop comes back (a frames drop's three, a text drop's sidecar, a
reference drop's sidecar and images) under its inbox name; when the image's or the
sidecar's name is taken there, both take one free ``NAME-N``, while a file the
sidecar names (a last frame, a reference image) keeps its name or, when that is
taken, the job stays.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from seedance_watch.config import Config
from seedance_watch.core.failures import AMBIGUOUS_CODES
from seedance_watch.core.jobs import InputFile, Job, State
from seedance_watch.core.stability import CLAIM_ROLES
from seedance_watch.files.fsutil import Identity, identify, move_file, next_free_suffix
from seedance_watch.files.outbox import error_report_rel, sha256_file
from seedance_watch.ledger import open_reader, open_retries
from seedance_watch.ledger.base import JobReader, RetryRequests
from seedance_watch.ledger.retries import RetryFile

__all__ = ["AMBIGUOUS_CODES", "RequeueResult", "requeue"]


@dataclass
class RequeueResult:
    moved: dict[str, list[str]] = field(default_factory=dict)  # job_id → inbox paths
    problems: dict[str, str] = field(default_factory=dict)  # job_id → why not
    skipped: dict[str, str] = field(default_factory=dict)  # job_id → why --failed left it


def requeue(
    config: Config,
    job_ids: Iterable[str],
    *,
    all_failed: bool = False,
    include_ambiguous: bool = False,
    reader: JobReader | None = None,
) -> RequeueResult:
    """Move the inputs of the failed jobs ``job_ids`` (and with ``all_failed``, of every
    failed job whose inputs still wait in failed/) back to the inbox.

    ``include_ambiguous``: also those whose task may exist and be billed.  ``reader``:
    the store to read (default: the one ``config`` names).
    """
    if reader is None:
        with contextlib.closing(open_reader(config)) as own:
            jobs = {job.job_id: job for job in own.snapshot()}
    else:
        jobs = {job.job_id: job for job in reader.snapshot()}
    with contextlib.closing(open_retries(config)) as book:
        return _requeue(config, jobs, job_ids, all_failed, include_ambiguous, book)


def _requeue(
    config: Config,
    jobs: dict[str, Job],
    job_ids: Iterable[str],
    all_failed: bool,
    include_ambiguous: bool,
    book: RetryRequests,
) -> RequeueResult:
    result = RequeueResult()
    sent_back = book.pending()
    wanted = [j.job_id for j in jobs.values() if j.state is State.FAILED] if all_failed else []
    for job_id in wanted:
        # ``--failed`` means the failed jobs whose inputs still wait in failed/; a job
        # whose inputs went back already waits for the daemon, not for another retry.
        failed = jobs[job_id]
        if job_id in sent_back or not any(
            _resolve(_roots(config), dst).exists() for _, dst in failed.moved_to
        ):
            continue
        code = (failed.error or {}).get("code")
        if code in AMBIGUOUS_CODES and not include_ambiguous:
            result.skipped[job_id] = _ambiguous(code)
            continue
        _requeue_job(config, failed, jobs, book, result)
    for job_id in job_ids:
        job = jobs.get(job_id)
        code = (job.error or {}).get("code") if job is not None else None
        if job is None:
            result.problems[job_id] = "no such job in the ledger"
        elif job.state is State.RETRIED:
            result.problems[job_id] = f"already retried: its drop became job {job.retried_as}"
        elif job.state is not State.FAILED:
            result.problems[job_id] = f"the job is {job.state.value}, not failed"
        elif code in AMBIGUOUS_CODES and not include_ambiguous:
            result.problems[job_id] = _ambiguous(code) + "; add --include-ambiguous to retry it"
        elif job_id in sent_back:
            result.problems[job_id] = (
                "already retried: its inputs were sent back to the inbox, where the daemon "
                "takes them as a new drop"
            )
        else:
            _requeue_job(config, job, jobs, book, result)
    return result


def _ambiguous(code: object) -> str:
    return (
        f"{code}: its task may exist at the gateway and be billed; a retry would pay "
        "again (check the gateway's dashboard first)"
    )


def _roots(config: Config) -> dict[str, Path]:
    return {"failed": config.paths.failed, "done": config.paths.done}


def _requeue_job(
    config: Config, job: Job, jobs: dict[str, Job], book: RetryRequests, result: RequeueResult
) -> None:
    roots = _roots(config)
    present = [(src, dst) for src, dst in job.moved_to if _resolve(roots, dst).exists()]
    if not present:
        if not all(_is_failed(dst) for _, dst in job.moved_to) or not job.moved_to:
            result.problems[job.job_id] = "its inputs are not in failed/"
        else:
            result.problems[job.job_id] = "its inputs are no longer in failed/"
        return
    inputs = {item.path: item for item in job.inputs}
    for src, dst in present:
        # A newer job that moved a file to the same name owns what is there now, unless
        # it is still this job's very file.  (A file no other job names is this job's,
        # edited or not: fixing a sidecar in failed/ before a retry is the usual way.)
        owner = _newer_owner(dst, job, jobs)
        if owner is not None and not _is_same(_resolve(roots, dst), inputs.get(src)):
            result.problems[job.job_id] = (
                f"{dst} belongs to job {owner} now (this job's file left failed/ since); "
                "nothing moved"
            )
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
    # The request first: the daemon may take the drop as soon as the files land.
    book.request(
        job.job_id,
        [
            RetryFile(
                str(targets[src]),
                _resolve(roots, dst).lstat().st_size,
                inputs[src].sha256 if src in inputs else "",
            )
            for src, dst in present
        ],
    )
    moved: list[str] = []
    for src, dst in present:
        move_file(_resolve(roots, dst), inbox / targets[src])
        moved.append(str(targets[src]))
    report = config.paths.failed / error_report_rel(job.moved_to)
    report.unlink(missing_ok=True)
    result.moved[job.job_id] = moved


def _is_same(path: Path, examined: InputFile | None) -> bool:
    """The file at ``path`` is the one the job recorded (its inode, or its bytes)."""
    if examined is None:
        return False
    try:
        now = identify(path)
    except FileNotFoundError:
        return False
    if now == Identity.expected(examined):
        return True
    if not examined.sha256 or now.size != examined.size:
        return False
    return sha256_file(path)[0] == examined.sha256


def _newer_owner(dst: str, job: Job, jobs: dict[str, Job]) -> str | None:
    """The newest job, created after ``job``, that moved a file to ``dst``."""
    others = [
        j
        for j in jobs.values()
        if j.job_id != job.job_id
        and (j.created_at, j.job_id) > (job.created_at, job.job_id)
        and dst in {d for _, d in j.moved_to}
    ]
    return max(others, key=lambda j: (j.created_at, j.job_id)).job_id if others else None


def _is_failed(dst: str) -> bool:
    return dst.startswith("failed/")


def _resolve(roots: dict[str, Path], dst: str) -> Path:
    kind, _, rel = dst.partition("/")
    return roots[kind] / rel
