"""The simulator's knobs and the records it keeps of what it was asked.

Every knob can be changed while the simulator runs (``Simulator.configure``), so
a test can, say, revoke the key half-way or switch faults off to let a run end.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "FAULT_TARGETS",
    "KNOWN_MODELS",
    "RequestRecord",
    "SimulatorConfig",
    "SubmitRecord",
]

#: The Seedance 1.0 models the gateway knows; any other name is a 404.
KNOWN_MODELS = frozenset(
    {
        "seedance-1-0-lite-i2v-250428",
        "seedance-1-0-pro-250528",
        "seedance-1-0-pro-fast-251015",
    }
)

#: Where per-request faults can be aimed (``SimulatorConfig.faults_on``).
FAULT_TARGETS = frozenset({"submit", "poll", "video"})


@dataclass(frozen=True)
class SimulatorConfig:
    """All the knobs of the simulated gateway; rates are probabilities in 0..1."""

    #: A placeholder, not a secret: the key the simulator accepts.
    api_key: str = "sim-key"
    #: Seconds from submit until a task may start running.
    queued_seconds: float = 0.2
    #: Seconds a task runs before it ends (succeeded, failed or expired).
    running_seconds: float = 1.0
    #: Tasks running at once; ``None`` means unlimited.
    max_concurrent: int | None = None
    #: ``queue``: tasks beyond the limit wait queued (ModelArk); ``reject``: submit gets 429.
    concurrency_mode: Literal["queue", "reject"] = "queue"
    #: Submits per minute (a token bucket of that size); ``None`` means unlimited.
    rate_limit_per_minute: int | None = None
    #: ``modelark``: lower-case statuses, ``content.video_url``;
    #: ``pixazo``: ``QUEUED``/``PROCESSING``/``COMPLETED``/``FAILED``, ``output.media_url``.
    status_style: Literal["modelark", "pixazo"] = "modelark"
    video_seconds: float = 1.0
    video_fps: int = 8
    video_max_side: int = 256
    #: Seconds after a task ends during which its video can be downloaded (then 403).
    video_ttl_seconds: float = 86400
    #: Seed of the fault dice, so a faulty run can be replayed.
    seed: int = 0
    error_5xx_rate: float = 0.0
    drop_connection_rate: float = 0.0
    slow_reply_rate: float = 0.0
    slow_reply_seconds: float = 5.0
    submit_accept_then_drop_rate: float = 0.0
    fail_task_rate: float = 0.0
    expire_task_rate: float = 0.0
    truncate_video_rate: float = 0.0
    rate_429: float = 0.0
    #: Which endpoints the per-request faults hit: any of ``submit``, ``poll``, ``video``.
    faults_on: frozenset[str] = field(default_factory=lambda: FAULT_TARGETS)
    #: Which endpoints dropped connections hit, when not ``faults_on`` (a dropped submit
    #: is ambiguous by design, so a "every job finishes" run drops only polls and videos).
    drop_on: frozenset[str] | None = None
    #: The ``Retry-After`` header of injected 429s: seconds, or an HTTP date.
    retry_after: str = "1"
    #: Answer every authenticated call with 402 (no credit left).
    credit_exhausted: bool = False
    #: Answer every authenticated call with 403 (the key has no access to this API).
    access_denied: bool = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name.endswith("_rate") or f.name == "rate_429":
                value = getattr(self, f.name)
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"{f.name} must be between 0 and 1, not {value!r}")
        if not set(self.faults_on) <= FAULT_TARGETS:
            unknown = sorted(set(self.faults_on) - FAULT_TARGETS)
            raise ValueError(f"faults_on: unknown targets {unknown}; allowed: submit, poll, video")
        object.__setattr__(self, "faults_on", frozenset(self.faults_on))
        if self.drop_on is not None:
            if not set(self.drop_on) <= FAULT_TARGETS:
                unknown = sorted(set(self.drop_on) - FAULT_TARGETS)
                raise ValueError(
                    f"drop_on: unknown targets {unknown}; allowed: submit, poll, video"
                )
            object.__setattr__(self, "drop_on", frozenset(self.drop_on))
        if self.concurrency_mode not in ("queue", "reject"):
            raise ValueError(
                f"concurrency_mode must be queue or reject, not {self.concurrency_mode!r}"
            )
        if self.status_style not in ("modelark", "pixazo"):
            raise ValueError(f"status_style must be modelark or pixazo, not {self.status_style!r}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1 (or None)")
        if self.rate_limit_per_minute is not None and self.rate_limit_per_minute < 1:
            raise ValueError("rate_limit_per_minute must be at least 1 (or None)")
        if self.video_max_side < 16 or self.video_fps < 1 or self.video_seconds <= 0:
            raise ValueError("video_max_side >= 16, video_fps >= 1 and video_seconds > 0 required")

    def replace(self, **changes: Any) -> SimulatorConfig:
        """A copy with ``changes`` applied; an unknown knob is a ``TypeError``."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"unknown simulator knob(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class SubmitRecord:
    """One submit that created a task (including those answered by a dropped connection)."""

    task_id: str
    model: str
    text: str
    image_url: str
    image_sha256: str
    #: Request headers, names in lower case.
    headers: dict[str, str]
    #: The parsed JSON body.
    body: Any
    #: Wall-clock time (epoch seconds).
    at: float


@dataclass(frozen=True)
class RequestRecord:
    """One HTTP request; ``status`` is ``None`` when the connection was dropped instead."""

    method: str
    path: str
    status: int | None
    at: float
