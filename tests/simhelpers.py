"""Shared test helpers for talking to the simulator: paths, bodies, polling, videos."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Sequence
from typing import Any, Protocol

import av
import httpx
from PIL import Image, ImageStat

from seedance_watch.core.models import MODELS, Kind
from seedance_watch.simulator import Simulator, SimulatorConfig

from .helpers import wait_for

SUBMIT = "/byteplus/v1/generateImage2VideoTask"
TEXT = "/byteplus/v1/generateVideoTask"
POLL = "/bytedance-polling/getVideoResult"
STATUS = "/v2/requests/status/"

#: The Seedance 1.0 model of today (image and text).
MODEL = "seedance-1-0-pro-fast-251015"
#: The Seedance 2 model the daemon uses by default for frames and reference drops.
FAST_2 = "seedance-2-0-fast"


#: The simulator's own tests: tasks of a fraction of a second, videos as asked.
FAST_TASKS: dict[str, Any] = {"queued_seconds": 0.05, "running_seconds": 0.1}

#: End-to-end tests' simulator: tasks of a fraction of a second, tiny videos.
QUICK_TASKS: dict[str, Any] = {
    "queued_seconds": 0.05,
    "running_seconds": 0.2,
    "video_seconds": 0.25,
    "video_fps": 4,
    "video_max_side": 64,
}


def quick_tasks(**knobs: Any) -> SimulatorConfig:
    """A :class:`SimulatorConfig` with :data:`QUICK_TASKS`, ``knobs`` over them (the
    ``sim`` fixture's)."""
    return SimulatorConfig(**{**QUICK_TASKS, **knobs})


class SimFactory(Protocol):
    """The ``sim_factory`` fixture: ``sim_factory(config=None, **knobs)`` starts a
    simulator (``config``, by default :func:`quick_tasks`, with ``knobs`` over it)."""

    def __call__(self, config: SimulatorConfig | None = None, /, **knobs: Any) -> Simulator: ...


def fast_tasks(**knobs: Any) -> SimulatorConfig:
    """A :class:`SimulatorConfig` with :data:`FAST_TASKS`, ``knobs`` over them."""
    return SimulatorConfig(**{**FAST_TASKS, **knobs})


def headers(key: str = "sim-key") -> dict[str, str]:
    return {
        "Ocp-Apim-Subscription-Key": key,
        "Content-Type": "application/json",
        "Cache-Control": "no-cache",
    }


def body(url: str, text: str = "A calm sea --duration 5", model: str = MODEL) -> dict[str, Any]:
    """A Seedance 1.0 image-to-video body."""
    return {
        "model": model,
        "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": url}],
    }


# --- Seedance 2 -----------------------------------------------------------------------------


def endpoint_2(kind: Kind, model: str = FAST_2) -> str:
    """The submit path of ``model`` for a ``kind`` drop, from the model table."""
    return MODELS[model].endpoints[kind]


def image_item(url: str, role: str) -> dict[str, Any]:
    """One Seedance 2 image item."""
    return {"type": "image_url", "image_url": {"url": url}, "role": role}


def body_2(
    text: str = "The lighthouse beam sweeps over the waves",
    images: Sequence[tuple[str, str]] = (),
    **options: Any,
) -> dict[str, Any]:
    """A Seedance 2 body: the text item, an item per ``(role, url)`` in order, the options
    as top-level keys."""
    content = [{"type": "text", "text": text}, *(image_item(url, role) for role, url in images)]
    return {"content": content, **options}


def frames_body_2(first: str, last: str | None = None, **kw: Any) -> dict[str, Any]:
    """A first-last-frame body: ``first`` alone (an image drop) or with ``last``."""
    images = [("first_frame", first)] + ([("last_frame", last)] if last is not None else [])
    return body_2(images=images, **kw)


def reference_body_2(urls: Sequence[str], **kw: Any) -> dict[str, Any]:
    return body_2(images=[("reference_image", url) for url in urls], **kw)


# --- talking to a running simulator ---------------------------------------------------------


def post(sim: Simulator, path: str, payload: Any, **extra: str) -> httpx.Response:
    return httpx.post(sim.base_url + path, headers={**headers(), **extra}, json=payload, timeout=10)


def status(sim: Simulator, request_id: str) -> dict[str, Any]:
    r = httpx.get(sim.base_url + STATUS + request_id, headers=headers(), timeout=10)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def status_until_done(sim: Simulator, request_id: str) -> tuple[dict[str, Any], list[str]]:
    """The v2 status answer once the task ended, and the statuses seen on the way."""
    seen: list[str] = []

    def step() -> dict[str, Any] | None:
        answer = status(sim, request_id)
        if not seen or seen[-1] != answer["status"]:
            seen.append(answer["status"])
        return None if answer["status"] in ("QUEUED", "PROCESSING") else answer

    return wait_for(step), seen


# --- pictures and videos --------------------------------------------------------------------


def solid_png(colour: tuple[int, int, int], size: tuple[int, int] = (640, 480)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def decoded_frames(video: bytes) -> list[Image.Image]:
    with av.open(io.BytesIO(video)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        return [frame.to_image() for frame in container.decode(video=0)]


def container_seconds(video: bytes) -> float:
    """The mp4's duration as its container states it (what a player shows)."""
    with av.open(io.BytesIO(video)) as container:
        assert container.duration is not None
        return container.duration / av.time_base


def mean_colour(picture: Image.Image) -> tuple[float, ...]:
    return tuple(ImageStat.Stat(picture.convert("RGB")).mean)


def close_to(actual: tuple[float, ...], expected: tuple[int, int, int], tolerance: float) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def _ready_line(proc: subprocess.Popen[str]) -> str | None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return line if line.startswith("Pixazo simulator") or not line else None
