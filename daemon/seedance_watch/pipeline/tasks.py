"""The engine's tasks: started, watched, drained and stopped in one place.

Two kinds: *workers* (the timer loop, the submitter, intake and the stage pools),
which run for the engine's life, and *side tasks* (a submit in flight, a hook),
which a shutdown waits for.  A worker never ends by itself: if one does, it is a
bug, and the daemon stops cleanly (:class:`StageCrashed`) rather than running with
a dead worker.  A failed fsync anywhere (:class:`~seedance_watch.errors.StateError`)
stops it too: the state can no longer be trusted.

Steps a shutdown lets finish (an upload, a submit, a download, a placement) are
marked with :meth:`Supervisor.critical`; :meth:`Supervisor.drain` waits for them,
bounded.  ``idle`` is set whenever something ended: whoever waits for the engine to
have nothing left (``run --once``, a drain) checks again then.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import structlog

from seedance_watch import errors as E
from seedance_watch.aio import wait_event

__all__ = ["StageCrashed", "Supervisor"]

log = structlog.get_logger(__name__)


class StageCrashed(E.StateError):
    """A stage raised an unexpected exception: a bug; the daemon stops cleanly."""


class Supervisor:
    """Starts and watches the engine's tasks; ``on_fatal`` is told when the engine must stop."""

    def __init__(self, on_fatal: Callable[[], None]) -> None:
        self.fatal: E.StateError | None = None
        self.idle = asyncio.Event()
        self.fatal_event = asyncio.Event()
        self._on_fatal = on_fatal
        self._busy = 0
        self._workers: list[asyncio.Task[Any]] = []
        self._side: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str, *, side: bool = False) -> None:
        """Start ``coro``: a worker, or with ``side`` a task a shutdown waits for."""
        task = asyncio.create_task(coro, name=name)
        if side:
            self._side.add(task)
            task.add_done_callback(self._side.discard)
        else:
            self._workers.append(task)
        task.add_done_callback(self._done)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """Mark a step that shutdown lets finish (an upload, a submit, a download)."""
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            self.idle.set()

    def die(self, exc: E.StateError) -> None:
        """The state can no longer be trusted (a failed fsync, a crashed stage): stop."""
        if self.fatal is None:
            log.critical("engine.state_error", error=exc.message)
            self.fatal = exc
        self._on_fatal()
        self.fatal_event.set()
        self.idle.set()

    def raise_if_fatal(self) -> None:
        if self.fatal is not None:
            raise self.fatal

    async def drain(self, grace: float) -> None:
        """Let side tasks and critical steps finish (``grace`` seconds at most), then
        cancel every task."""
        deadline = time.monotonic() + grace
        if self._side:  # submits in flight and object deletions
            await asyncio.wait(set(self._side), timeout=grace)
        while self._busy and time.monotonic() < deadline:
            self.idle.clear()
            await wait_event(self.idle, deadline - time.monotonic())
        if self._busy:
            log.warning("engine.drain_timeout", busy=self._busy, grace=grace)
        tasks = [*self._workers, *self._side]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, E.StateError):
            self.die(exc)
        elif exc is not None:
            log.error("engine.task_error", task=task.get_name(), exc_info=exc)
            self.die(StageCrashed(f"the {task.get_name()} task crashed: {exc!r}"))
