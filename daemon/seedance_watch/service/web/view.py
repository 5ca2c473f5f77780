"""What the status page shows, built from job records: pure data, no I/O.

:func:`build_view` turns the jobs, the clock, the learned task time, the day's
budget, the daemon's pauses and (on a shared store) the hosts into one JSON-ready
dict.  The template renders it for the first view and ``GET /api/view`` serves it
to the page's script, which fills the same markup with it; so every text a person
reads (states in words, ages, the ETA, the spend, what to fix before a retry) is
worded here, once (docs/design.md, "The status page").

Every text that comes from a file or the gateway (names, prompts, messages, task
ids) goes through :mod:`seedance_watch.core.text`: a name that is not UTF-8 shows
its bytes (``b\\xe9ach.jpg``) instead of breaking the page, and a line break in a
name shows as ``\\n``.  Times are ISO 8601 in UTC (``*_at``) with a UTC text beside
them; the page's script shows them in the viewer's time zone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from seedance_watch.core.failures import code_words, failure_code
from seedance_watch.core.jobs import RESUME, Job, State
from seedance_watch.core.text import printable, prose, shorten
from seedance_watch.core.timestamps import iso_utc
from seedance_watch.ledger.base import HostLease

__all__ = [
    "MAX_DONE",
    "MAX_FAILED",
    "MAX_RECENT",
    "PAUSE_WORDS",
    "STATE_WORDS",
    "RetryAdvice",
    "build_view",
    "duration_text",
    "options_text",
]

MAX_RECENT = 100
MAX_DONE = 24
MAX_FAILED = 50
#: A prompt on a card is cut here (the whole prompt, up to PROMPT_TITLE, is its title).
PROMPT_SHOWN = 160
PROMPT_TITLE = 1000

#: Jobs waiting on the gateway's task (submitted, not yet finished there).
_AT_GATEWAY = frozenset({State.SUBMITTING, State.SUBMITTED})

#: Each state in words, as a person reads the page (the state's name stays in a title).
STATE_WORDS: dict[State, str] = {
    State.NEW: "Getting ready",
    State.UPLOADED: "Waiting for a slot",
    State.SUBMITTING: "Sending to the gateway",
    State.SUBMITTED: "Being made at the gateway",
    State.SUCCEEDED: "Downloading the video",
    State.PLACING: "Saving the video",
    State.FAILING: "Failing",
    State.DONE: "Done",
    State.FAILED: "Failed",
    State.RETRIED: "Retried",
}
assert set(STATE_WORDS) == set(State)

#: Each known pause in words; any other reason shows as its name, with its message.
PAUSE_WORDS: dict[str, str] = {
    "credentials": "The gateway refused the API key",
    "storage": "The bucket cannot be used",
    "budget": "The day's budget is spent",
    "database": "The database cannot be reached",
}


@dataclass(frozen=True, slots=True)
class RetryAdvice:
    """What the page offers for a failed job (:meth:`.files.JobFiles.retry_advice`).

    ``waiting``: its inputs wait in failed/ (a retry can move them).  ``fix``: what to
    change first, when a retry would fail the same way (no Retry then).
    ``ambiguous``: its task may exist and be billed (Retry only after a confirmation).
    """

    waiting: bool
    fix: str | None = None
    ambiguous: bool = False

    @property
    def allowed(self) -> bool:
        return self.waiting and self.fix is None


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


def _utc_text(ts: float) -> str:
    """The server's rendering of a time (the page's script shows it in local time)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso_text(iso: str) -> str:
    """``2026-12-01T14:03:05Z`` (or with ``+00:00``) as :func:`_utc_text` writes it."""
    try:
        return _utc_text(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return printable(iso)


def options_text(options: Mapping[str, Any] | None) -> str:
    """The main generation options in words: ``16:9 · 720p · 5 s · with audio``."""
    if not options:
        return ""
    parts: list[str] = []
    for key in ("ratio", "resolution"):
        if options.get(key) is not None:
            parts.append(str(options[key]))
    duration = options.get("duration")
    if duration == "auto":
        parts.append("length chosen by the model")
    elif duration is not None:
        parts.append(f"{duration} s")
    audio = options.get("generate_audio")
    if audio is not None:
        parts.append("with audio" if audio else "silent")
    if options.get("camerafixed"):
        parts.append("fixed camera")
    if options.get("seed") is not None:
        parts.append(f"seed {options['seed']}")
    if options.get("watermark"):
        parts.append("watermark")
    return printable(" \u00b7 ".join(parts))


def _stage(job: Job) -> str:
    if job.state is State.FAILED:
        return str((job.error or {}).get("stage") or "")
    stage = RESUME.get(job.state)
    return "" if stage is None else stage.value


class _Anchors:
    """Where a link to a job points: its card when it has one, else its row."""

    def __init__(self, cards: Iterable[Job], rows: Iterable[Job]) -> None:
        self.cards = {job.job_id for job in cards}
        self.rows = {job.job_id for job in rows}

    def card_id(self, job: Job) -> str:
        return f"job-{job.job_id}" if job.job_id in self.cards else ""

    def url(self, job_id: str | None) -> str:
        if not job_id:
            return ""
        if job_id in self.cards:
            return f"#job-{job_id}"
        return f"#row-{job_id}" if job_id in self.rows else ""


class _Rows:
    """The fields every list shares, for jobs at one moment."""

    def __init__(
        self,
        now: float,
        anchors: _Anchors,
        owners: Mapping[str, str],
    ) -> None:
        self.now, self.anchors, self.owners = now, anchors, owners

    def _lineage(self, job: Job) -> dict[str, str]:
        """The retry story: the job this one retries, the job that retried this one."""
        out: dict[str, str] = {}
        for field, words, other in (
            ("retry_of", "retry of job", job.retry_of),
            ("retried_as", "retried as job", job.retried_as),
        ):
            out[field] = printable(other or "")
            out[f"{field}_url"] = self.anchors.url(other)
            out[f"{field}_text"] = f"{words} {printable(other)}" if other else ""
        return out

    def row(self, job: Job) -> dict[str, Any]:
        """A job in the recent table (and the base of every card)."""
        code = failure_code(job) if job.state is State.FAILED else ""
        state_text = STATE_WORDS[job.state]
        if code:
            state_text = f"Failed: {code_words(code)}"
        return {
            "job_id": job.job_id,
            "row_id": f"row-{job.job_id}",
            "source": printable(job.source),
            "kind": job.kind,
            "state": job.state.value,
            "state_text": state_text,
            "state_title": f"state {job.state.value}" + (f", code {code}" if code else ""),
            "stage": _stage(job),
            "age": duration_text(self.now - job.created_at),
            "created_at": iso_utc(job.created_at),
            "created_text": _utc_text(job.created_at),
            "task_id": printable(job.task_id or ""),
            "host": printable(self.owners.get(job.job_id, "")),
            "priority": job.priority,
            "priority_text": f"priority {job.priority}" if job.priority else "",
            **self._lineage(job),
        }

    def card(self, job: Job) -> dict[str, Any]:
        """A card: the row, and what was asked for (prompt, model, options)."""
        prompt = prose(job.prompt or "")
        return {
            **self.row(job),
            "card_id": self.anchors.card_id(job),
            "prompt": shorten(prompt, PROMPT_SHOWN),
            "prompt_title": shorten(prompt, PROMPT_TITLE) if len(prompt) > PROMPT_SHOWN else "",
            "model": printable(job.model or ""),
            "options_text": options_text(job.options),
        }


def _eta_text(elapsed: float, estimate: float | None) -> str:
    if estimate is None:
        return "no estimate yet"
    left = estimate - elapsed
    if left >= 1:
        return f"about {duration_text(left)} left"
    return f"taking longer than the usual {duration_text(estimate)}"


def _in_flight(rows: _Rows, job: Job, estimate: float | None) -> dict[str, Any]:
    assert job.submitted_at is not None
    elapsed = max(0.0, rows.now - job.submitted_at)
    return {
        **rows.card(job),
        "elapsed": duration_text(elapsed),
        "elapsed_seconds": round(elapsed, 1),
        "estimate_seconds": None if estimate is None else round(estimate, 1),
        "eta": _eta_text(elapsed, estimate),
        # A <progress> needs value <= max; an overdue task shows as full.
        "progress_max": "" if estimate is None else str(round(estimate, 1)),
        "progress_value": "" if estimate is None else str(round(min(elapsed, estimate), 1)),
    }


def _done(rows: _Rows, job: Job, thumbnailed: bool) -> dict[str, Any]:
    ended = job.completed_at if job.completed_at is not None else job.updated_at
    source = printable(job.source)
    return {
        **rows.card(job),
        "output": printable(job.output or ""),
        "duplicate_of": printable(job.duplicate_of or ""),
        "finished": f"{duration_text(rows.now - ended)} ago",
        "finished_at": iso_utc(ended),
        "finished_text": _utc_text(ended),
        "thumbnail_url": f"/jobs/{job.job_id}/thumbnail" if thumbnailed else "",
        "video_url": f"/jobs/{job.job_id}/video",
        "video_label": f"Video made from {source}",
    }


def _failed(rows: _Rows, job: Job, advice: RetryAdvice, thumbnailed: bool) -> dict[str, Any]:
    error = job.error or {}
    code = failure_code(job)
    source = printable(job.source)
    confirm = advice.allowed and advice.ambiguous
    task = f" (task {printable(job.task_id)})" if job.task_id else ""
    fix = ""
    if advice.waiting and advice.fix is not None:
        fix = (
            f"Nothing changed in failed/ since it failed, so a retry would fail the same "
            f"way: first {advice.fix}, then Retry. (Changed the config instead? "
            f"seedance-watch retry {job.job_id})"
        )
    return {
        **rows.card(job),
        "code": printable(code),
        "failure_text": f"Failed: {code_words(code)}",
        "message": prose(str(error.get("message") or "")),
        "hint": prose(str(error.get("hint") or "")),
        "failed": f"{duration_text(rows.now - job.updated_at)} ago",
        "failed_at": iso_utc(job.updated_at),
        "failed_text": _utc_text(job.updated_at),
        "thumbnail_url": f"/jobs/{job.job_id}/thumbnail" if advice.waiting and thumbnailed else "",
        "retry_url": f"/jobs/{job.job_id}/retry" if advice.allowed and not confirm else "",
        "retry_label": f"Retry {source}",
        "confirm_url": f"/jobs/{job.job_id}/retry" if confirm else "",
        "confirm_label": f"Retry {source} anyway: it may be billed twice",
        "confirm_text": (
            f"Its task may exist at the gateway{task} and be billed: a retry would pay "
            "again. Check the gateway's dashboard first."
            if confirm
            else ""
        ),
        "fix": fix,
        "retried": "" if advice.waiting else "its inputs are no longer in failed/ (retried?)",
    }


def _pauses(daemon: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Every recorded pause, whatever its reason, with its message."""
    paused = (daemon or {}).get("paused") or {}
    out = []
    for reason, info in paused.items():
        if not isinstance(info, Mapping):
            continue
        key_source = info.get("key_source")
        since = str(info.get("since") or "")
        probe = str(info.get("next_probe_at") or "")
        name = printable(str(reason))
        out.append(
            {
                "reason": name,
                "reason_text": PAUSE_WORDS.get(str(reason), f"Paused: {name}"),
                "since": since,
                "since_text": _iso_text(since) if since else "",
                "message": prose(str(info.get("message") or "")),
                "next_probe_at": probe,
                "next_text": _iso_text(probe) if probe else "",
                "next_label": "lifts" if reason == "budget" else "next try",
                "key_source": printable(f"API key from {key_source}") if key_source else "",
            }
        )
    return out


def _hosts(
    hosts: Sequence[HostLease] | None, owners: Mapping[str, str], me: str | None, now: float
) -> list[dict[str, Any]] | None:
    if hosts is None:
        return None
    owned = Counter(owners.values())
    out = []
    for host in hosts:
        renewed = ""
        try:
            at = datetime.fromisoformat(host.renewed_at.replace("Z", "+00:00")).timestamp()
            renewed = f"{duration_text(now - at)} ago"
        except ValueError:
            pass
        jobs = owned[host.name]
        out.append(
            {
                "name": printable(host.name),
                "alive": host.alive,
                "alive_text": "alive" if host.alive else "not alive",
                "health": "alive" if host.alive else "dead",
                "renewed_at": host.renewed_at,
                "renewed_text": _iso_text(host.renewed_at) if host.renewed_at else "",
                "renewed_ago": renewed,
                "machine": printable(host.machine or ""),
                "jobs_text": f"{jobs} job{'s' if jobs != 1 else ''}",
                "this_host": "this host" if host.name == me else "",
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


def _clean(value: Any) -> Any:
    """``value`` with every string shown by :func:`printable`: whatever slipped through
    the fields above, nothing reaches the page (or its JSON) unencodable."""
    if isinstance(value, str):
        return value if value.isprintable() else printable(value)
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value


def build_view(
    jobs: Iterable[Job],
    *,
    now: float,
    task_eta: float | None,
    budget: Mapping[str, Any] | None,
    daemon: Mapping[str, Any] | None,
    advice: Callable[[Job], RetryAdvice],
    thumbnailed: Callable[[Job], bool],
    hosts: Sequence[HostLease] | None = None,
    owners: Mapping[str, str] | None = None,
    host: str | None = None,
    problem: str = "",
) -> dict[str, Any]:
    """The page's content at ``now``.

    ``task_eta``: the learned task time in seconds (None: not learned yet);
    ``budget``: ``spent``, ``cap``, ``remaining``, ``currency`` (None: no budget);
    ``daemon``: :func:`~seedance_watch.commands.status.read_daemon_status`'s shape
    (``paused``: reason → since, message, next probe; any reason is shown);
    ``advice``: what a failed job's card offers (Retry, a confirmation, or what to fix);
    ``thumbnailed``: whether a job's image passed the checks (only such an image gets
    a thumbnail; a text drop has none);
    ``hosts``/``owners``/``host``: a shared store's hosts, each job's host and this
    daemon's host (None: a store of one host, no host is named);
    ``problem``: why the page shows less than usual (the database out of reach).
    """
    owners = owners or {}
    newest = sorted(jobs, key=lambda j: (j.created_at, j.job_id), reverse=True)
    counts = Counter(job.state for job in newest)
    at_gateway = [j for j in newest if j.state in _AT_GATEWAY and j.submitted_at is not None]
    done = sorted(
        (j for j in newest if j.state is State.DONE),
        key=lambda j: (j.completed_at or j.updated_at, j.job_id),
        reverse=True,
    )[:MAX_DONE]
    failed = sorted(
        (j for j in newest if j.state is State.FAILED),
        key=lambda j: (j.updated_at, j.job_id),
        reverse=True,
    )[:MAX_FAILED]
    recent = newest[:MAX_RECENT]
    rows = _Rows(now, _Anchors([*done, *failed], recent), owners)
    view: dict[str, Any] = _clean(
        {
            "generated_at": iso_utc(now),
            "generated_text": _utc_text(now),
            "total": len(newest),
            "total_text": f"{len(newest)} job{'s' if len(newest) != 1 else ''}",
            "problem": printable(problem),
            "counts": [
                {
                    "state": state.value,
                    "state_text": STATE_WORDS[state],
                    "count": counts[state],
                }
                for state in State
                if counts[state]
            ],
            "recent": [rows.row(job) for job in recent],
            "in_flight": [_in_flight(rows, job, task_eta) for job in at_gateway],
            "done": [_done(rows, job, thumbnailed(job)) for job in done],
            "failed": [_failed(rows, job, advice(job), thumbnailed(job)) for job in failed],
            "pauses": _pauses(daemon),
            "budget": _budget(budget),
            "hosts": _hosts(hosts, owners, host, now),
        }
    )
    return view
