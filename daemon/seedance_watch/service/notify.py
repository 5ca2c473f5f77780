"""Notifications through Apprise: a job ended, a pause started or ended (docs/design.md, "Hooks and
notifications").

``notify.urls`` are Apprise URLs (ntfy, Slack, Discord, e-mail, Telegram, JSON
webhooks...); ``notify.events`` chooses which of ``done``, ``failed``, ``paused``
and ``resumed`` are sent.  Each message says what happened, to which file, why,
and what to do about it.

Names and messages are shown by :func:`seedance_watch.core.text.printable`, each
line of a message on its own: a file name that is not UTF-8 shows its bytes
(``b\\xe9ach.jpg``) rather than making the message impossible to encode, and a
name cannot forge a line.

Sending never blocks or fails a job: the methods only queue a message (O(1), from
any thread); one worker thread sends it to each URL, retrying a URL that fails a
few times with backoff, and logs ``notify.failed`` when it gives up.  Nothing here
raises into the caller.  ``drain`` lets ``run --once`` wait for what is queued.
(The systemd notifier is :mod:`seedance_watch.service.sdnotify`.)
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import threading
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from seedance_watch.config import NotifyConfig
from seedance_watch.core.failures import code_words
from seedance_watch.core.text import printable, prose
from seedance_watch.pipeline.ports import JobEnd

__all__ = ["Message", "Notifications"]

log = structlog.get_logger(__name__)

#: What a person can do about each kind of pause.
PAUSE_HINTS = {
    "budget": (
        "Nothing is lost: the waiting jobs are submitted when the day's budget renews. "
        "To go on today, raise budget.max_cost_per_day or budget.max_submits_per_day "
        "and restart the daemon."
    ),
    "credentials": (
        "Check the Pixazo API key and the account's balance; submits resume by "
        "themselves once the gateway accepts the key."
    ),
    "storage": (
        "Check that the bucket exists and that the daemon's S3 credentials may write "
        "to it; uploads resume by themselves once it does."
    ),
}

#: A message still queued when the queue is full is dropped (oldest first).
MAX_QUEUED = 1000


@dataclass(frozen=True, slots=True)
class Message:
    """One notification: its ``notify.events`` name, Apprise type, title and body."""

    event: str
    kind: str  # Apprise's notify type: info, success, warning, failure
    title: str
    body: str


def job_message(end: JobEnd) -> Message:
    """What to tell a person about a job that ended."""
    if end.event == "done":
        return Message(
            "done",
            "success",
            f"Video ready: {end.source}",
            f"The video of {end.source} is at {end.output}.\n"
            f"Details (prompt, task, hashes): {end.metadata}\n"
            f"Job {end.job_id}.",
        )
    code = end.code or ""
    lines = [f"{end.source} did not become a video: {code_words(code)} ({code})."]
    if end.message:
        lines.append(f"Why: {prose(end.message)}")
    if end.hint:
        lines.append(f"What to do: {prose(end.hint)}")
    lines.append(
        f"The inputs and the report are in the failed folder: {end.metadata}\n"
        f"Once fixed, `seedance-watch retry {end.job_id}` puts them back in the inbox."
    )
    return Message("failed", "failure", f"Video failed: {end.source}", "\n".join(lines))


def _shown(message: Message) -> Message:
    """``message`` with its title and each line of its body :func:`printable`."""
    return Message(
        message.event,
        message.kind,
        printable(message.title),
        "\n".join(printable(line) for line in message.body.split("\n")),
    )


class Notifications:
    """Queues and sends the notifications of ``notify`` (nothing at all without URLs).

    ``timezone`` is how times (when a pause lifts) are shown: ``budget.timezone``.
    ``attempts`` and ``backoff`` (seconds, doubled after each failure) shape the
    retries of one URL; ``sender`` replaces Apprise (tests).
    """

    def __init__(
        self,
        notify: NotifyConfig,
        *,
        timezone: str = "UTC",
        attempts: int = 4,
        backoff: float = 2.0,
        sender: Callable[[str, Message], bool] | None = None,
    ) -> None:
        self._events = frozenset(notify.events)
        self._urls = tuple(notify.urls)
        self._zone = zoneinfo.ZoneInfo(timezone)
        self._timezone = timezone
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._send = sender if sender is not None else self._send_apprise
        self._queue: collections.deque[Message] = collections.deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._services: dict[str, Any] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._urls)

    # --- what the engine calls ---------------------------------------------------------

    def job_ended(self, end: JobEnd) -> None:
        """A job is done or failed (its end is durable)."""
        self._enqueue(job_message(end))

    def pause_started(self, reason: str, message: str, lifts_at: float | None = None) -> None:
        """Submits (or uploads) stop for ``reason`` (``budget``, ``credentials``, ``storage``).

        ``message`` says why (for the budget: ``BudgetHold.why``); ``lifts_at`` is when
        the pause ends (the budget) or the next probe goes out (the others).
        """
        lines = [message]
        if lifts_at is not None:
            when = f"{dt.datetime.fromtimestamp(lifts_at, self._zone):%Y-%m-%d %H:%M}"
            if reason == "budget":
                lines.append(f"Submits resume at {when} {self._timezone}.")
            else:
                lines.append(f"The next try is at {when} {self._timezone}.")
        lines.append(PAUSE_HINTS.get(reason, "No job fails while the daemon is paused."))
        self._enqueue(
            Message(
                "paused",
                "warning",
                f"seedance-watch paused: {reason}",
                "\n".join(lines),
            )
        )

    def pause_ended(self, reason: str) -> None:
        """The pause for ``reason`` is over: work goes on."""
        self._enqueue(
            Message(
                "resumed",
                "info",
                f"seedance-watch resumed: {reason}",
                f"The {reason} pause is over; the waiting jobs go on.",
            )
        )

    # The wait happens in a thread, which asyncio cannot cancel: it needs its own bound.
    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait up to ``timeout`` seconds for every queued message to be sent or given up."""
        if self._thread is None:
            return True
        return await asyncio.to_thread(self._wait_idle, timeout)

    def close(self) -> None:
        """Stop the worker (what is still queued is dropped; call :meth:`drain` first)."""
        self._closed.set()
        with self._cond:
            self._queue.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- the worker --------------------------------------------------------------------

    def _enqueue(self, message: Message) -> None:
        if not self._urls or message.event not in self._events or self._closed.is_set():
            return
        message = _shown(message)
        with self._cond:
            if len(self._queue) >= MAX_QUEUED:
                dropped = self._queue.popleft()
                log.warning("notify.dropped", notification=dropped.event, title=dropped.title)
            self._queue.append(message)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="seedance-notify", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def _wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def _work(self) -> None:
        while True:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._queue or self._closed.is_set())
                if self._closed.is_set():
                    return
                message = self._queue.popleft()
                self._busy = True
            for index, url in enumerate(self._urls):
                try:
                    self._deliver(index, url, message)
                except Exception:  # the worker must outlive any bug in one delivery
                    log.exception("notify.failed", notification=message.event, target=index)

    def _deliver(self, index: int, url: str, message: Message) -> None:
        delay = self._backoff
        error = "refused"
        for attempt in range(1, self._attempts + 1):
            try:
                if self._send(url, message):
                    log.debug("notify.sent", notification=message.event, target=index)
                    return
                error = "refused"
            except Exception as exc:  # Apprise plugins raise what they like
                error = f"{type(exc).__name__}: {exc}"
            if attempt < self._attempts and self._closed.wait(delay):
                break  # closing: give up at once
            delay *= 2
        log.warning(
            "notify.failed",
            notification=message.event,
            title=message.title,
            target=index,
            service=self._describe(url),
            attempts=attempt,
            error=error,
        )

    # --- Apprise -----------------------------------------------------------------------

    def _service(self, url: str) -> Any:
        service = self._services.get(url)
        if service is None:
            import apprise  # only a daemon with notify.urls pays for the import

            service = apprise.Apprise()
            service.add(url)
            self._services[url] = service
        return service

    def _send_apprise(self, url: str, message: Message) -> bool:
        return bool(
            self._service(url).notify(
                body=message.body, title=message.title, notify_type=message.kind
            )
        )

    def _describe(self, url: str) -> str:
        """The URL as Apprise prints it with its secrets hidden (never the raw URL)."""
        try:
            servers: Sequence[Any] = list(self._service(url))
            return str(servers[0].url(privacy=True)) if servers else "invalid URL"
        except Exception:
            return url.split("://", 1)[0] + "://..."
