"""A faithful local Pixazo gateway, as it answers today: for tests, benchmarks and the demo.

It serves the models of the daemon's own table (``core/models.py``): Seedance
1.0 Pro at the seed's two endpoints (image, text; a retired model is refused as
not available, ``generateFrame2VideoTask`` is gone), and each Seedance 2 model
at its own endpoints (first and last frame, text, reference images), with every
body checked key by key and role by role.  It fetches the images from the URLs
it was given, answers in either dialect (``{"id"}`` or the envelope with
``polling_url``; Seedance 2 always the envelope), walks each task ``queued`` ->
``running`` -> ``succeeded`` on a schedule, serves a real H.264 mp4 made from the
inputs and as long as the task asked, sends webhooks when a submit asks for them,
and injects faults on demand.  It records every submit and every webhook, so a
test can count duplicate submissions.

    with Simulator(SimulatorConfig(queued_seconds=0.05)) as sim:
        ... point the daemon at sim.base_url with key "sim-key" ...
        assert len(sim.submits) == 1
"""

from __future__ import annotations

from seedance_watch.simulator.cli import main
from seedance_watch.simulator.config import (
    RequestRecord,
    SimulatorConfig,
    SubmitRecord,
    WebhookRecord,
)
from seedance_watch.simulator.server import Simulator, serve

__all__ = [
    "RequestRecord",
    "Simulator",
    "SimulatorConfig",
    "SubmitRecord",
    "WebhookRecord",
    "main",
    "serve",
]
