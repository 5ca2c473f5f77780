"""A faithful local Pixazo (Seedance 1.0) gateway: for tests, benchmarks and the demo.

It checks the key and the exact request shape, fetches the image from the URL
it was given, walks each task ``queued`` -> ``running`` -> ``succeeded`` on a
schedule, serves a real H.264 mp4 made from the image, and injects faults on
demand.  It records every submit, so a test can count duplicate submissions.

    with Simulator(SimulatorConfig(queued_seconds=0.05)) as sim:
        ... point the daemon at sim.base_url with key "sim-key" ...
        assert len(sim.submits) == 1
"""

from __future__ import annotations

from seedance_watch.simulator.cli import main
from seedance_watch.simulator.config import (
    KNOWN_MODELS,
    RequestRecord,
    SimulatorConfig,
    SubmitRecord,
)
from seedance_watch.simulator.server import Simulator, serve

__all__ = [
    "KNOWN_MODELS",
    "RequestRecord",
    "Simulator",
    "SimulatorConfig",
    "SubmitRecord",
    "main",
    "serve",
]
