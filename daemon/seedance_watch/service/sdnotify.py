"""The systemd notification protocol (``sd_notify``), written out: one datagram per state.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET`` (a path, or an abstract
socket written ``@name``) and, with ``WatchdogSec=``, ``$WATCHDOG_USEC`` (and
``$WATCHDOG_PID``).  Outside systemd both are absent and every call here is a
no-op, so the daemon needs no "am I under systemd" branch.

The watchdog ping is sent by a coroutine (:meth:`Notifier.watchdog_loop`) on the
daemon's own event loop, never by a thread: a loop that stalls stops pinging,
and systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

import structlog

__all__ = ["Notifier", "notify_address", "sd_notify", "watchdog_interval"]

log = structlog.get_logger(__name__)


def notify_address(environ: Mapping[str, str]) -> str | bytes | None:
    """The address of ``$NOTIFY_SOCKET`` for ``sendto``; abstract names become bytes."""
    raw = environ.get("NOTIFY_SOCKET", "")
    if not raw:
        return None
    if raw[0] == "@":
        # Abstract namespace: a leading NUL byte instead of the "@".
        return b"\0" + raw[1:].encode()
    if raw[0] == "/":
        return raw
    return None  # vsock and other forms: not for us


def sd_notify(message: str, address: str | bytes | None) -> bool:
    """Send one ``KEY=VALUE`` datagram; ``False`` when there is no socket or it failed."""
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.warning("notify.failed", message=message.split("=", 1)[0], error=str(exc))
        return False
    return True


def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between pings (half of ``$WATCHDOG_USEC``), or None when not watched.

    ``$WATCHDOG_PID``, when set, must be this process (it is not ours otherwise).
    """
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(pid if pid is not None else os.getpid()):
        return None
    return int(usec) / 2_000_000


class Notifier:
    """The daemon's side of ``Type=notify``: READY, STATUS, WATCHDOG, STOPPING."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = notify_address(env)
        self.interval = watchdog_interval(env)
        self._status: str | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self, status: str | None = None) -> None:
        """READY=1: the ledger is recovered and the inbox is watched."""
        text = "READY=1" + (f"\nSTATUS={status}" if status else "")
        if sd_notify(text, self.address):
            self._status = status
            log.info("notify.ready")

    def status(self, text: str) -> None:
        """STATUS=..., sent only when it changed."""
        if text != self._status and sd_notify(f"STATUS={text}", self.address):
            self._status = text

    def stopping(self) -> None:
        sd_notify("STOPPING=1", self.address)

    async def watchdog_loop(self, status: Callable[[], str] | None = None) -> None:
        """Ping WATCHDOG=1 every half ``WatchdogSec`` from this event loop (until cancelled).

        ``status`` is refreshed at the same pace (sent only when it changed).
        """
        interval = self.interval
        if self.address is None:
            return
        period = interval if interval is not None else 5.0
        while True:
            if interval is not None:
                sd_notify("WATCHDOG=1", self.address)
            if status is not None:
                self.status(status())
            await asyncio.sleep(period)
