"""The sd_notify client against real AF_UNIX datagram sockets."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from seedance_watch.service.sdnotify import Notifier, notify_address, sd_notify, watchdog_interval

from .helpers import wait_for
from .sdnotify_socket import NotifySocket

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def abstract_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket(f"@seedance-watch-test-{os.getpid()}-{time.monotonic_ns()}")
    yield sock
    sock.close()


def test_one_datagram_to_a_path_socket_and_to_an_abstract_socket(
    tmp_path: Path, abstract_socket: NotifySocket
) -> None:
    """sd_notify sends exactly its message to a path address and to an @abstract one."""
    path_socket = NotifySocket(str(tmp_path / "notify"))
    try:
        for receiver in (path_socket, abstract_socket):
            address = notify_address({"NOTIFY_SOCKET": receiver.env_value})
            assert sd_notify("READY=1\nSTATUS=hello", address)
            wait_for(lambda r=receiver: r.messages, timeout=5)
            msgs = receiver.texts()
            assert msgs == ["READY=1\nSTATUS=hello"]
    finally:
        path_socket.close()
    assert notify_address({}) is None and not sd_notify("READY=1", None)
    assert notify_address({"NOTIFY_SOCKET": "@x"}) == b"\0x"
    # A socket that is gone is a logged failure, not an exception.
    assert not sd_notify("READY=1", str(tmp_path / "missing"))


def test_watchdog_interval_is_half_of_watchdog_usec_and_checks_the_pid() -> None:
    """WATCHDOG_USEC=4000000 means a ping every 2 s; another process's WATCHDOG_PID none."""
    assert watchdog_interval({"WATCHDOG_USEC": "4000000"}) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "7"}, pid=7) == 2.0
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None


def test_watchdog_pings_while_the_loop_runs_and_none_while_it_is_blocked(
    abstract_socket: NotifySocket,
) -> None:
    """WATCHDOG=1 comes from the event loop: a blocked loop sends nothing, then resumes."""
    notifier = Notifier({"NOTIFY_SOCKET": abstract_socket.env_value, "WATCHDOG_USEC": "100000"})
    assert notifier.interval == 0.05

    def pings() -> list[float]:
        return [t for t, text in list(abstract_socket.messages) if text == "WATCHDOG=1"]

    async def scenario() -> tuple[float, float]:
        task = asyncio.create_task(notifier.watchdog_loop(lambda: "jobs: 0 active"))
        deadline = time.monotonic() + 10
        while len(pings()) < 4:
            assert time.monotonic() < deadline, "no watchdog pings while the loop runs"
            await asyncio.sleep(0.01)
        blocked_at = time.monotonic()
        time.sleep(0.6)  # noqa: ASYNC251 - the stall under test: the loop cannot run
        unblocked_at = time.monotonic()
        count = len(pings())
        while len(pings()) <= count:
            assert time.monotonic() < deadline + 10, "pings did not resume"
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return blocked_at, unblocked_at

    blocked_at, unblocked_at = asyncio.run(scenario())
    # A datagram sent just before the stall may arrive a moment into it.
    during = [t for t in pings() if blocked_at + 0.05 < t < unblocked_at]
    assert during == [], f"{len(during)} pings while the loop was blocked"
    assert any(t >= unblocked_at for t in pings())
    assert "STATUS=jobs: 0 active" in abstract_socket.texts()


def test_notifier_without_systemd_is_a_no_op() -> None:
    """Outside systemd (no NOTIFY_SOCKET) every call does nothing and the loop returns."""
    notifier = Notifier({})
    assert not notifier.enabled
    notifier.ready("x")
    notifier.status("x")
    notifier.stopping()
    asyncio.run(asyncio.wait_for(notifier.watchdog_loop(), timeout=1))
