"""``seedance-watch status``: jobs by state from the ledger, and the daemon's pauses.

The ledger is read without the lock, and ``state/daemon.json`` (the daemon's
pauses, :mod:`seedance_watch.service.statusfile`) beside it.  ``status`` shows
them, and says whether a daemon is running: it tests the ledger's lock (a daemon
holds ``state/LOCK`` for its whole life), never a recorded pid, which another
process may have reused by now or which may belong to another container.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from seedance_watch.core.jobs import State
from seedance_watch.ledger.jsonl import LOCK_NAME, lock_holder, read_jobs
from seedance_watch.service.statusfile import DAEMON_STATUS_NAME

__all__ = [
    "DAEMON_STATUS_NAME",
    "format_status",
    "read_daemon_status",
    "status_report",
]


def read_daemon_status(state_dir: Path) -> dict[str, Any] | None:
    """``daemon.json`` plus ``running`` (a daemon holds the state lock now).

    ``running`` comes from testing the lock; while a daemon runs, ``pid`` is the
    lock holder's.  None when no daemon runs and ``daemon.json`` is absent or
    unreadable.
    """
    holder = lock_holder(state_dir)
    try:
        loaded = json.loads((state_dir / DAEMON_STATUS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        loaded = None
    if not isinstance(loaded, dict) and holder is None:
        return None
    data: dict[str, Any] = loaded if isinstance(loaded, dict) else {"paused": {}}
    data["running"] = holder is not None
    if holder is not None:
        data["holder"] = holder
        pid = _holder_pid(state_dir)
        if pid is not None:
            data["pid"] = pid
    return data


def _holder_pid(state_dir: Path) -> int | None:
    try:
        info = json.loads((state_dir / LOCK_NAME).read_bytes())
    except (OSError, ValueError):
        return None
    pid = info.get("pid") if isinstance(info, dict) else None
    return pid if isinstance(pid, int) else None


def status_report(state_dir: Path) -> dict[str, Any]:
    """``{"counts": {STATE: N}, "jobs": [...], "daemon": {...} | null}`` (SPEC §10)."""
    jobs = sorted(read_jobs(state_dir).values(), key=lambda j: (j.created_at, j.job_id))
    counts = Counter(job.state.value for job in jobs)
    return {
        "counts": {state.value: counts[state.value] for state in State if counts[state.value]},
        "jobs": [
            {
                "job_id": job.job_id,
                "source": job.source,
                "kind": job.kind,
                "state": job.state.value,
                "task_id": job.task_id,
                "error": job.error,
                "output": job.output,
                "duplicate_of": job.duplicate_of,
            }
            for job in jobs
        ],
        "daemon": read_daemon_status(state_dir),
    }


def _format_daemon(daemon: dict[str, Any] | None) -> list[str]:
    if daemon is None:
        return []
    paused = daemon.get("paused") or {}
    pid = daemon.get("pid")
    if daemon.get("running"):
        head = f"daemon: running (pid {pid})" + (", PAUSED" if paused else "")
    else:
        head = "daemon: not running" + (
            f" (its last run, pid {pid}, ended paused)" if paused else ""
        )
    lines = [head]
    for reason, info in paused.items():
        if not isinstance(info, dict):
            continue
        line = f"  paused: {reason} since {info.get('since')}: {info.get('message', '')}"
        if info.get("key_source"):
            line += f" [API key from {info['key_source']}]"
        if daemon.get("running") and info.get("next_probe_at"):
            line += f"; next try {info['next_probe_at']}"
        lines.append(line)
    return lines


def format_status(report: dict[str, Any], *, limit: int = 50) -> str:
    """A short human summary: the daemon's pauses, counts, then the latest jobs."""
    counts = report["counts"]
    lines = _format_daemon(report.get("daemon"))
    lines.append("jobs: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none"))
    for job in report["jobs"][-limit:]:
        detail = job["output"] or ""
        if job["error"]:
            detail = f"{job['error'].get('code')}: {job['error'].get('message', '')}"
        # Image to video is the usual kind: only the others are named.
        kind = f" ({job['kind']})" if job.get("kind", "image") != "image" else ""
        lines.append(
            f"  {job['job_id']}  {job['state']:<10}  {job['source']}{kind}  {detail}".rstrip()
        )
    return "\n".join(lines)
