"""The workload: a few jobs through the real daemon, in-process, while recording.

``record_jobs`` lays out a tree (config, inbox with ``pairs`` image + sidecar
drops, the first of them a first-and-last-frame drop of three files with
``frames``; empty outbox/done/failed, and ``state/`` unless ``fresh_state``), then
runs ``run_service(config, api_key, once=True)`` against the simulator and the
S3 emulator under a :class:`Recorder`.  The provider's ``task_status`` (a poll)
is wrapped to drop a ``poll`` marker into the op list.  ``storage.delete_after``
is off: an object deleted after a job finished would be missing for the crash
states cut before that, which the outside world could not produce.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from seedance_watch.config import load_config
from seedance_watch.daemon import RunResult, run_service
from seedance_watch.ledger import jsonl
from seedance_watch.providers.keys import load_api_key
from seedance_watch.providers.pixazo import PROVIDER, Gateway
from seedance_watch.simulator import Simulator, SimulatorConfig
from seedance_watch.testing.s3emulator import S3Emulator

from ..helpers import make_image_bytes
from .recorder import Recorder, Recording

KEYS = PROVIDER.keys

__all__ = [
    "FOLDERS",
    "Workload",
    "compaction",
    "record_jobs",
    "run_daemon_once",
    "simulator_config",
    "write_tree_config",
]

FOLDERS = ("inbox", "outbox", "done", "failed", "state")
CONFIG_NAME = "seedance-watch.yaml"


def simulator_config() -> SimulatorConfig:
    """Quick tasks and tiny videos: the explorer runs the daemon many times."""
    return SimulatorConfig(
        queued_seconds=0.02,
        running_seconds=0.05,
        video_seconds=0.25,
        video_fps=4,
        video_max_side=64,
    )


def write_tree_config(root: Path, s3: S3Emulator, sim: Simulator, bucket: str) -> Path:
    """The config of a tree at ``root`` (folders beside it), fast timings, no deletes."""
    path = root / CONFIG_NAME
    path.write_text(
        "paths: {inbox: ./inbox, outbox: ./outbox, done: ./done, failed: ./failed, "
        "state: ./state}\n"
        f"gateway: {{base_url: '{sim.base_url}', poll_interval: 0.05, "
        "task_timeout: 60, request_timeout: 5}\n"
        f"storage: {{bucket: {bucket}, endpoint_url: '{s3.endpoint_url}', "
        "region: us-east-1, delete_after: false}\n"
        "watch: {mode: polling, settle_seconds: 0.05, rescan_seconds: 2, pair_timeout: 300}\n"
        "log: {format: json, level: warning}\n",
        encoding="utf-8",
    )
    return path


def run_daemon_once(config_path: Path) -> RunResult:
    """``run --once`` in-process on the tree of ``config_path``."""
    config = load_config(config_path, {})
    result = asyncio.run(
        run_service(config, load_api_key({"PIXAZO_API_KEY": "sim-key"}, KEYS), once=True)
    )
    gc.collect()  # a never-awaited coroutine warns here, in this run, not in a later test
    return result


@dataclass
class Workload:
    """A recorded run: the ops, the inputs dropped (path -> bytes), and how it ended."""

    root: Path
    recording: Recording
    inputs: dict[str, bytes]
    result: RunResult
    #: The ledger's compaction floor during the run (None: the default, 10,000 lines).
    compact_every: int | None = None
    # : The tree-relative paths of each drop's files (they move together, docs/design.md, "The
    # sidecar").
    drops: tuple[tuple[str, ...], ...] = ()


def drop_inputs(
    inbox: Path, pairs: int, *, frames: bool = False
) -> tuple[dict[str, bytes], tuple[tuple[str, ...], ...]]:
    """``pairs`` distinct image + sidecar drops, the first with a last frame when
    ``frames`` (``scene0-end.png``, named by its sidecar); returns tree-relative
    path -> bytes, and each drop's paths."""
    inputs: dict[str, bytes] = {}
    drops: list[tuple[str, ...]] = []
    for n in range(pairs):
        stem = f"scene{n}"
        files = {f"{stem}.jpg": make_image_bytes(320, 320, color=_color(n, 160))}
        sidecar = f'prompt: "a calm scene number {n}"\n'
        if frames and n == 0:
            files[f"{stem}-end.png"] = make_image_bytes(320, 320, color=_color(n, 40), fmt="PNG")
            sidecar += f"last_frame: {stem}-end.png\n"
        files[f"{stem}.yaml"] = sidecar.encode()
        for name, data in files.items():  # the sidecar last: the images are complete first
            (inbox / name).write_bytes(data)
            inputs[f"inbox/{name}"] = data
        drops.append(tuple(f"inbox/{name}" for name in files))
    return inputs, tuple(drops)


def _color(n: int, blue: int) -> tuple[int, int, int]:
    return ((37 * n) % 256, (91 * n + 60) % 256, blue)


@contextmanager
def compaction(every: int | None) -> Iterator[None]:
    """Compact the ledger after ``every`` lines instead of 10,000 (None: unchanged)."""
    with pytest.MonkeyPatch.context() as mp:
        if every is not None:
            mp.setattr(jsonl, "_DEFAULT_COMPACT", every)
        yield


@contextmanager
def poll_markers(recorder: Recorder) -> Iterator[None]:
    """Mark every poll the daemon sends, in op order."""
    real = Gateway.task_status

    async def task_status(self: Gateway, ref: Any) -> Any:
        recorder.mark("poll", ref.task_id)
        return await real(self, ref)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Gateway, "task_status", task_status)
        yield


def record_jobs(
    root: Path,
    s3: S3Emulator,
    sim: Simulator,
    *,
    bucket: str,
    pairs: int = 2,
    fresh_state: bool = False,
    compact_every: int | None = None,
    frames: bool = False,
) -> Workload:
    """Record the daemon doing ``pairs`` jobs in a new tree at ``root``.

    With ``frames`` the first job is a first-and-last-frame drop (three files).

    ``compact_every`` lowers the ledger's compaction floor, so that rotations and
    snapshots happen during the run (and during the recoveries of its states).
    """
    root.mkdir(parents=True)
    for name in FOLDERS:
        if name != "state" or not fresh_state:
            (root / name).mkdir()
    config_path = write_tree_config(root, s3, sim, bucket)
    inputs, drops = drop_inputs(root / "inbox", pairs, frames=frames)
    recorder = Recorder(root)
    with recorder, poll_markers(recorder), compaction(compact_every):
        result = run_daemon_once(config_path)
    return Workload(root, recorder.recording, inputs, result, compact_every, drops)
