"""Today's gateway answers (docs/design.md, "The two submit answers"): the async
envelope, polling URLs on our origin or elsewhere, and each kind's submit body."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from seedance_watch.errors import SubmitAmbiguous, TaskCancelled, TaskExpired, TaskFailed
from seedance_watch.providers.base import GenerationRequest, TaskRef
from seedance_watch.providers.pixazo import ENVELOPE, LEGACY

from .loopback import IMAGE_URL, KEY, MODEL, TEXT, LoopbackHTTP, Reply, Seen, serving
from .simhelpers import image_item

pytestmark = pytest.mark.anyio

RID = "byteplus_019d6f1e-2b7c-7a10-9c1e-4f6a8b2d3e55"


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
        ref = await gw.create_task(GenerationRequest("image", MODEL, TEXT), [("image", IMAGE_URL)])
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
                    GenerationRequest("image", MODEL, TEXT), [("image", IMAGE_URL)]
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
        ref = await gw.create_task(GenerationRequest("image", MODEL, TEXT), [("image", IMAGE_URL)])
        assert ref == TaskRef("cgt-1", None, LEGACY)
        assert (await gw.task_status(ref)).state == "pending"
    assert server.requests[1].method == "POST"
    assert server.requests[1].json() == {"task_id": "cgt-1"}


async def test_a_2xx_with_neither_shape_is_ambiguous_and_quotes_the_body() -> None:
    async with serving(Reply.json(202, {"accepted": True})) as (_server, gw):
        with pytest.raises(SubmitAmbiguous, match="accepted"):
            await gw.create_task(GenerationRequest("image", MODEL, TEXT), [("image", IMAGE_URL)])


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


FIRST, LAST = "https://b/first.jpg?X-Amz-Signature=1", "https://b/last.png?X-Amz-Signature=2"
REFS = [f"https://b/ref-{n}.jpg?X-Amz-Signature={n}" for n in range(1, 4)]
PROMPT = "The lighthouse beam sweeps over the waves"
OPTIONS = {"duration": "auto", "ratio": "16:9", "resolution": "720p", "generate_audio": False}
KEYS = {"duration": -1, "ratio": "16:9", "resolution": "720p", "generate_audio": False}


@pytest.mark.parametrize(
    ("kind", "model", "media", "path", "body"),
    [
        (
            "image",
            MODEL,
            [("image", FIRST)],
            "/byteplus/v1/generateImage2VideoTask",
            {
                "model": MODEL,
                "content": [
                    {"type": "text", "text": TEXT},
                    {"type": "image_url", "image_url": FIRST},
                ],
            },
        ),
        ("text", MODEL, [], "/byteplus/v1/generateVideoTask", {"model": MODEL, "text": TEXT}),
        (
            "image",
            "seedance-2-0",
            [("image", FIRST)],
            "/seedance-2-0/v1/first-last-frame-to-video",
            {"content": [{"type": "text", "text": PROMPT}, image_item(FIRST, "first_frame")]},
        ),
        (
            "frames",
            "seedance-2-0-fast",
            [("image", FIRST), ("last_frame", LAST)],
            "/seedance-2-0-fast/v1/first-last-frame-to-video-fast",
            {
                "content": [
                    {"type": "text", "text": PROMPT},
                    image_item(FIRST, "first_frame"),
                    image_item(LAST, "last_frame"),
                ]
            },
        ),
        (
            "text",
            "seedance-2-0-mini",
            [],
            "/seedance-2-0-mini/text-to-video",
            {"content": [{"type": "text", "text": PROMPT}]},
        ),
        (
            "reference",
            "seedance-2-5",
            [("reference", url) for url in REFS],
            "/seedance-2-5/v1/reference-to-video",
            {
                "content": [
                    {"type": "text", "text": PROMPT},
                    *(image_item(url, "reference_image") for url in REFS),
                ]
            },
        ),
    ],
)
async def test_each_family_and_kind_has_its_endpoint_and_exact_body(
    kind: Any, model: str, media: list[tuple[str, str]], path: str, body: dict[str, Any]
) -> None:
    """Seedance 1.0 keeps the seed's bodies byte for byte; Seedance 2 goes to its
    family's endpoint with no model key, the prompt alone, each image an object with
    its role (references in order), and the options as keys only when set."""
    seedance_2 = model.startswith("seedance-2")
    text = PROMPT if seedance_2 else TEXT
    for options in ({}, OPTIONS) if seedance_2 else ({},):
        async with serving(Reply.json(200, {"id": "cgt-9"})) as (server, gw):
            await gw.create_task(
                GenerationRequest(kind, model, text, options),
                media,
                webhook_url="https://me/hook?token=t",
            )
        (seen,) = server.requests
        assert seen.target == path
        assert seen.json() == ({**body, **KEYS} if options else body)
        assert list(seen.json()) == list({**body, **KEYS} if options else body)
    assert seen.headers["x-webhook-url"] == "https://me/hook?token=t"
