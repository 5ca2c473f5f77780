"""What a failure means for a person, and what a retry of it can do: pure data and
pure functions, no I/O.

Every rule about retrying a failed job by its code lives here, so that the status
page (its Retry button, and the server behind it) and ``seedance-watch retry`` read
one table (docs/design.md, "Retry"):

* :data:`AMBIGUOUS_CODES`: the task may exist at the gateway and be billed; a retry
  may pay twice, so it is never done in bulk and always asked for on purpose
  (``retry --include-ambiguous``; the page's confirmation).
* :data:`REPEATS_AS_IS`: the failure lies in the drop's own files (an image that
  cannot be read, a sidecar that is not valid): retried unchanged, it fails the same
  way.  :func:`unchanged_since_failure` tells, from the size and modification time of
  the files now in ``failed/``, whether anything was done about it.
* :data:`CODE_WORDS`: each code in words (``invalid_image`` → "the image could not be
  read"), for the page and the notifications; the code itself stays beside them.
"""

from __future__ import annotations

from collections.abc import Callable

from seedance_watch.core.jobs import Job

__all__ = [
    "AMBIGUOUS_CODES",
    "CODE_WORDS",
    "REPEATS_AS_IS",
    "code_words",
    "failure_code",
    "unchanged_since_failure",
]

#: Failures whose task may exist at the gateway, and be billed: not retried in bulk,
#: and retried one by one only on purpose.
AMBIGUOUS_CODES = frozenset({"submit_ambiguous", "task_timeout"})

#: Failures that lie in the drop's own files, each with what to fix first: retried
#: while those files are as they were, they fail the same way.  (A failure the
#: config can cure, such as ``over_budget`` or a model the gateway refused, is not
#: here: the config may have changed since.)
REPEATS_AS_IS: dict[str, str] = {
    "invalid_image": "replace the image in failed/ (same name) with one the model takes",
    "invalid_sidecar": "fix the sidecar in failed/",
}

#: Each error code in words, completing "Failed: ...".
CODE_WORDS: dict[str, str] = {
    "invalid_sidecar": "the sidecar is not valid",
    "invalid_image": "the image could not be read",
    "missing_sidecar": "no sidecar came with the image",
    "missing_image": "an image the drop needs never arrived",
    "unsafe_path": "a link, not a file (links are never followed)",
    "ambiguous_pair": "two files claim the same name",
    "input_vanished": "a file was removed from the inbox while it ran",
    "input_replaced": "a file was replaced in the inbox while it ran",
    "storage_rejected": "the bucket refused the image",
    "over_budget": "it costs more than a whole day's budget",
    "gateway_rejected": "the gateway refused the request",
    "submit_ambiguous": "the submit may have reached the gateway (and may be billed)",
    "task_failed": "the model failed the task",
    "task_expired": "the task expired in the gateway's queue",
    "task_cancelled": "the task was cancelled at the gateway",
    "task_timeout": "the task took too long (it may still be billed)",
    "task_not_found": "the gateway no longer knows the task",
    "download_failed": "the video could not be downloaded",
}


def failure_code(job: Job) -> str:
    """The error code a failed job recorded ("" when none)."""
    return str((job.error or {}).get("code") or "")


def code_words(code: str) -> str:
    """``code`` in words; an unknown code as itself."""
    return CODE_WORDS.get(code) or (f"error {code}" if code else "an unknown error")


def unchanged_since_failure(job: Job, stat: Callable[[str], tuple[int, int] | None]) -> str | None:
    """What to fix before a retry of ``job`` could help, or None when it may.

    Only a failure of :data:`REPEATS_AS_IS` can repeat as is; it does while every
    file of the job still in ``failed/`` has the size and modification time intake
    recorded for it.  ``stat(dst)`` gives ``(size, mtime_ns)`` of the file at a
    ``moved_to`` destination (``failed/NAME``) now, None when it is gone.  A file
    that changed or went, or a job that recorded no identity for a file (an older
    record: nothing to compare), lets the retry go.
    """
    fix = REPEATS_AS_IS.get(failure_code(job))
    if fix is None:
        return None
    recorded = {item.path: (item.size, item.mtime_ns) for item in job.inputs}
    present = 0
    for src, dst in job.moved_to:
        if not dst.startswith("failed/"):
            continue
        was = recorded.get(src)
        now = stat(dst)
        if was is None or now != was:
            return None
        present += 1
    return fix if present else None
