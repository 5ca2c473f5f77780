"""``seedance-watch status``: jobs by state from the store, and the daemon's pauses.

Everything comes through a :class:`~seedance_watch.ledger.base.JobReader`, which
reads without taking the store from a running daemon: the jobs, the daemon's last
recorded pauses, and whether a daemon runs now -- told by the store (the JSON-lines
one tests its lock), never by a recorded pid, which another process may have
reused by now or which may belong to another container.
"""

from __future__ import annotations

from typing import Any

from seedance_watch.commands.terminal import printable
from seedance_watch.core.jobs import State
from seedance_watch.ledger.base import JobReader
from seedance_watch.ledger.daemonfile import DAEMON_STATUS_NAME

__all__ = [
    "DAEMON_STATUS_NAME",
    "format_status",
    "read_daemon_status",
    "status_report",
]


def read_daemon_status(reader: JobReader) -> dict[str, Any] | None:
    """The daemon's last record (``daemon.json``) plus ``running`` (a daemon holds the
    store now).

    ``running`` comes from the store; while a daemon runs, ``holder`` describes it
    and ``pid`` is its pid.  None when no daemon runs and none left a readable record.
    """
    holder = reader.holder()
    loaded = reader.daemon_record()
    if loaded is None and holder is None:
        return None
    data: dict[str, Any] = dict(loaded) if loaded is not None else {"paused": {}}
    data["running"] = holder is not None
    if holder is not None:
        data["holder"] = holder.description
        if holder.pid is not None:
            data["pid"] = holder.pid
    return data


def status_report(reader: JobReader) -> dict[str, Any]:
    """``{"counts": {STATE: N}, "jobs": [...], "daemon": {...} | null}`` (docs/design.md,
    "Routes": the shape ``status --json`` and ``/api/jobs`` share).

    A shared store adds ``"host"`` (its owner) to each job and ``"hosts"``: every
    host that ever joined, ``{"name", "renewed_at", "alive"}`` (docs/design.md, "The
    shared store").
    """
    jobs = reader.snapshot()
    hosts = reader.hosts()
    owners = reader.owners() if hosts is not None else {}
    counts = dict.fromkeys((state.value for state in State), 0)
    for job in jobs:
        counts[job.state.value] += 1
    rows: list[dict[str, Any]] = []
    for job in jobs:
        row = {
            "job_id": job.job_id,
            "source": job.source,
            "kind": job.kind,
            "state": job.state.value,
            "task_id": job.task_id,
            "error": job.error,
            "output": job.output,
            "duplicate_of": job.duplicate_of,
            "priority": job.priority,
            "retry_of": job.retry_of,
            "retried_as": job.retried_as,
        }
        if hosts is not None:
            row["host"] = owners.get(job.job_id)
        rows.append(row)
    report: dict[str, Any] = {
        "counts": {state: n for state, n in counts.items() if n},
        "jobs": rows,
        "daemon": read_daemon_status(reader),
    }
    if hosts is not None:
        report["hosts"] = [host.to_dict() for host in hosts]
    return report


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


def format_status(report: dict[str, Any], *, limit: int = 50, missing: str | None = None) -> str:
    """A short human summary: the daemon's pauses, the hosts of a shared store, counts,
    then the latest jobs (with their host's name when there are several hosts).

    ``missing``: where the store was looked for when there is none (instead of
    "jobs: none", which would say that an empty store was found).
    """
    counts = report["counts"]
    lines = _format_daemon(report.get("daemon"))
    hosts = report.get("hosts")
    if hosts:
        lines.append(
            "hosts: "
            + ", ".join(
                f"{h['name']} ({'alive' if h['alive'] else 'not alive'}, renewed {h['renewed_at']})"
                for h in hosts
            )
        )
    if missing is not None:
        lines.append(f"no ledger at {missing}")
    else:
        lines.append("jobs: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none"))
    jobs = report["jobs"][-limit:]
    # A host column when there is more than one host to tell apart.
    width = max((len(job.get("host") or "-") for job in jobs), default=0)
    show_host = len(hosts or []) > 1
    for job in jobs:
        detail = job["output"] or ""
        if job["error"]:
            detail = f"{job['error'].get('code')}: {job['error'].get('message', '')}"
        if job.get("retried_as"):
            detail = f"retried as {job['retried_as']} ({job['error'].get('code')})"
        elif job.get("retry_of"):
            detail = f"{detail}  (retry of {job['retry_of']})".lstrip()
        # Image to video is the usual kind: only the others are named.
        kind = f" ({job['kind']})" if job.get("kind", "image") != "image" else ""
        # Priority 0 is the usual one: only the others are shown.
        if job.get("priority"):
            kind += f" [priority {job['priority']}]"
        host = f"{job.get('host') or '-':<{width}}  " if show_host else ""
        lines.append(
            f"  {job['job_id']}  {host}{job['state']:<10}  {job['source']}{kind}  {detail}".rstrip()
        )
    return "\n".join(printable(line) for line in lines)
