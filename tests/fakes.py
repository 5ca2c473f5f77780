"""Fakes that speak the seams' protocols: a clock, a store, a provider, a bucket, an inbox.

Shared by the engine-level tests; no network and no simulator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from seedance_watch.config import Config
from seedance_watch.core.jobs import Job, State
from seedance_watch.core.models import MODELS
from seedance_watch.pipeline.engine import Engine
from seedance_watch.pipeline.providers import Providers
from seedance_watch.providers.base import GenerationRequest, TaskRef, TaskStatus
from seedance_watch.providers.download import VideoDownloader


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class MemoryStore:
    """A JobStore in a dict (``put`` is durable by definition)."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self.puts: list[Job] = []

    def put(self, job: Job) -> None:
        self._jobs[job.job_id] = job
        self.puts.append(job)

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def jobs(self) -> Mapping[str, Job]:
        return dict(self._jobs)

    def active(self) -> list[Job]:
        return [j for j in self._jobs.values() if not j.terminal]

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in State}
        for job in self._jobs.values():
            out[job.state.value] += 1
        return out

    def counts_by_kind(self) -> dict[tuple[str, str], int]:
        kinds = {job.kind for job in self._jobs.values()}
        out = {(kind, s.value): 0 for kind in kinds for s in State}
        for job in self._jobs.values():
            out[(job.kind, job.state.value)] += 1
        return out

    def find_done_by_content_key(self, content_key: str) -> Job | None:
        return None

    def snapshot(self) -> list[Job]:
        return list(self._jobs.values())

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        pass


class FakeProvider:
    name = "fake"
    models = MODELS

    def __init__(self) -> None:
        self.created: list[tuple[GenerationRequest, dict[str, str], str | None]] = []
        self.statuses: list[TaskStatus | Exception] = []
        #: Raised by the next ``create_task`` (then cleared), after it is recorded.
        self.submit_error: Exception | None = None

    async def create_task(
        self,
        request: GenerationRequest,
        media: Sequence[tuple[str, str]],
        *,
        webhook_url: str | None = None,
    ) -> TaskRef:
        self.created.append((request, dict(media), webhook_url))
        if self.submit_error is not None:
            error, self.submit_error = self.submit_error, None
            raise error
        return TaskRef(f"t-{len(self.created)}", None, "legacy")

    async def task_status(self, ref: TaskRef) -> TaskStatus:
        answer = self.statuses.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def check_key(self) -> bool:
        return False  # like a gateway without a free call: the first submit tells

    async def aclose(self) -> None:
        pass


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
    tmp_path: Path, *, budget: dict[str, Any] | None = None, **gateway: Any
) -> tuple[Engine, MemoryStore, FakeProvider, FakeClock]:
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
    store, provider, clock = MemoryStore(), FakeProvider(), FakeClock()
    engine = Engine(
        config,
        store=store,
        storage=FakeBucket(),  # type: ignore[arg-type]
        providers=Providers(provider, lambda _name: provider),  # type: ignore[arg-type]
        downloader=VideoDownloader(),
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
