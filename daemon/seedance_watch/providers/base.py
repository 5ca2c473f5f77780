"""The seam between the pipeline and a video gateway: :class:`VideoProvider`.

A provider turns a generation request and the URLs of its media into a task at
the gateway (:meth:`VideoProvider.create_task` → :class:`TaskRef`), and a task
reference into its current status (:meth:`VideoProvider.task_status` →
:class:`TaskStatus`).  It maps its own wire errors into the tree of
:mod:`seedance_watch.errors` and its own status words into :data:`TaskState`,
and builds the job error of a task that ended badly, so the pipeline holds no
gateway rule.  Downloading the video is shared by every provider
(:mod:`seedance_watch.providers.download`).

Adding a gateway is one module beside ``pixazo.py`` implementing this protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from seedance_watch.core.models import Kind
from seedance_watch.errors import JobError

__all__ = [
    "GenerationRequest",
    "Media",
    "TaskRef",
    "TaskState",
    "TaskStatus",
    "VideoProvider",
]

TaskState = Literal["pending", "succeeded", "failed", "expired", "cancelled"]


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate: the kind of drop, the model, the exact text and the options.

    ``text`` is what the text item carries (a Seedance 1.0 prompt with its text
    commands; a Seedance 2 prompt alone); ``options`` the effective options, which a
    Seedance 2 body sends as keys.
    """

    kind: Kind
    model: str
    text: str
    options: Mapping[str, Any] = field(default_factory=dict)


#: The images of a request in order: ``(role, url)`` with role ``image`` (the first
#: frame), ``last_frame`` or ``reference`` (repeated, in the sidecar's order).
Media = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class TaskRef:
    """A created task: its id, where to poll it (when the gateway said) and the dialect.

    Recorded durably before anything else happens (every created task is billed).
    """

    task_id: str
    poll_url: str | None = None
    dialect: str | None = None


@dataclass(frozen=True)
class TaskStatus:
    """One poll answer, normalised.  ``error`` is set for failed/expired/cancelled tasks."""

    state: TaskState
    raw_status: str
    video_url: str | None
    usage: dict[str, Any] | None
    error_code: str | None = None
    error_message: str | None = None
    error: JobError | None = None


class VideoProvider(Protocol):
    """A gateway that makes videos from requests (SPEC §2)."""

    name: str

    async def create_task(
        self,
        request: GenerationRequest,
        media: Media,
        *,
        webhook_url: str | None = None,
    ) -> TaskRef:
        """Submit once (never retried here).  ``media``: the images' URLs, in order.

        Raises SubmitNotSent (provably not sent), SubmitAmbiguous (never resend),
        RateLimited, GatewayRejected or CredentialsRefused.
        """
        ...

    async def task_status(self, ref: TaskRef) -> TaskStatus:
        """Poll once.  Raises GatewayUnavailable, RateLimited, TaskNotFound,
        GatewayRejected or CredentialsRefused."""
        ...

    async def aclose(self) -> None: ...
