"""``seedance-watch demo``: the whole flow offline, with no account.

Starts the built-in Pixazo simulator and an S3 emulator (moto) on free loopback
ports, lays out ``./demo/`` (inbox, outbox, done, failed, state and a config
file), drops a generated sample (``--kind``: an image with its sidecar, the same
with a Seedance 2 model, a first and a last frame, a text-only sidecar, reference
images, or all of them), runs the daemon once until the videos are written, and
prints where they are.  The daemon is the real one, on today's default models: it
only sees a config whose gateway and bucket happen to be local.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path

from seedance_watch.commands.terminal import printable

__all__ = ["run_demo"]

DEMO_BUCKET = "seedance-demo"
#: The simulator's placeholder key: not a secret, it only opens the local simulator.
DEMO_KEY = "demo-key"

SIDECAR = """\
# A sidecar: the prompt and options (see config/examples/).  No model: the default
# for image drops, gateway.model (Seedance 1.0 Pro Fast), reads them as text commands.
prompt: "The sun sinks into a calm sea, soft waves roll towards the shore"
resolution: 720p
ratio: 16:9
duration: 5
camerafixed: false
"""

SEEDANCE_2_SIDECAR = """\
# The same kind of drop sent to a Seedance 2 model, billed per second of video:
# options travel as keys, and generate_audio: false leaves the soundtrack out.
prompt: "Waves break on the rocks at sunset, spray glowing in the light"
model: seedance-2-0-fast
duration: 4
generate_audio: false
"""

FRAMES_SIDECAR = """\
# First and last frame: the video starts on dusk.jpg and ends on dusk-end.jpg
# (gateway.frames_model, a Seedance 2 model).
prompt: "The sun goes down behind the sea and the sky darkens"
last_frame: dusk-end.jpg
duration: 5
"""

TEXT_SIDECAR = """\
# Text to video: no image at all, the model is gateway.text_model.
mode: text
prompt: "A paper boat drifts down a rainy street at night, neon reflections"
ratio: 16:9
duration: 5
"""

REFERENCE_SIDECAR = """\
# Reference images: the video shows what they show (gateway.reference_model).
prompt: "The same coast from the air, then from the beach, as the light fades"
references: [coast-1.jpg, coast-2.jpg]
duration: auto   # the model picks the length; the cost settles at the real length
generate_audio: false
"""

#: What each --kind drops: file name -> contents (a tuple: a generated picture,
#: the sun lowered by that many pixels and the sky dimmed by the second number).
KINDS: dict[str, dict[str, str | tuple[int, int]]] = {
    "image": {"sunset.jpg": (0, 0), "sunset.yaml": SIDECAR},
    "seedance2": {"waves.jpg": (40, 20), "waves.yaml": SEEDANCE_2_SIDECAR},
    "frames": {"dusk.jpg": (0, 0), "dusk-end.jpg": (170, 70), "dusk.yaml": FRAMES_SIDECAR},
    "text": {"boat.yaml": TEXT_SIDECAR},
    "reference": {
        "coast-1.jpg": (20, 0),
        "coast-2.jpg": (120, 50),
        "coast.yaml": REFERENCE_SIDECAR,
    },
}


def _sample_image(path: Path, sun_drop: int = 0, dim: int = 0) -> None:
    """A 1280x720 sunset drawn with Pillow: sky gradient, sun, striped sea.

    ``sun_drop`` moves the sun down (pixels) and ``dim`` darkens the sky: a later frame.
    """
    from PIL import Image, ImageDraw

    width, height, horizon = 1280, 720, 430
    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    for y in range(horizon):
        t = y / horizon
        sky = (int(40 + 215 * t), int(60 + 110 * t), int(140 - 60 * t))
        draw.line([(0, y), (width, y)], fill=tuple(max(0, c - dim) for c in sky))
    top = horizon - 110 + sun_drop
    draw.ellipse([560, top, 720, top + 160], fill=(255, 214, 120))
    for y in range(horizon, height):
        t = (y - horizon) / (height - horizon)
        shade = 18 if (y // 9) % 2 else 0
        draw.line(
            [(0, y), (width, y)],
            fill=(int(30 + 40 * (1 - t)) + shade, int(70 + 50 * (1 - t)) + shade, 130 + shade),
        )
    img.save(path, format="JPEG", quality=90)


def _write_config(folder: Path, endpoint_url: str, base_url: str) -> Path:
    config = folder / "seedance-watch.yaml"
    config.write_text(
        "# Written by `seedance-watch demo`: a local simulator and S3 emulator stand in\n"
        "# for the Pixazo gateway and the bucket.  See config/seedance-watch.yaml.\n"
        "paths: {inbox: ./inbox, outbox: ./outbox, done: ./done, failed: ./failed, "
        "state: ./state}\n"
        f"gateway: {{base_url: '{base_url}', poll_interval: 0.5, task_timeout: 120}}\n"
        f"storage: {{bucket: {DEMO_BUCKET}, endpoint_url: '{endpoint_url}', region: us-east-1}}\n"
        "watch: {settle_seconds: 0.5}\n"
        "log: {format: console}\n",
        encoding="utf-8",
    )
    return config


def _drop(inbox: Path, kind: str) -> list[str]:
    """Write one sample drop of ``kind`` into the inbox; returns the names written."""
    written = []
    for name, content in KINDS[kind].items():
        if isinstance(content, tuple):
            _sample_image(inbox / name, *content)
        else:
            (inbox / name).write_text(content, encoding="utf-8")
        written.append(name)
    return written


def _command() -> str:
    """How to run ``seedance-watch`` from here: the script beside this Python (a venv's
    ``bin/``, not always on PATH), else the module."""
    script = Path(sys.executable).parent / "seedance-watch"
    if script.exists():
        return str(script)
    return f"{sys.executable} -m seedance_watch"


def run_demo(folder: Path, kind: str = "image") -> int:
    """Run the demo in ``folder`` with a drop of ``kind`` (or ``all``); returns the exit code."""
    try:
        from seedance_watch.simulator import Simulator, SimulatorConfig
        from seedance_watch.testing.s3emulator import S3Emulator
    except ImportError as exc:  # pragma: no cover - depends on the install
        print(
            f"The demo needs the 'demo' extra ({exc.name} is missing): "
            "pip install 'seedance-watch[demo]'",
            file=sys.stderr,
        )
        return 2
    from seedance_watch.config import load_config
    from seedance_watch.daemon import run_service
    from seedance_watch.ledger import open_reader
    from seedance_watch.logs import configure_logging
    from seedance_watch.providers.keys import load_api_key
    from seedance_watch.providers.pixazo import PROVIDER

    folder = folder.resolve()
    inbox = folder / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    S3Emulator.install_credentials()
    sim_config = SimulatorConfig(
        api_key=DEMO_KEY,
        queued_seconds=0.5,
        running_seconds=2.0,
        video_fps=8,
        video_max_side=640,
        submit_answer="envelope",  # the gateway as it answers today
    )
    with S3Emulator(DEMO_BUCKET) as s3, Simulator(sim_config) as sim:
        config_path = _write_config(folder, s3.endpoint_url, sim.base_url)
        print(f"Simulator: {sim.base_url}   S3 emulator: {s3.endpoint_url}")
        for each in KINDS if kind == "all" else [kind]:
            names = _drop(inbox, each)
            print(f"Dropped into {inbox}: {', '.join(names)} ({each})")
        print("Running the daemon once...")
        config = load_config(config_path, {})
        api_key = load_api_key({PROVIDER.keys.env: DEMO_KEY}, PROVIDER.keys)
        configure_logging(fmt=config.log.format, level=config.log.level)
        result = asyncio.run(run_service(config, api_key, once=True, environ=os.environ))
        leftovers = s3.keys(DEMO_BUCKET)
    with contextlib.closing(open_reader(config)) as reader:
        jobs = {job.job_id: job for job in reader.snapshot()}
    print()
    for job_id in result.summary.done:
        job = jobs[job_id]
        assert job.output is not None
        video = config.paths.outbox / job.output
        print(printable(f"Video written: {video}"))
        print(
            printable(
                f"Details:       {video.with_suffix('.json')}  (kind: {job.kind}, {job.model})"
            )
        )
        if job.duplicate_of:
            print(f"(identical to job {job.duplicate_of}: copied, not paid for again)")
    if result.summary.done:
        print(
            "(The simulator's clips are stand-ins made from your images -- a slow zoom or a "
            "cross-fade of the length asked for -- not generated video.)"
        )
    for job_id in result.summary.failed:
        error = jobs[job_id].error or {}
        print(printable(f"Job {job_id} failed: {error.get('code')}: {error.get('message')}"))
    summary = {
        "done": len(result.summary.done),
        "failed": len(result.summary.failed),
        "objects_left_in_bucket": len(leftovers),
    }
    print("Summary:", json.dumps(summary))
    print(f"Config used: {config_path}  (try: {_command()} status --config {config_path})")
    return result.exit_code
