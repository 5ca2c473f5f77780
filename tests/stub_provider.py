"""A second gateway, as a plug-in: BytePlus ModelArk direct (a stub for the tests).

It shows what adding a provider takes: this one module, nothing else of the daemon.
A config names it ``gateway.provider: tests.stub_provider:PROVIDER`` (the registry's
``module:PROVIDER`` form); a built-in one would be ``providers/modelark.py``, found
by its name.  What is the gateway's own is here: its name, where its key is looked
for, its base URL and webhook path, its authentication header (``Authorization:
Bearer <key>``), its endpoints, its request body, its answers and its status words.
The money-safe HTTP rules -- a fresh connection per submit, which failures provably
did not send, 502/504 ambiguity, the key to one origin only, the one error mapping
-- are :mod:`seedance_watch.providers.http`'s, as for Pixazo.

The protocol (ModelArk's video generation API)::

    POST /api/v3/contents/generations/tasks   {"model", "content": [text, images]}
         -> {"id": "cgt-..."}
    GET  /api/v3/contents/generations/tasks/{id}
         -> {"id", "status": queued|running|succeeded|failed|expired|cancelled,
             "content": {"video_url"}, "usage", "error": {"code", "message"}}

A stub: Seedance 1.0 bodies only (the options travel as text commands in the text
item, as ``GenerationRequest.text`` holds them); no task list, no free key check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from seedance_watch import errors as E
from seedance_watch.core.models import MODELS, ModelTable
from seedance_watch.providers.base import (
    ApiKeyLike,
    GenerationRequest,
    KeySources,
    Media,
    ProviderSpec,
    TaskRef,
    TaskState,
    TaskStatus,
)
from seedance_watch.providers.http import KeyedClient, error_text, json_object, status_error

__all__ = ["NAME", "PROVIDER", "TASKS_PATH", "ModelArk"]

NAME = "modelark"
TASKS_PATH = "/api/v3/contents/generations/tasks"
#: The role of each kind of image in a request's content.
ROLES = {"image": "first_frame", "last_frame": "last_frame", "reference": "reference_image"}
#: ModelArk's status words.
STATES: dict[str, TaskState] = {
    "queued": "pending",
    "running": "pending",
    "succeeded": "succeeded",
    "failed": "failed",
    "expired": "expired",
    "cancelled": "cancelled",
}
_ENDINGS: dict[TaskState, type[E.JobError]] = {
    "failed": E.TaskFailed,
    "expired": E.TaskExpired,
    "cancelled": E.TaskCancelled,
}


class ModelArk:
    """ModelArk's task API as a :class:`~seedance_watch.providers.base.VideoProvider`."""

    name = NAME

    def __init__(
        self,
        base_url: str,
        api_key: ApiKeyLike,
        *,
        request_timeout: float = 30.0,
        max_connections: int = 20,
        on_response: Callable[[str, int | None, float], None] | None = None,
        downloader: Any = None,  # the shared downloader fetches the videos, not this
        models: ModelTable = MODELS,
    ) -> None:
        self.models = models
        self._api_key = api_key
        self._http = KeyedClient(
            base_url,
            self._headers,
            request_timeout=request_timeout,
            max_connections=max_connections,
            on_response=on_response,
        )

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key.reveal()}"}

    def _words(self, response: Any) -> str:
        key = self._api_key.reveal()
        return error_text(response, lambda text: text.replace(key, "[redacted]"))

    async def create_task(
        self, request: GenerationRequest, media: Media, *, webhook_url: str | None = None
    ) -> TaskRef:
        """One submit, never retried here."""
        content: list[dict[str, Any]] = [{"type": "text", "text": request.text}]
        content += [
            {"type": "image_url", "image_url": {"url": url}, "role": ROLES[role]}
            for role, url in media
        ]
        body: dict[str, Any] = {"model": request.model, "content": content}
        if webhook_url is not None:
            body["callback_url"] = webhook_url
        url = self._http.base_url + TASKS_PATH
        response = await self._http.send("submit", "POST", url, shown=TASKS_PATH, body=body)
        if not response.is_success:
            raise status_error("submit", response, self._words(response))
        data = json_object(response) or {}
        task_id = data.get("id")
        if not isinstance(task_id, str) or not task_id.strip():
            raise E.SubmitAmbiguous(
                f"ModelArk answered HTTP {response.status_code} to the submit without a task id",
                http_status=response.status_code,
            )
        return TaskRef(task_id.strip())

    async def task_status(self, ref: TaskRef) -> TaskStatus:
        """One poll."""
        path = f"{TASKS_PATH}/{quote(ref.task_id, safe='')}"
        response = await self._http.send(
            "poll", "GET", self._http.base_url + path, shown=TASKS_PATH + "/{id}"
        )
        if response.status_code == 404:
            raise E.TaskNotFound(
                f"ModelArk does not know task {ref.task_id} (HTTP 404): {self._words(response)}",
                task_id=ref.task_id,
                http_status=404,
            )
        if not response.is_success:
            raise status_error("poll", response, self._words(response))
        data = json_object(response)
        raw = data.get("status") if data is not None else None
        if data is None or not isinstance(raw, str):
            raise E.GatewayUnavailable(f"the poll answer for task {ref.task_id} has no status")
        state = STATES.get(raw.lower(), "pending")
        content = data.get("content")
        video_url = content.get("video_url") if isinstance(content, dict) else None
        if state == "succeeded" and not isinstance(video_url, str):
            raise E.GatewayUnavailable(f"task {ref.task_id} succeeded without a video URL")
        error = data.get("error")
        code, message = (
            (error.get("code"), error.get("message")) if isinstance(error, dict) else (None, None)
        )
        usage = data.get("usage")
        return TaskStatus(
            state=state,
            raw_status=raw,
            video_url=video_url if isinstance(video_url, str) else None,
            usage=usage if isinstance(usage, dict) else None,
            error_code=code if isinstance(code, str) else None,
            error_message=message if isinstance(message, str) else None,
            error=_ended(ref.task_id, state, code, message),
        )

    async def check_key(self) -> bool:
        """The stub claims no free call to check the key with: the first submit tells
        (a real module would GET a task id that cannot exist and read 404 as yes)."""
        return False

    async def aclose(self) -> None:
        await self._http.aclose()


def _ended(task_id: str, state: TaskState, code: object, message: object) -> E.JobError | None:
    """The job error of a task that ended badly, in the gateway's own words."""
    if state not in _ENDINGS:
        return None
    said = ": ".join(str(part) for part in (code, message) if part)
    text = f"ModelArk reports task {task_id} {state}" + (f" ({said})." if said else ".")
    return _ENDINGS[state](text, task_id=task_id)


#: ModelArk in the registry, as a plug-in: ``gateway.provider: tests.stub_provider:PROVIDER``.
PROVIDER = ProviderSpec(
    name=NAME,
    base_url="https://ark.ap-southeast.bytepluses.com",
    keys=KeySources(
        provider="BytePlus ModelArk",
        credential="ark-api-key",
        file_env="ARK_API_KEY_FILE",
        env="ARK_API_KEY",
        home=".ark/api-key",
    ),
    make=ModelArk,
    models=MODELS,
    webhook_path="/webhooks/modelark",
)
