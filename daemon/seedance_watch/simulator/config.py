"""The simulator's knobs and the records it keeps of what it was asked.

Every knob can be changed while the simulator runs (``Simulator.configure``), so
a test can, say, revoke the key half-way or switch faults off to let a run end.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

# The models the gateway serves, and where, are the daemon's own table
# (core/models.py): one table, so the simulator cannot drift from what the daemon
# believes; a test may hand the simulator another (``SimulatorConfig.models``).
from seedance_watch.core.models import MODELS, Kind, ModelTable
from seedance_watch.simulator.submits import submit_endpoints

__all__ = [
    "AUTO_SECONDS_RANGE",
    "FAULT_TARGETS",
    "Dialect",
    "Kind",
    "RequestRecord",
    "SimulatorConfig",
    "SubmitRecord",
    "WebhookRecord",
]

#: How a submit is answered: ``{"id"}`` (polled by POST) or the envelope (polled by GET).
Dialect = Literal["id", "envelope"]

#: Statuses that a proxy in front of the gateway answers after passing the submit on:
#: the task exists (and is billed), only the answer is lost.
PROXY_STATUSES = frozenset({502, 504})

#: Where per-request faults can be aimed (``SimulatorConfig.faults_on``).
FAULT_TARGETS = frozenset({"submit", "poll", "video"})

#: The lengths (seconds) a Seedance 2 model may pick when asked for ``duration: -1``.
AUTO_SECONDS_RANGE = range(4, 16)


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
    #: The models the gateway serves (their families, kinds, options and endpoints).
    models: ModelTable = field(default_factory=lambda: MODELS)
    #: Every clip's length in seconds, overriding what the task asked for (tests use a
    #: fraction of a second for speed); ``None``: the requested duration (Seedance 2
    #: ``duration``, the 1.0 ``--duration`` command, 5 s when none was sent).
    video_seconds: float | None = None
    #: The length a Seedance 2 model "picks" when asked for ``duration: -1`` (auto).
    auto_seconds: int = 6
    video_fps: int = 8
    video_max_side: int = 256
    #: Seconds after a task ends during which its video can be downloaded (then 403).
    video_ttl_seconds: float = 86400
    #: Seed of the fault dice, so a faulty run can be replayed.
    seed: int = 0
    #: Requests answered 500/502/503 before the gateway saw them (nothing is created);
    #: submits only 500/503 (a 502/504 is a proxy that may have passed it on).
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
    #: How submits are answered: ``id`` (``{"id": "cgt-..."}``, polled with
    #: ``POST /bytedance-polling/getVideoResult``) or ``envelope`` (``{"request_id",
    #: "status", "polling_url"}``, polled with ``GET /v2/requests/status/{request_id}``).
    submit_answer: Dialect = "id"
    #: The origin written into an envelope's ``polling_url``; ``None``: the simulator's own.
    polling_origin: str | None = None
    #: The v2 status answer's ``output.media_url``: a string, a one-element list, or
    #: alternating between them task by task (in submit order).
    media_url_style: Literal["string", "list", "alternate"] = "string"
    #: The v2 status answer's ``error``: ``{"code", "message"}``, a string
    #: (``"TaskExpired: ..."``), or alternating task by task.
    error_style: Literal["object", "string", "alternate"] = "object"
    #: Tasks that end ``cancelled`` (v2: ``CANCELLED``) instead of running to success.
    cancel_task_rate: float = 0.0
    #: Submits answered with one of ``submit_status_codes`` (drawn at random).  A 502 or
    #: 504 comes after the task was created, as a proxy that lost the answer: the task
    #: exists, runs and is billed, its ``SubmitRecord.answer_status`` says what was sent.
    #: Any other status is answered before anything was created.
    submit_status_rate: float = 0.0
    submit_status_codes: tuple[int, ...] = (502, 504)
    #: Seconds the simulator waits for a webhook receiver to answer.
    webhook_timeout: float = 5.0

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
        if self.submit_answer not in ("id", "envelope"):
            raise ValueError(f"submit_answer must be id or envelope, not {self.submit_answer!r}")
        if self.media_url_style not in ("string", "list", "alternate"):
            raise ValueError(
                f"media_url_style must be string, list or alternate, not {self.media_url_style!r}"
            )
        if self.error_style not in ("object", "string", "alternate"):
            raise ValueError(
                f"error_style must be object, string or alternate, not {self.error_style!r}"
            )
        if self.polling_origin is not None:
            origin = self.polling_origin
            if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
                raise ValueError(
                    f"polling_origin must be scheme://host[:port] with no path, not {origin!r}"
                )
        codes = tuple(self.submit_status_codes)
        if not codes or any(not isinstance(c, int) or not 400 <= c <= 599 for c in codes):
            raise ValueError(
                f"submit_status_codes must be HTTP error statuses (400..599), not {codes!r}"
            )
        object.__setattr__(self, "submit_status_codes", codes)
        if self.webhook_timeout <= 0:
            raise ValueError("webhook_timeout must be positive")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1 (or None)")
        if self.rate_limit_per_minute is not None and self.rate_limit_per_minute < 1:
            raise ValueError("rate_limit_per_minute must be at least 1 (or None)")
        if self.video_max_side < 16 or self.video_fps < 1:
            raise ValueError("video_max_side >= 16 and video_fps >= 1 required")
        if self.video_seconds is not None and not self.video_seconds > 0:
            raise ValueError(
                f"video_seconds must be positive (or None), not {self.video_seconds!r}"
            )
        auto = self.auto_seconds
        if type(auto) is not int or auto not in AUTO_SECONDS_RANGE:
            low, high = AUTO_SECONDS_RANGE[0], AUTO_SECONDS_RANGE[-1]
            raise ValueError(f"auto_seconds must be an integer from {low} to {high}, not {auto!r}")
        if not isinstance(self.models, ModelTable):
            raise ValueError(f"models must be a ModelTable, not {type(self.models).__name__}")
        try:
            submit_endpoints(self.models)
        except ValueError as exc:
            raise ValueError(f"models: {exc}") from exc

    def replace(self, **changes: Any) -> SimulatorConfig:
        """A copy with ``changes`` applied; an unknown knob is a ``TypeError``."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"unknown simulator knob(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class SubmitRecord:
    """One submit that created a task (including those whose answer was lost).

    ``fetched_urls``/``fetched_sha256s``/``roles`` list every image the gateway
    fetched for the submit, in body order; ``image_url``/``image_sha256`` are the
    first of them (the image, or the first frame, or the first reference), empty for
    text.
    """

    #: The task's id: ``cgt-...`` (id dialect) or the envelope's ``request_id``.
    task_id: str
    #: The model: the body's ``model`` (Seedance 1.0), the endpoint's (Seedance 2).
    model: str
    #: What the text item (or ``text`` key) held: the prompt with its commands (1.0),
    #: the prompt alone (Seedance 2).
    text: str
    image_url: str
    image_sha256: str
    #: Request headers, names in lower case.
    headers: dict[str, str]
    #: The parsed JSON body.
    body: Any
    #: Wall-clock time (epoch seconds).
    at: float
    #: The request path, e.g. ``/seedance-2-0-fast/v1/first-last-frame-to-video-fast``.
    endpoint: str = ""
    #: ``image``, ``frames`` (a first and a last frame), ``text`` or ``reference``.
    kind: Kind = "image"
    #: The request dialect: ``1.0`` (text commands, ``model`` in the body) or ``2``.
    family: str = "1.0"
    #: The ``X-Webhook-URL`` header, if the submit carried one.
    webhook_url: str | None = None
    fetched_urls: tuple[str, ...] = ()
    fetched_sha256s: tuple[str, ...] = ()
    #: The role of each fetched image, in the same order: Seedance 2's ``role``
    #: (``first_frame``, ``last_frame``, ``reference_image``), or the 1.0 body key
    #: that held it (``image_url``).
    roles: tuple[str, ...] = ()
    #: The dialect the submit was answered in (Seedance 2: always ``envelope``).
    dialect: Dialect = "id"
    #: The polling URL the envelope named (``None`` in the id dialect).
    polling_url: str | None = None
    #: What the client was sent: 200, a proxy's 502/504, or ``None`` (connection dropped).
    answer_status: int | None = 200
    #: The 200 answer's JSON (``{"id"}`` or the envelope), even when it was not delivered.
    answer: dict[str, Any] = field(default_factory=dict)
    #: The generation parameters the gateway used (Seedance 2: its defaults filled in;
    #: 1.0: the text commands, invalid values replaced); ``duration`` is the length
    #: the model made (for ``duration: -1``, the one it picked).
    params: dict[str, str | int | bool] = field(default_factory=dict)
    #: The length of the mp4 served for the task, in seconds (``params["duration"]``
    #: unless ``SimulatorConfig.video_seconds`` overrides it).
    video_seconds: float = 0.0


@dataclass(frozen=True)
class WebhookRecord:
    """One callback the simulator sent (or tried to send) when a task ended."""

    task_id: str
    url: str
    #: The JSON body sent: the v2 status answer of the ended task.
    body: Any
    #: The receiver's HTTP status; ``None`` when nothing was answered.
    status: int | None
    #: Why delivery failed (a connection error, a timeout), ``None`` when it was answered.
    error: str | None
    #: Wall-clock time (epoch seconds) of the attempt.
    at: float


@dataclass(frozen=True)
class RequestRecord:
    """One HTTP request; ``status`` is ``None`` when the connection was dropped instead."""

    method: str
    path: str
    status: int | None
    at: float
