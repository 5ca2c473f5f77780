"""Today's gateway answers (SPEC §2, "The gateway as it answers today"): the async
envelope, polling URLs on our origin or elsewhere, and each kind's submit body."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from seedance_watch.errors import SubmitAmbiguous, TaskCancelled, TaskExpired, TaskFailed
from seedance_watch.providers.base import GenerationRequest, TaskRef
from seedance_watch.providers.pixazo import ENVELOPE, LEGACY

from .loopback import IMAGE_URL, KEY, MODEL, TEXT, LoopbackHTTP, Reply, Seen, serving

pytestmark = pytest.mark.anyio

RID = "byteplus_019d6f1e-2b7c-7a10-9c1e-4f6a8b2d3e55"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def envelope(polling_url: str | None) -> Reply:
    body: dict[str, Any] = {"request_id": RID, "status": "QUEUED"}
    if polling_url is not None:
        body["polling_url"] = polling_url
    return Reply.json(200, body)


async def test_an_envelope_answer_is_a_task_polled_at_its_polling_url() -> None:
    """``{"request_id", "polling_url"}`` is a created task; it is polled with GET there."""

    def handler(seen: Seen) -> Reply:
        if seen.method == "POST":
            return envelope(f"http://127.0.0.1:{server_port[0]}/v2/requests/status/{RID}")
        return Reply.json(
            200,
            {
                "request_id": RID,
                "status": "COMPLETED",
                "output": {"media_url": ["https://v/x.mp4"]},
            },
        )

    server_port: list[int] = []
    async with serving(handler) as (server, gw):
        server_port.append(server.port)
        ref = await gw.create_task(GenerationRequest("image", MODEL, TEXT), {"image": IMAGE_URL})
        assert ref == TaskRef(RID, f"{server.url}/v2/requests/status/{RID}", ENVELOPE)
        status = await gw.task_status(ref)
    assert status.state == "succeeded" and status.video_url == "https://v/x.mp4"
    assert status.usage is None
    poll = server.requests[1]
    assert (poll.method, poll.target) == ("GET", f"/v2/requests/status/{RID}")
    assert poll.headers["ocp-apim-subscription-key"] == KEY
    assert poll.headers["cache-control"] == "no-cache"


async def test_a_foreign_polling_url_is_never_called() -> None:
    """A polling URL on another origin gets no request (the key stays home): the daemon
    polls ``{base_url}/v2/requests/status/{id}`` and says so once."""
    async with LoopbackHTTP(Reply.json(500, {})) as foreign:
        replies = [
            envelope(f"{foreign.url}/v2/requests/status/{RID}"),
            Reply.json(200, {"request_id": RID, "status": "PROCESSING"}),
            Reply.json(200, {"request_id": RID, "status": "PROCESSING"}),
        ]
        with capture_logs() as logs:
            async with serving(lambda _seen: replies.pop(0)) as (server, gw):
                ref = await gw.create_task(
                    GenerationRequest("image", MODEL, TEXT), {"image": IMAGE_URL}
                )
                assert ref.poll_url is None and ref.dialect == ENVELOPE
                await gw.task_status(ref)
                # A ledger written elsewhere may hold a foreign URL: still never called.
                await gw.task_status(TaskRef(RID, f"{foreign.url}/x", ENVELOPE))
    assert foreign.requests == []
    assert [r.target for r in server.requests[1:]] == [f"/v2/requests/status/{RID}"] * 2
    assert [e["event"] for e in logs].count("gateway.foreign_polling_url") == 1


async def test_a_legacy_answer_is_polled_the_legacy_way() -> None:
    replies = [
        Reply.json(200, {"id": "cgt-1"}),
        Reply.json(200, {"id": "cgt-1", "status": "running"}),
    ]
    async with serving(lambda _seen: replies.pop(0)) as (server, gw):
        ref = await gw.create_task(GenerationRequest("image", MODEL, TEXT), {"image": IMAGE_URL})
        assert ref == TaskRef("cgt-1", None, LEGACY)
        assert (await gw.task_status(ref)).state == "pending"
    assert server.requests[1].method == "POST"
    assert server.requests[1].json() == {"task_id": "cgt-1"}


async def test_a_2xx_with_neither_shape_is_ambiguous_and_quotes_the_body() -> None:
    async with serving(Reply.json(202, {"accepted": True})) as (_server, gw):
        with pytest.raises(SubmitAmbiguous, match="accepted"):
            await gw.create_task(GenerationRequest("image", MODEL, TEXT), {"image": IMAGE_URL})


@pytest.mark.parametrize(
    ("answer", "error", "words"),
    [
        ({"status": "FAILED", "error": "content policy"}, TaskFailed, "content policy"),
        ({"status": "ERROR", "error": {"code": "E1", "message": "boom"}}, TaskFailed, "E1: boom"),
        (
            {"status": "FAILED", "error": {"code": "TaskExpired", "message": "late"}},
            TaskExpired,
            "late",
        ),
        ({"status": "CANCELLED"}, TaskCancelled, "cancelled"),
    ],
)
async def test_envelope_failures_carry_the_gateway_words(
    answer: dict[str, Any], error: type[Exception], words: str
) -> None:
    async with serving(Reply.json(200, {"request_id": RID, **answer})) as (_server, gw):
        status = await gw.task_status(TaskRef(RID, None, ENVELOPE))
    assert isinstance(status.error, error) and words in str(status.error)
    assert status.error.task_id == RID  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kind", "media", "path", "body"),
    [
        (
            "frames",
            {"image": "https://b/first.jpg", "last_frame": "https://b/last.png"},
            "/byteplus/v1/generateFrame2VideoTask",
            {
                "model": MODEL,
                "text": TEXT,
                "first_frame": "https://b/first.jpg",
                "last_frame": "https://b/last.png",
            },
        ),
        ("text", {}, "/byteplus/v1/generateVideoTask", {"model": MODEL, "text": TEXT}),
    ],
)
async def test_each_kind_has_its_endpoint_and_exact_body(
    kind: Any, media: dict[str, str], path: str, body: dict[str, Any]
) -> None:
    async with serving(Reply.json(200, {"id": "cgt-9"})) as (server, gw):
        await gw.create_task(
            GenerationRequest(kind, MODEL, TEXT), media, webhook_url="https://me/hook?token=t"
        )
    (seen,) = server.requests
    assert seen.target == path and seen.json() == body
    assert seen.headers["x-webhook-url"] == "https://me/hook?token=t"
