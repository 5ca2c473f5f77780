"""``seedance-watch status``: jobs by state, read from the ledger without the lock."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from .jobs import State
from .ledger import read_jobs

__all__ = ["format_status", "status_report"]


def status_report(state_dir: Path) -> dict[str, Any]:
    """``{"counts": {STATE: N}, "jobs": [...]}`` as SPEC §10 gives it."""
    jobs = sorted(read_jobs(state_dir).values(), key=lambda j: (j.created_at, j.job_id))
    counts = Counter(job.state.value for job in jobs)
    return {
        "counts": {state.value: counts[state.value] for state in State if counts[state.value]},
        "jobs": [
            {
                "job_id": job.job_id,
                "source": job.source,
                "state": job.state.value,
                "task_id": job.task_id,
                "error": job.error,
                "output": job.output,
                "duplicate_of": job.duplicate_of,
            }
            for job in jobs
        ],
    }


def format_status(report: dict[str, Any], *, limit: int = 50) -> str:
    """A short human summary: counts, then the latest jobs."""
    counts = report["counts"]
    lines = ["jobs: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none")]
    for job in report["jobs"][-limit:]:
        detail = job["output"] or ""
        if job["error"]:
            detail = f"{job['error'].get('code')}: {job['error'].get('message', '')}"
        lines.append(f"  {job['job_id']}  {job['state']:<10}  {job['source']}  {detail}".rstrip())
    return "\n".join(lines)
