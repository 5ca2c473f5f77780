"""Mistakes found before the first drop: the bucket and the key, checked at start-up.

A wrong S3 secret, a missing bucket or a refused API key used to show only at the
first drop -- after the image was uploaded, in the key's case.  Before the engine
takes any drop it writes and deletes a probe object, and asks the gateway whether
it accepts the key with a call that costs nothing (docs/design.md, "The gateway
protocol").  A refusal pauses what it concerns (nothing fails); ``run --once``
ends there with its exit code.  While the key is refused, the key is probed again
the same free way, on the breaker's schedule, so no paid submit is ever the probe
and no image waits in the bucket for a key that does not work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from seedance_watch import errors as E
from seedance_watch.aio import wait_event
from seedance_watch.pipeline.once import RunPolicy
from seedance_watch.pipeline.pauses import Pauses
from seedance_watch.pipeline.stage import StageDeps

__all__ = ["KeyWatch", "preflight"]

log = structlog.get_logger(__name__)


async def preflight(deps: StageDeps, pauses: Pauses, policy: RunPolicy) -> bool:
    """Check the bucket and the key before any drop; True when the gateway can check
    the key for free (then the :class:`KeyWatch` probes it while it is refused)."""
    try:
        key = await asyncio.to_thread(deps.storage.probe)
        log.info("check.storage_ok", probe=key)
    except E.StorageUnavailable as exc:
        pauses.pause_storage(exc.message)
        policy.paused("storage", exc.message)
    except E.StorageTransient as exc:  # unreachable now: uploads retry and say so
        log.warning("check.storage_unreachable", reason=exc.message)
    provider = deps.providers.default
    try:
        free = await provider.check_key()
    except E.CredentialsRefused as exc:
        pauses.pause_credentials(exc)
        policy.paused("credentials", exc.message)
        return True
    except E.TransientError as exc:
        log.warning("check.gateway_unreachable", reason=exc.message)
        return True
    if free:
        log.info("check.key_ok", provider=provider.name)
    else:
        log.info(
            "check.key_unchecked",
            provider=provider.name,
            detail="the gateway offers no free call: the first submit will tell",
        )
    return free


class KeyWatch:
    """While the key is refused, probe it with the free check on the breaker's schedule."""

    def __init__(self, deps: StageDeps, pauses: Pauses, clock: Callable[[], float]) -> None:
        self.deps, self.pauses, self.clock = deps, pauses, clock
        self.wake = asyncio.Event()

    async def run(self) -> None:
        breaker = self.pauses.credentials
        while True:
            if not breaker.is_open:
                self.wake.clear()
                await self.wake.wait()
                continue
            wait = breaker.acquire(self.clock())
            if wait > 0:
                self.wake.clear()
                await wait_event(self.wake, wait)
                continue
            try:
                await self.deps.providers.default.check_key()
            except E.CredentialsRefused as exc:
                self.pauses.pause_credentials(exc)
            except E.TransientError as exc:
                log.info("check.key_probe_failed", reason=exc.message)
            else:
                self.pauses.credentials_ok()
