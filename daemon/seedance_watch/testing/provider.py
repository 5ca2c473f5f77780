"""A video provider in memory for tests: :class:`FakeProvider`.

It is a :class:`~seedance_watch.providers.base.VideoProvider` that answers from a
script and records every call, so a test of the engine, a stage or a command can
run without a gateway: ``submits`` and ``statuses`` hold the answers to give, in
order (a :class:`TaskRef` or :class:`TaskStatus`, or an exception from
:mod:`seedance_watch.errors` to raise), and ``created`` and ``polled`` what it was
asked.  Each call takes exactly one answer: like every provider, it never retries
a submit by itself (docs/design.md, "The gateway protocol").

It passes the same contract suite as the real providers
(``tests/test_provider_contract.py``), so what a test learns from it holds for them.
:func:`task_pending`, :func:`task_succeeded` and :func:`task_ended` build the poll
answers a gateway gives.

Public like structlog's ``testing`` module: for this project's tests and for anyone
testing code built on the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from seedance_watch import errors as E
from seedance_watch.core.models import MODELS, ModelTable
from seedance_watch.providers.base import (
    GenerationRequest,
    Media,
    TaskRef,
    TaskState,
    TaskStatus,
)

__all__ = ["CreatedTask", "FakeProvider", "task_ended", "task_pending", "task_succeeded"]

_T = TypeVar("_T")

#: The job error of each way a task can end badly.
_ENDINGS: dict[TaskState, type[E.JobError]] = {
    "failed": E.TaskFailed,
    "expired": E.TaskExpired,
    "cancelled": E.TaskCancelled,
}


@dataclass(frozen=True)
class CreatedTask:
    """One call of :meth:`FakeProvider.create_task`: what it was asked."""

    request: GenerationRequest
    #: The images' ``(role, url)`` in the order given.
    media: tuple[tuple[str, str], ...]
    webhook_url: str | None


@dataclass(slots=True)
class FakeProvider:
    """A provider that answers from a script and records every call.

    ``submits``: the answers of the next ``create_task`` calls, in order (a
    :class:`TaskRef`, or an exception to raise); once it is empty, each call creates
    a task ``t-<n>`` (``n``: the calls so far).  ``statuses``: the answers of the next
    ``task_status`` calls; a poll with none left raises :class:`LookupError` (a test
    that did not say what the gateway answers).  A call is recorded before it is
    answered, so a submit that raised still shows in ``created``.  ``key_checks``:
    the answers of the next free key checks (True, False, or an exception); with none
    left it answers False, like a gateway without a free call (only a submit tells).
    """

    name: str = "fake"
    models: ModelTable = field(default_factory=lambda: MODELS)
    submits: list[TaskRef | BaseException] = field(default_factory=list)
    statuses: list[TaskStatus | BaseException] = field(default_factory=list)
    created: list[CreatedTask] = field(default_factory=list)
    polled: list[TaskRef] = field(default_factory=list)
    key_checks: list[bool | BaseException] = field(default_factory=list)
    closed: bool = False

    async def create_task(
        self,
        request: GenerationRequest,
        media: Media,
        *,
        webhook_url: str | None = None,
    ) -> TaskRef:
        self.created.append(CreatedTask(request, tuple(media), webhook_url))
        if not self.submits:
            return TaskRef(f"t-{len(self.created)}")
        return _given(self.submits.pop(0))

    async def task_status(self, ref: TaskRef) -> TaskStatus:
        self.polled.append(ref)
        if not self.statuses:
            raise LookupError(f"FakeProvider: no status scripted for task {ref.task_id}")
        return _given(self.statuses.pop(0))

    async def check_key(self) -> bool:
        if not self.key_checks:
            return False
        return _given(self.key_checks.pop(0))

    async def aclose(self) -> None:
        self.closed = True


def _given(answer: _T | BaseException) -> _T:
    if isinstance(answer, BaseException):
        raise answer
    return answer


def task_pending(raw_status: str = "running") -> TaskStatus:
    """A poll answer: the task is queued or running."""
    return TaskStatus("pending", raw_status, None, None)


def task_succeeded(
    video_url: str, usage: dict[str, Any] | None = None, raw_status: str = "succeeded"
) -> TaskStatus:
    """A poll answer: the video is ready at ``video_url``."""
    return TaskStatus("succeeded", raw_status, video_url, usage)


def task_ended(
    task_id: str, state: TaskState, code: str | None = None, message: str | None = None
) -> TaskStatus:
    """A poll answer: the task ``failed``, ``expired`` or was ``cancelled``, with the
    job error a provider builds from the gateway's ``code`` and ``message``."""
    said = ": ".join(p for p in (code, message) if p)
    error = _ENDINGS[state](
        f"Task {task_id} {state}" + (f" ({said})." if said else "."), task_id=task_id
    )
    return TaskStatus(state, state, None, None, code, message, error)
