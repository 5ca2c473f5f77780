"""Shared test helpers (moved from test_simulator.py)."""

from __future__ import annotations

import subprocess
from typing import Any

from seedance_watch.simulator import SimulatorConfig

SUBMIT = "/byteplus/v1/generateImage2VideoTask"


POLL = "/bytedance-polling/getVideoResult"


MODEL = "seedance-1-0-lite-i2v-250428"


FAST = {"queued_seconds": 0.05, "running_seconds": 0.1}

#: End-to-end tests' simulator: tasks of a fraction of a second, tiny videos.
QUICK_TASKS: dict[str, Any] = {
    "queued_seconds": 0.05,
    "running_seconds": 0.2,
    "video_seconds": 0.25,
    "video_fps": 4,
    "video_max_side": 64,
}


def quick_tasks(**knobs: Any) -> SimulatorConfig:
    """A :class:`SimulatorConfig` with :data:`QUICK_TASKS`, ``knobs`` over them."""
    return SimulatorConfig(**{**QUICK_TASKS, **knobs})


def headers(key: str = "sim-key") -> dict[str, str]:
    return {
        "Ocp-Apim-Subscription-Key": key,
        "Content-Type": "application/json",
        "Cache-Control": "no-cache",
    }


def body(url: str, text: str = "A calm sea --duration 5", model: str = MODEL) -> dict[str, Any]:
    return {
        "model": model,
        "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": url}],
    }


def _ready_line(proc: subprocess.Popen[str]) -> str | None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return line if line.startswith("Pixazo simulator") or not line else None
