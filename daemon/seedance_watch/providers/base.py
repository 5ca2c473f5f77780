"""The seam between the pipeline and a video gateway: :class:`VideoProvider`.

A provider turns a generation request and the URLs of its media into a task at
the gateway (:meth:`VideoProvider.create_task` → :class:`TaskRef`), and a task
reference into its current status (:meth:`VideoProvider.task_status` →
:class:`TaskStatus`).  It maps its own wire errors into the tree of
:mod:`seedance_watch.errors` and its own status words into :data:`TaskState`,
and builds the job error of a task that ended badly, so the pipeline holds no
gateway rule.  Downloading the video is shared by every provider
(:mod:`seedance_watch.providers.download`).

Adding a gateway is one module beside ``pixazo.py``: a class implementing
:class:`VideoProvider` and a module-level ``PROVIDER`` (:class:`ProviderSpec`) that
says what is the gateway's own -- its name, where its key is looked for, its base
URL, its model table, its webhook path -- and how to build its client.  The
registry (:mod:`.registry`) finds it by ``gateway.provider``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from seedance_watch.core.models import MODELS, Kind, ModelTable
from seedance_watch.errors import JobError

__all__ = [
    "ApiKeyLike",
    "GenerationRequest",
    "KeySources",
    "Media",
    "ProviderFactory",
    "ProviderSpec",
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
    """A gateway that makes videos from requests (docs/design.md, "The gateway protocol").

    ``name`` is its registry name (recorded on each job it creates a task for);
    ``models`` the model table it serves.
    """

    name: str
    models: ModelTable

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

    async def check_key(self) -> bool:
        """Ask the gateway, with a call that costs nothing, whether it accepts the key.

        True: accepted.  False: this gateway offers no free call to check it with (only
        a paid submit would tell).  Raises CredentialsRefused or GatewayUnavailable.
        """
        ...

    async def aclose(self) -> None: ...


class ApiKeyLike(Protocol):
    """A secret that shows its value only when asked (:class:`.keys.ApiKey`)."""

    @property
    def source(self) -> str: ...

    def reveal(self) -> str: ...


@dataclass(frozen=True)
class KeySources:
    """Where a provider's API key is looked for, in order (:func:`.keys.load_api_key`)."""

    #: The provider, as people know it (``Pixazo``): in the message when none is found.
    provider: str
    #: ``$CREDENTIALS_DIRECTORY/<credential>`` (systemd ``LoadCredential=``).
    credential: str
    #: The variable naming a file that holds the key (Docker secrets).
    file_env: str
    #: The variable holding the key itself.
    env: str
    #: The key file under the user's home, relative to it (``.pixazo/api-key``).
    home: str

    @property
    def variables(self) -> tuple[str, ...]:
        """The environment variables that lead to the key (kept from hooks)."""
        return ("CREDENTIALS_DIRECTORY", self.file_env, self.env)


class ProviderFactory(Protocol):
    """Builds a provider's client for ``base_url`` with ``api_key``."""

    def __call__(
        self,
        base_url: str,
        api_key: ApiKeyLike,
        *,
        request_timeout: float,
        max_connections: int,
        on_response: Callable[[str, int | None, float], None] | None,
        downloader: Any,
    ) -> VideoProvider: ...


def _query_token(query: Mapping[str, str]) -> str | None:
    return query.get("token") or None


@dataclass(frozen=True)
class ProviderSpec:
    """What is one gateway's own: the registry's entry for ``gateway.provider``."""

    name: str
    #: ``gateway.base_url`` when the config names none.
    base_url: str
    keys: KeySources
    make: ProviderFactory
    models: ModelTable = field(default_factory=lambda: MODELS)
    #: Where the gateway's callbacks arrive on ``health.listen`` (open, token-checked).
    webhook_path: str = ""
    #: The per-job token of a callback, from its query (never from its body).
    callback_token: Callable[[Mapping[str, str]], str | None] = _query_token

    def __post_init__(self) -> None:
        if not self.webhook_path:
            object.__setattr__(self, "webhook_path", f"/webhooks/{self.name}")
