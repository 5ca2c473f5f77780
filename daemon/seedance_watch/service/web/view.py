"""What the status page shows, built from job records: pure data, no I/O.

:func:`build_view` turns the jobs, the clock, the learned task time, the day's
budget and the daemon's pauses into one JSON-ready dict.  The template renders
it for the first view and ``GET /api/view`` serves it to the page's script, which
fills the same markup with it; so every text a person reads (ages, the ETA, the
spend) is worded here, once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from seedance_watch.core.jobs import RESUME, Job, State
from seedance_watch.core.timestamps import iso_utc

__all__ = ["MAX_DONE", "MAX_FAILED", "MAX_RECENT", "build_view", "duration_text"]

MAX_RECENT = 100
MAX_DONE = 24
MAX_FAILED = 50

#: Jobs waiting on the gateway's task (submitted, not yet finished there).
_AT_GATEWAY = frozenset({State.SUBMITTING, State.SUBMITTED})


def duration_text(seconds: float) -> str:
    """A short duration for a person: ``42 s``, ``3 min``, ``2 h 5 min``, ``3 d 4 h``."""
    s = max(0, round(seconds))
    if s < 120:
        return f"{s} s"
    minutes = s // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _stage(job: Job) -> str:
    if job.state is State.FAILED:
        return str((job.error or {}).get("stage") or "")
    stage = RESUME.get(job.state)
    return "" if stage is None else stage.value


def _row(job: Job, now: float) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "source": job.source,
        "kind": job.kind,
        "state": job.state.value,
        "stage": _stage(job),
        "age": duration_text(now - job.created_at),
        "created_at": iso_utc(job.created_at),
        "task_id": job.task_id or "",
    }


def _eta_text(elapsed: float, estimate: float | None) -> str:
    if estimate is None:
        return "no estimate yet"
    left = estimate - elapsed
    if left >= 1:
        return f"about {duration_text(left)} left"
    return f"taking longer than the usual {duration_text(estimate)}"


def _in_flight(job: Job, now: float, estimate: float | None) -> dict[str, Any]:
    assert job.submitted_at is not None
    elapsed = max(0.0, now - job.submitted_at)
    return {
        **_row(job, now),
        "elapsed": duration_text(elapsed),
        "elapsed_seconds": round(elapsed, 1),
        "estimate_seconds": None if estimate is None else round(estimate, 1),
        "eta": _eta_text(elapsed, estimate),
        # A <progress> needs value <= max; an overdue task shows as full.
        "progress_max": "" if estimate is None else str(round(estimate, 1)),
        "progress_value": "" if estimate is None else str(round(min(elapsed, estimate), 1)),
    }


def _done(job: Job, now: float, thumbnailed: bool) -> dict[str, Any]:
    ended = job.completed_at if job.completed_at is not None else job.updated_at
    return {
        **_row(job, now),
        "output": job.output or "",
        "duplicate_of": job.duplicate_of or "",
        "finished": f"{duration_text(now - ended)} ago",
        "thumbnail_url": f"/jobs/{job.job_id}/thumbnail" if thumbnailed else "",
        "video_url": f"/jobs/{job.job_id}/video",
        "video_label": f"Video made from {job.source}",
    }


def _failed(job: Job, now: float, retryable: bool, thumbnailed: bool) -> dict[str, Any]:
    error = job.error or {}
    return {
        **_row(job, now),
        "code": str(error.get("code") or ""),
        "message": str(error.get("message") or ""),
        "hint": str(error.get("hint") or ""),
        "failed": f"{duration_text(now - job.updated_at)} ago",
        "thumbnail_url": f"/jobs/{job.job_id}/thumbnail" if retryable and thumbnailed else "",
        "retry_url": f"/jobs/{job.job_id}/retry" if retryable else "",
        "retry_label": f"Retry {job.source}",
        "retried": "" if retryable else "its inputs are no longer in failed/ (retried?)",
    }


def _pauses(daemon: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    paused = (daemon or {}).get("paused") or {}
    out = []
    for reason, info in paused.items():
        if not isinstance(info, Mapping):
            continue
        key_source = info.get("key_source")
        out.append(
            {
                "reason": str(reason),
                "since": str(info.get("since") or ""),
                "message": str(info.get("message") or ""),
                "next_probe_at": str(info.get("next_probe_at") or ""),
                "key_source": f"API key from {key_source}" if key_source else "",
            }
        )
    return out


def _money(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else ""


def _budget(budget: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if budget is None:
        return None
    currency = str(budget.get("currency") or "")
    spent, cap, remaining = budget.get("spent"), budget.get("cap"), budget.get("remaining")
    if isinstance(cap, int | float):
        text = f"{currency} {_money(spent)} of {_money(cap)} spent today".strip()
        if isinstance(remaining, int | float):
            text += f", {_money(remaining)} left"
    else:
        text = f"{currency} {_money(spent)} spent today (no daily cap)".strip()
    return {
        "text": text,
        "spent": _money(spent),
        "cap": _money(cap),
        "remaining": _money(remaining),
        "currency": currency,
        # <meter> bounds; empty (no meter) without a cap.
        "meter_max": _money(cap) if isinstance(cap, int | float) and cap > 0 else "",
        "meter_value": _money(min(spent, cap))
        if isinstance(cap, int | float) and cap > 0 and isinstance(spent, int | float)
        else "",
    }


def build_view(
    jobs: Iterable[Job],
    *,
    now: float,
    task_eta: float | None,
    budget: Mapping[str, Any] | None,
    daemon: Mapping[str, Any] | None,
    retryable: Callable[[Job], bool],
    thumbnailed: Callable[[Job], bool],
) -> dict[str, Any]:
    """The page's content at ``now``.

    ``task_eta``: the learned task time in seconds (None: not learned yet);
    ``budget``: ``spent``, ``cap``, ``remaining``, ``currency`` (None: no budget);
    ``daemon``: :func:`~seedance_watch.commands.status.read_daemon_status`;
    ``retryable``: whether a failed job's inputs still wait in failed/;
    ``thumbnailed``: whether a job's image passed the checks (only such an image gets
    a thumbnail; a text drop has none).
    """
    newest = sorted(jobs, key=lambda j: (j.created_at, j.job_id), reverse=True)
    counts = Counter(job.state for job in newest)
    at_gateway = [j for j in newest if j.state in _AT_GATEWAY and j.submitted_at is not None]
    done = sorted(
        (j for j in newest if j.state is State.DONE),
        key=lambda j: (j.completed_at or j.updated_at, j.job_id),
        reverse=True,
    )
    failed = sorted(
        (j for j in newest if j.state is State.FAILED),
        key=lambda j: (j.updated_at, j.job_id),
        reverse=True,
    )
    shown_failed = failed[:MAX_FAILED]
    return {
        "generated_at": iso_utc(now),
        "total": len(newest),
        "total_text": f"{len(newest)} job{'s' if len(newest) != 1 else ''}",
        "counts": [
            {"state": state.value, "count": counts[state]} for state in State if counts[state]
        ],
        "recent": [_row(job, now) for job in newest[:MAX_RECENT]],
        "in_flight": [_in_flight(job, now, task_eta) for job in at_gateway],
        "done": [_done(job, now, thumbnailed(job)) for job in done[:MAX_DONE]],
        "failed": [_failed(job, now, retryable(job), thumbnailed(job)) for job in shown_failed],
        "pauses": _pauses(daemon),
        "budget": _budget(budget),
    }
