"""The seam between the pipeline and where job records live: :class:`JobStore`.

Today's implementation is the JSON-lines ledger (:mod:`.jsonl`); a shared SQL
database for several hosts would be one more module implementing this protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from seedance_watch.core.jobs import Job

__all__ = ["JobStore"]


class JobStore(Protocol):
    """Every job's latest record, written durably."""

    def put(self, job: Job) -> None:
        """Record ``job`` as the latest state of its id.

        Returns only when the record is durable (a crash after ``put`` returns keeps
        it); raises :class:`~seedance_watch.errors.StateError` when it cannot be.
        """
        ...

    def get(self, job_id: str) -> Job | None: ...

    def jobs(self) -> Mapping[str, Job]:
        """Every job by id (a live view: the event loop's thread only)."""
        ...

    def active(self) -> list[Job]:
        """The jobs not yet DONE or FAILED."""
        ...

    def counts(self) -> dict[str, int]:
        """Jobs by state value."""
        ...

    def counts_by_kind(self) -> dict[tuple[str, str], int]:
        """Jobs by (kind, state value), for each kind of job in the store."""
        ...

    def find_done_by_content_key(self, content_key: str) -> Job | None:
        """The newest DONE job that made this exact request (for dedupe)."""
        ...

    def snapshot(self) -> list[Job]:
        """A copy of every record, safe to read from another thread (the status page)."""
        ...

    def writable(self) -> bool:
        """Whether a write would succeed now (``/healthz``)."""
        ...

    def close(self) -> None: ...
