"""End-of-job hooks: ``hooks.on_done`` / ``hooks.on_failed``, run once per job (docs/design.md,
"Hooks and notifications").

The engine calls :meth:`HookRunner.run` with a :class:`JobEnd` once the job's end
is durable, and records ``HookRan`` in the ledger when it returns; a crash before
that runs the hook again after the restart (at least once across crashes, at most
once otherwise).  ``run`` never raises, except ``CancelledError`` at shutdown,
after it has killed the hook (so the hook is not recorded as run).

A hook is an argv list, executed without a shell, in a session of its own (so a
timeout kills its whole process group), with a bounded number running at once.
Its environment is the daemon's, minus every way to the Pixazo key and the
``health.token``, plus the job's ``SEEDANCE_WATCH_*`` variables.  A hook that
exits non-zero, cannot start or outlives ``hooks.timeout`` is logged as
``hook.failed`` with the tail of its stderr (redacted); the job stays as it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterable, Mapping

import structlog

from seedance_watch.config import HooksConfig
from seedance_watch.logs import MASK, redact_text
from seedance_watch.pipeline.ports import JobEnd

__all__ = ["HOOK_SCRUBBED", "HookRunner", "hook_environment", "scrubbed_environment"]

log = structlog.get_logger(__name__)

#: Variables never passed to a hook whatever the provider: the page's token.  The
#: provider's own key variables are added by whoever builds the runner
#: (``ProviderSpec.keys.variables``).
HOOK_SCRUBBED = frozenset({"SEEDANCE_WATCH_HEALTH__TOKEN"})
_JOB_VARIABLES = ("EVENT", "JOB_ID", "SOURCE", "OUTPUT", "METADATA", "CODE")
_PREFIX = "SEEDANCE_WATCH_"
#: How much of a failed hook's stderr is logged (its end: where the error usually is).
STDERR_TAIL_BYTES = 2048
_KILL_GRACE = 2.0
_PIPE_GRACE = 1.0


def hook_environment(end: JobEnd) -> dict[str, str]:
    """The ``SEEDANCE_WATCH_*`` variables of a job's end (those that apply, only)."""
    env = {
        "SEEDANCE_WATCH_EVENT": end.event,
        "SEEDANCE_WATCH_JOB_ID": end.job_id,
        "SEEDANCE_WATCH_SOURCE": end.source,
        "SEEDANCE_WATCH_METADATA": str(end.metadata),
    }
    if end.output is not None:
        env["SEEDANCE_WATCH_OUTPUT"] = str(end.output)
    if end.code is not None:
        env["SEEDANCE_WATCH_CODE"] = end.code
    return env


def scrubbed_environment(
    environ: Mapping[str, str], secrets: Iterable[str], scrub: Iterable[str] = HOOK_SCRUBBED
) -> dict[str, str]:
    """``environ`` without the variables in ``scrub`` (the key's sources, the token),
    any value holding a secret, and any job variable the daemon itself inherited."""
    values = [s for s in secrets if s]
    job_vars = {_PREFIX + name for name in _JOB_VARIABLES}
    dropped = frozenset(scrub)
    return {
        name: value
        for name, value in environ.items()
        if name not in dropped
        and name not in job_vars
        and not any(secret in value for secret in values)
    }


class HookRunner:
    """Runs the end-of-job hooks, at most ``max_running`` processes at once.

    ``environ`` is the daemon's environment (taken once, scrubbed here);
    ``secrets`` are the values no hook may see (the API key, ``health.token``).
    """

    def __init__(
        self,
        hooks: HooksConfig,
        environ: Mapping[str, str],
        secrets: Iterable[str],
        *,
        scrub: Iterable[str] = (),
        max_running: int = 4,
    ) -> None:
        self._hooks = hooks
        self._secrets = tuple(sorted((s for s in secrets if s), key=len, reverse=True))
        self._base_env = scrubbed_environment(environ, self._secrets, HOOK_SCRUBBED | set(scrub))
        self._slots = asyncio.Semaphore(max_running)
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def command(self, event: str) -> list[str] | None:
        """The argv of the hook for ``event`` (``done``/``failed``), None when there is none."""
        if event == "done":
            return self._hooks.on_done
        if event == "failed":
            return self._hooks.on_failed
        return None

    def environment(self, end: JobEnd) -> dict[str, str]:
        """The exact environment the hook of ``end`` runs with."""
        return {**self._base_env, **hook_environment(end)}

    async def run(self, end: JobEnd) -> None:
        """Run the hook of ``end`` (if one is configured) to its end or its timeout.

        Never raises but ``CancelledError`` (shutdown): the hook was then killed and
        should not be recorded as run.
        """
        argv = self.command(end.event)
        if argv is None:
            return
        self._running += 1
        self._idle.clear()
        try:
            async with self._slots:
                await self._run(argv, end)
        except Exception:  # a bug here must not reach the engine
            log.exception("hook.failed", job_id=end.job_id, outcome=end.event, status="error")
        finally:
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    @property
    def running(self) -> int:
        """How many :meth:`run` calls are in progress (waiting for a slot or running)."""
        return self._running

    async def wait_idle(self) -> None:
        """Return once no :meth:`run` is in progress (bound it with ``asyncio.timeout``)."""
        await self._idle.wait()

    async def _run(self, argv: list[str], end: JobEnd) -> None:
        started = time.monotonic()
        fields = {"job_id": end.job_id, "outcome": end.event}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=self.environment(end),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            log.warning(
                "hook.failed",
                **fields,
                status="not_started",
                error=self._redact(f"{argv[0]}: {exc.strerror or exc}"),
            )
            return
        assert proc.stderr is not None
        tail = bytearray()
        reader = asyncio.create_task(_read_tail(proc.stderr, tail))
        status: int | str
        try:
            # asyncio.timeout, not wait_for (see seedance_watch.aio): a cancellation
            # must never be lost because the hook ended at that moment.
            try:
                async with asyncio.timeout(self._hooks.timeout):
                    await proc.wait()
                status = proc.returncode if proc.returncode is not None else "unknown"
            except TimeoutError:
                await _kill_group(proc)
                status = "timeout"
            # Something the hook left running may hold stderr open: do not wait for it.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_PIPE_GRACE):
                    await asyncio.shield(reader)
        except asyncio.CancelledError:
            await _kill_group(proc)
            raise
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        seconds = round(time.monotonic() - started, 3)
        if status == 0:
            log.info("hook.ran", **fields, seconds=seconds)
            return
        event: dict[str, object] = {"status": status, "seconds": seconds}
        if isinstance(status, int) and status < 0:
            with contextlib.suppress(ValueError):
                event["signal"] = signal.Signals(-status).name
        log.warning(
            "hook.failed",
            **fields,
            **event,
            stderr=self._redact(bytes(tail).decode("utf-8", "replace")),
        )

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return redact_text(text)


async def _read_tail(stream: asyncio.StreamReader, tail: bytearray) -> None:
    """Read ``stream`` to its end, keeping its last :data:`STDERR_TAIL_BYTES` in ``tail``."""
    while chunk := await stream.read(65536):
        tail += chunk
        if len(tail) > STDERR_TAIL_BYTES:
            del tail[: len(tail) - STDERR_TAIL_BYTES]


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the hook's process group, SIGKILL it if it lingers, and reap the hook."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), _KILL_GRACE)
        except TimeoutError:
            continue
        if sig is signal.SIGTERM:
            # The leader is gone; whatever it started in its group goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        return
