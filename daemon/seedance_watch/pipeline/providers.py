"""The providers a run talks to: the configured one, and the one of each job.

A job's task lives at the provider that created it (``Job.provider``, written with
the submit intent; records of the first release are Pixazo's).  Its polls go
there even when ``gateway.provider`` names another one now: that provider is built
on first use, with its own base URL and key (docs/design.md, "The gateway
protocol").
"""

from __future__ import annotations

from collections.abc import Callable

from seedance_watch.core.jobs import Job
from seedance_watch.providers.base import VideoProvider

__all__ = ["Providers"]


class Providers:
    """The configured provider (``default``) and, by name, any other a job needs."""

    def __init__(self, default: VideoProvider, build: Callable[[str], VideoProvider]) -> None:
        self.default = default
        self._build = build
        self._by_name: dict[str, VideoProvider] = {default.name: default}

    def of(self, job: Job) -> VideoProvider:
        """The provider that owns ``job``'s task."""
        provider = self._by_name.get(job.provider)
        if provider is None:
            provider = self._by_name[job.provider] = self._build(job.provider)
        return provider

    async def aclose(self) -> None:
        for provider in self._by_name.values():
            await provider.aclose()
