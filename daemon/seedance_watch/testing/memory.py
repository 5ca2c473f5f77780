"""An in-memory job store for tests: :class:`MemoryStore`.

It is a :class:`~seedance_watch.ledger.base.JobStore` and a
:class:`~seedance_watch.ledger.base.JobReader` at once, so a test of the engine,
the page or a command can run without a state folder, look at every record, and
make the disk fail on purpose (:meth:`MemoryStore.fail_writes`) without patching
``os``.  It passes the same contract suite as the real stores
(``tests/test_store_contract.py``), so what a test learns from it holds for them:
a ``put`` is visible to every read as soon as it returns, a record that would not
encode is refused as the JSON-lines ledger refuses it, and after a failed write
every later ``put`` is refused (docs/design.md, "Durability before each external
action").  "Durable" here means "in this object": a restart is
``MemoryStore(old.snapshot())``.

Public like structlog's ``testing`` module: for this project's tests and for anyone
testing code built on the pipeline.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from seedance_watch.core.budget import BudgetPrices, BudgetTally
from seedance_watch.core.jobs import TERMINAL_STATES, Job, State
from seedance_watch.errors import DurabilityError, StateError
from seedance_watch.ledger.base import HostLease, OneHost, StoreHolder, status_order
from seedance_watch.ledger.record import encode_record

__all__ = ["MemoryStore"]


def _this_process() -> StoreHolder:
    pid, host = os.getpid(), socket.gethostname()
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return StoreHolder(f"pid {pid} on host {host}, started {started}", pid, host, started)


class MemoryStore(OneHost):
    """Every job's latest record, in a dict; holds itself (this process) until closed.

    ``jobs``: the records it starts with (a restarted store: ``MemoryStore(old.snapshot())``).
    ``put`` may be called from any thread; reads copy under the same lock, except
    :meth:`jobs`, a live view for the thread that writes.
    """

    def __init__(self, jobs: Iterable[Job] = ()) -> None:
        self._mutex = threading.Lock()
        self._jobs: dict[str, Job] = {}
        # Every state of a kind once one job of it was seen, as the ledger counts.
        self._kinds: set[str] = set()
        self._closed = False
        self._failure: OSError | None = None  # the disk fails (fail_writes)
        self._refusing = False  # a put failed: every later one is refused
        self._holder = _this_process()
        self._daemon: dict[str, Any] | None = None
        #: Every record a ``put`` made durable, in order (the ones it started with aside).
        self.puts: list[Job] = []
        for job in jobs:
            self._store(job)

    def __repr__(self) -> str:
        return f"<MemoryStore jobs={len(self._jobs)}{' closed' if self._closed else ''}>"

    # --- the writer: JobStore ---

    def put(self, job: Job) -> None:
        """Record ``job`` as its latest state.

        Raises :class:`StateError` once closed, :class:`DurabilityError` after
        :meth:`fail_writes`, and what encoding the record raises (``ValueError``
        for a NaN, ``TypeError`` for a value JSON cannot hold) as the ledger would.
        """
        encode_record(job)
        with self._mutex:
            if self._closed:
                raise StateError("the store is closed")
            failure = self._failure
            if failure is not None:
                if not self._refusing:
                    self._refusing = True
                    raise DurabilityError(
                        f"cannot make the record of job {job.job_id} durable: {failure}"
                    ) from failure
                raise DurabilityError(
                    f"the store refuses writes after an earlier write failure ({failure})"
                ) from failure
            self._store(job)
            self.puts.append(job)

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def jobs(self) -> Mapping[str, Job]:
        """A live read-only view of the latest record of every job."""
        return MappingProxyType(self._jobs)

    def active(self) -> list[Job]:
        with self._mutex:
            return [job for job in self._jobs.values() if job.state not in TERMINAL_STATES]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((state.value for state in State), 0)
        for job in self._copy():
            counts[job.state.value] += 1
        return counts

    def counts_by_kind(self) -> dict[tuple[str, str], int]:
        with self._mutex:
            counts = {(kind, state.value): 0 for kind in self._kinds for state in State}
            for job in self._jobs.values():
                counts[(job.kind, job.state.value)] += 1
        return counts

    def find_done_by_content_key(self, content_key: str) -> Job | None:
        """The DONE job with this ``content_key`` updated last."""
        best: Job | None = None
        for job in self._copy():  # in the order jobs first came, as the ledger replays them
            newer = best is None or job.updated_at >= best.updated_at
            if job.state is State.DONE and job.content_key == content_key and newer:
                best = job
        return best

    def snapshot(self) -> list[Job]:
        """A copy of every record, in :func:`~seedance_watch.ledger.base.status_order`."""
        return sorted(self._copy(), key=status_order)

    def writable(self) -> bool:
        return not self._closed and self._failure is None

    def close(self) -> None:
        """Refuse later puts and let go of the store (:meth:`holder` turns None)."""
        with self._mutex:
            self._closed = True

    # --- the reader: JobReader ---

    @property
    def where(self) -> str:
        return "memory"

    def exists(self) -> bool:
        return True

    def tally(self, prices: BudgetPrices) -> BudgetTally:
        return BudgetTally.from_jobs(prices, self._copy())

    def holder(self) -> StoreHolder | None:
        """This process, until :meth:`close`."""
        return None if self._closed else self._holder

    def daemon_record(self) -> dict[str, Any] | None:
        with self._mutex:
            return None if self._daemon is None else dict(self._daemon)

    def hosts(self) -> list[HostLease] | None:
        """None: a store of one host, like the JSON-lines ledger."""
        return None

    def owners(self) -> dict[str, str]:
        return {}

    # --- for tests ---

    def record_daemon(self, record: Mapping[str, Any] | None) -> None:
        """What :meth:`daemon_record` returns from now on (``daemon.json``'s document)."""
        with self._mutex:
            self._daemon = None if record is None else dict(record)

    def fail_writes(self, error: OSError | None = None) -> None:
        """Make the disk fail: the next ``put`` raises :class:`DurabilityError` (caused
        by ``error``), and so does every later one; :meth:`writable` turns False."""
        with self._mutex:
            self._failure = error if error is not None else OSError(5, "Input/output error")

    # --- internals ---

    def _copy(self) -> list[Job]:
        with self._mutex:
            return list(self._jobs.values())

    def _store(self, job: Job) -> None:
        self._kinds.add(job.kind)
        self._jobs[job.job_id] = job
