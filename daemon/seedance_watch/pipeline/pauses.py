"""The daemon's pauses: the gateway refused the key, the bucket is unusable, or the
shared store's database is out of reach.

A pause fails nothing: submits and polls (credentials) or uploads (storage) wait
behind a :class:`~seedance_watch.core.scheduling.CircuitBreaker` that lets one probe
through with backoff; intake and submits (database) wait until the lease's next
renewal reaches the database again (docs/design.md, "The database out of reach").
The breakers decide; this module reports: a log event when a pause starts,
escalates or ends, the ``seedance_paused`` gauge, and
``state/daemon.json`` (:class:`~seedance_watch.ledger.daemonfile.DaemonStatusFile`) for
``status``.  What a pause means for a ``--once`` run is the engine's business.
A reason quoting a URL keeps no query string there (a presigned URL is a credential).
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from seedance_watch import errors as E
from seedance_watch.core.scheduling import CircuitBreaker
from seedance_watch.ledger.daemonfile import DaemonStatusFile
from seedance_watch.logs import redact_text
from seedance_watch.pipeline.ports import Announcer, Observer

__all__ = ["Pauses"]

log = structlog.get_logger(__name__)


class Pauses:
    """The credentials and storage breakers, and the reporting of their pauses.

    ``on_credentials_accepted`` is called when a probe ends the credentials pause
    (the submitter then has work to do again).
    """

    def __init__(
        self,
        *,
        observer: Observer,
        status: DaemonStatusFile,
        clock: Callable[[], float],
        key_source: str,
        on_credentials_accepted: Callable[[], None],
        notes: Announcer | None = None,
    ) -> None:
        self.credentials = CircuitBreaker()
        self.storage = CircuitBreaker()
        self.database = CircuitBreaker()
        self.status = status
        self._observer = observer
        self._clock = clock
        self._key_source = key_source
        self._on_credentials_accepted = on_credentials_accepted
        self._notes = notes

    def pause_storage(self, reason: str) -> None:
        """The bucket is missing or refuses us: pause uploads (nothing fails), probe later."""
        reason = redact_text(reason, all_queries=True)
        was_open = self.storage.is_open
        probe = self.storage.trip(reason, self._clock())
        if not was_open:
            log.error(
                "storage.paused",
                reason=reason,
                next_probe_in=round(probe - self._clock(), 1),
            )
            if self._notes is not None:
                self._notes.pause_started("storage", reason, probe)
        self._observer.paused("storage", True)
        self.status.pause("storage", reason, since=self.storage.since, next_probe_at=probe)

    def storage_ok(self) -> None:
        """An upload succeeded: end the storage pause, if there was one."""
        if self.storage.success():
            log.info("storage.resumed")
            if self._notes is not None:
                self._notes.pause_ended("storage")
            self._observer.paused("storage", False)
        self.status.resume("storage")

    def pause_credentials(self, exc: E.CredentialsRefused) -> None:
        """401/402/403: pause submits and polls (nothing fails), probe with backoff."""
        before = self.credentials.probe_at if self.credentials.is_open else None
        reason = redact_text(exc.message, all_queries=True)
        if before is None and self._notes is not None:
            self._notes.pause_started("credentials", reason, None)
        probe = self.credentials.trip(reason, self._clock())
        self._observer.paused("credentials", True)
        # One error per pause and per failed probe, not one per request in flight.
        (log.error if probe != before else log.debug)(
            "gateway.credentials_refused",
            http_status=exc.http_status,
            reason=reason,
            key_source=self._key_source,
            next_probe_in=round(probe - self._clock(), 1),
        )
        self.status.pause(
            "credentials",
            reason,
            since=self.credentials.since,
            next_probe_at=probe,
            http_status=exc.http_status,
        )

    def credentials_ok(self) -> None:
        """The gateway accepted a request: end the credentials pause, if there was one."""
        if self.credentials.success():
            self._observer.paused("credentials", False)
            log.info("gateway.credentials_accepted", key_source=self._key_source)
            if self._notes is not None:
                self._notes.pause_ended("credentials")
            self._on_credentials_accepted()
        self.status.resume("credentials")

    def pause_database(self, reason: str) -> None:
        """The shared store's database is out of reach: intake and submits wait (nothing
        fails); the lease's renewals probe it."""
        reason = redact_text(reason, all_queries=True)
        was_open = self.database.is_open
        self.database.trip(reason, self._clock())
        if not was_open:
            log.error("database.paused", reason=reason)
            if self._notes is not None:
                self._notes.pause_started("database", reason, None)
        self._observer.paused("database", True)
        try:
            self.status.pause("database", reason, since=self.database.since)
        except OSError as exc:  # the status record is best effort
            log.warning("status.write_failed", error=str(exc))

    def database_ok(self) -> None:
        """The database answered (a renewal of the lease): end the database pause."""
        if self.database.success():
            log.info("database.resumed")
            if self._notes is not None:
                self._notes.pause_ended("database")
            self._observer.paused("database", False)
            try:
                self.status.resume("database")
            except OSError as exc:
                log.warning("status.write_failed", error=str(exc))
