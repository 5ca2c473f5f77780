"""A writer's in-memory index of job records: :class:`JobIndex`.

Both writers keep the records they own in memory, because the engine reads them on
every step: the JSON-lines ledger all of its jobs (replayed at start-up), the shared
store this host's (loaded at open).  Each ``put`` updates the index in O(1), so
``active``, the counts by state and kind, and the newest DONE job of a request never
scan the records.
"""

from __future__ import annotations

from seedance_watch.core.jobs import TERMINAL_STATES, Job, State

__all__ = ["JobIndex"]


class JobIndex:
    """The latest record of each job, and what is asked of them often.

    ``jobs``: every record by id; ``active``: those not DONE or FAILED;
    ``done_by_key``: the DONE job updated last for each ``content_key``;
    ``kind_counts``: jobs by (kind, state), every state of a kind once one job of it
    was seen.  One writer thread at a time (the caller's lock); readers on other
    threads copy a mapping first (a dict copy is atomic).
    """

    __slots__ = ("active", "done_by_key", "jobs", "kind_counts")

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.active: dict[str, Job] = {}
        self.done_by_key: dict[str, Job] = {}
        self.kind_counts: dict[tuple[str, State], int] = {}

    def add(self, job: Job) -> None:
        """``job`` is now the latest record of its id."""
        old = self.jobs.get(job.job_id)
        if old is not None:
            self.kind_counts[(old.kind, old.state)] -= 1
            self.active.pop(old.job_id, None)
            if old.content_key is not None and self.done_by_key.get(old.content_key) is old:
                del self.done_by_key[old.content_key]
        self.jobs[job.job_id] = job
        if (job.kind, job.state) not in self.kind_counts:
            self.kind_counts.update({(job.kind, state): 0 for state in State})
        self.kind_counts[(job.kind, job.state)] += 1
        if job.state not in TERMINAL_STATES:
            self.active[job.job_id] = job
        elif job.state is State.DONE and job.content_key is not None:
            best = self.done_by_key.get(job.content_key)
            if best is None or job.updated_at >= best.updated_at:
                self.done_by_key[job.content_key] = job

    def remove(self, job_id: str) -> None:
        """``job_id`` leaves the index (another host owns it now)."""
        old = self.jobs.pop(job_id, None)
        if old is None:
            return
        self.kind_counts[(old.kind, old.state)] -= 1
        self.active.pop(job_id, None)
        if old.content_key is not None and self.done_by_key.get(old.content_key) is old:
            del self.done_by_key[old.content_key]

    def counts(self) -> dict[str, int]:
        """Jobs by state value, every state present (zeros included)."""
        counts = dict.fromkeys((state.value for state in State), 0)
        for (_, state), n in self.kind_counts.copy().items():
            counts[state.value] += n
        return counts

    def counts_by_kind(self) -> dict[tuple[str, str], int]:
        """Jobs by (kind, state value): every state of each kind seen."""
        return {(kind, state.value): n for (kind, state), n in self.kind_counts.copy().items()}
