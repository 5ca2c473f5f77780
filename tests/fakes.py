"""An engine on fakes: a clock, a bucket and an inbox here; the store and the provider
are the shipped ones (:mod:`seedance_watch.testing`).

Shared by the engine-level tests; no network and no simulator.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from seedance_watch.config import Config
from seedance_watch.core.jobs import Job, State
from seedance_watch.pipeline.engine import Engine
from seedance_watch.pipeline.providers import Providers
from seedance_watch.providers.base import VideoProvider
from seedance_watch.providers.download import VideoDownloader
from seedance_watch.testing.memory import MemoryStore
from seedance_watch.testing.provider import FakeProvider

__all__ = ["FakeBucket", "FakeClock", "FakeInbox", "make_engine", "seed"]


class FakeClock:
    """A clock that stands still until the test moves ``now``."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeBucket:
    def key_for(self, job_id: str, name: str) -> str:
        return f"p/{job_id}/{name}"

    def upload(self, path: Path, key: str, *, content_type: str) -> int:
        return path.stat().st_size

    def url_for(self, key: str) -> str:
        return f"https://bucket.example/{key}?sig=x"

    def delete(self, key: str) -> None:
        pass

    def probe(self) -> str:
        return "p/.probe"


class FakeInbox:
    def __init__(self) -> None:
        self.watching = asyncio.Event()

    def claim(self, paths: Any) -> None:
        pass

    def release(self, paths: Any) -> None:
        pass


def make_engine(
    tmp_path: Path,
    *,
    budget: dict[str, Any] | None = None,
    provider: FakeProvider | None = None,
    downloader: VideoDownloader | None = None,
    **gateway: Any,
) -> tuple[Engine, MemoryStore, FakeProvider, FakeClock]:
    """An engine on the fakes in ``tmp_path``'s folders; ``gateway`` and ``budget``
    are config sections' keys, ``provider`` a scripted provider of the test's own."""
    config = Config.model_validate(
        {
            "paths": {k: str(tmp_path / k) for k in ("inbox", "outbox", "done", "failed", "state")},
            "storage": {"bucket": "b"},
            "gateway": {"poll_interval": 5.0, "task_timeout": 100.0, **gateway},
            "budget": budget or {},
        }
    )
    for folder in ("inbox", "outbox", "done", "failed", "state"):
        (tmp_path / folder).mkdir()
    store, clock = MemoryStore(), FakeClock()
    provider = provider or FakeProvider()
    video_provider: VideoProvider = provider
    engine = Engine(
        config,
        store=store,
        storage=FakeBucket(),  # type: ignore[arg-type]
        providers=Providers(video_provider, lambda _name: video_provider),
        downloader=downloader or VideoDownloader(),
        inbox=FakeInbox(),  # type: ignore[arg-type]
        clock=clock,
    )
    return engine, store, provider, clock


def seed(store: MemoryStore, state: State, **fields: Any) -> Job:
    job = Job(
        job_id="j1",
        state=state,
        source="beach.jpg",
        sidecar="beach.yaml",
        created_at=1.0,
        updated_at=1.0,
        model="m",
        prompt="p",
        text="p --resolution 720p",
        **fields,
    )
    store.put(job)
    return job
