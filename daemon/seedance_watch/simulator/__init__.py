"""A faithful local Pixazo (Seedance 1.0) gateway: for tests, benchmarks and the demo.

It checks the key and the exact request shape of the three submit endpoints
(image, first and last frame, text), fetches the images from the URLs it was
given, answers in either dialect (``{"id"}`` or the envelope with
``polling_url``), walks each task ``queued`` -> ``running`` -> ``succeeded`` on
a schedule, serves a real H.264 mp4 made from the inputs, sends webhooks when a
submit asks for them, and injects faults on demand.  It records every submit
and every webhook, so a test can count duplicate submissions.

    with Simulator(SimulatorConfig(queued_seconds=0.05)) as sim:
        ... point the daemon at sim.base_url with key "sim-key" ...
        assert len(sim.submits) == 1
"""

from __future__ import annotations

from seedance_watch.simulator.cli import main
from seedance_watch.simulator.config import (
    KNOWN_MODELS,
    MODEL_KINDS,
    RequestRecord,
    SimulatorConfig,
    SubmitRecord,
    WebhookRecord,
)
from seedance_watch.simulator.server import Simulator, serve

__all__ = [
    "KNOWN_MODELS",
    "MODEL_KINDS",
    "RequestRecord",
    "Simulator",
    "SimulatorConfig",
    "SubmitRecord",
    "WebhookRecord",
    "main",
    "serve",
]
