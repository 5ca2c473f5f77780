"""The Pixazo gateway client against real loopback HTTP servers (h11 over asyncio)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, MutableMapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from seedance_watch.errors import (
    CredentialsRefused,
    DownloadFailed,
    DownloadIncomplete,
    GatewayRejected,
    GatewayUnavailable,
    RateLimited,
    SubmitAmbiguous,
    SubmitNotSent,
    TaskNotFound,
)
from seedance_watch.providers.http import parse_retry_after
from seedance_watch.providers.pixazo import Gateway, TaskStatus

from .helpers import free_port, sha256
from .loopback import IMAGE_URL, KEY, MODEL, TEXT, FakeKey, Reply, Seen, serving

pytestmark = pytest.mark.anyio

MP4 = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40


@pytest.fixture
def debug_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every structlog event, debug included, whatever another test configured."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**saved)


# --- submit ---------------------------------------------------------------------------


async def test_submit_sends_the_exact_documented_request() -> None:
    """Submit POSTs docs/design.md, "The gateway protocol"'s path, headers and body (image_url a
    string) and returns the id."""
    async with serving(Reply.json(200, {"id": "cgt-1"})) as (server, gw):
        task_id = await gw.submit(model=MODEL, text=TEXT, image_url=IMAGE_URL)
    assert task_id == "cgt-1"
    [seen] = server.requests
    assert (seen.method, seen.target) == ("POST", "/byteplus/v1/generateImage2VideoTask")
    assert seen.headers["ocp-apim-subscription-key"] == KEY
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["cache-control"] == "no-cache"
    assert seen.json() == {
        "model": MODEL,
        "content": [
            {"type": "text", "text": TEXT},
            {"type": "image_url", "image_url": IMAGE_URL},
        ],
    }


async def test_each_submit_uses_a_fresh_connection_while_polls_reuse_one() -> None:
    """Three submits open three connections; three polls share one keep-alive connection."""

    def handler(seen: Seen) -> Reply:
        if seen.target.endswith("generateImage2VideoTask"):
            return Reply.json(200, {"id": "cgt-1"})
        return Reply.json(200, {"status": "running"})

    async with serving(handler) as (server, gw):
        for _ in range(3):
            await gw.submit(model=MODEL, text=TEXT, image_url=IMAGE_URL)
        assert server.connections == 3
        for _ in range(3):
            await gw.poll("cgt-1")
        assert server.connections == 4


async def test_submit_connection_refused_is_not_sent() -> None:
    """Nothing listening on the port: the submit provably never left (SubmitNotSent)."""
    async with Gateway(f"http://127.0.0.1:{free_port()}", FakeKey()) as gw:
        with pytest.raises(SubmitNotSent) as info:
            await gw.submit(model=MODEL, text=TEXT, image_url=IMAGE_URL)
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_submit_disconnect_after_request_is_ambiguous() -> None:
    """The server reads the submit then hangs up without answering: SubmitAmbiguous."""
    async with serving(Reply(action="close")) as (server, gw):
        with pytest.raises(SubmitAmbiguous) as info:
            await gw.submit(model=MODEL, text=TEXT, image_url=IMAGE_URL)
    assert len(server.requests) == 1
    assert info.value.code == "submit_ambiguous"
    assert "seedance-watch retry" in info.value.hint


async def test_submit_timeout_after_request_is_ambiguous() -> None:
    """The server reads the submit and never answers within request_timeout: SubmitAmbiguous."""
    async with serving(Reply(action="hang"), request_timeout=0.3) as (server, gw):
        with pytest.raises(SubmitAmbiguous) as info:
            await gw.submit(model=MODEL, text=TEXT, image_url=IMAGE_URL)
    assert len(server.requests) == 1
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


@pytest.mark.parametrize(
    "reply",
    [Reply(200, b"<html>oops</html>"), Reply.json(200, {"status": "ok"}), Reply.json(200, [1])],
    ids=["not-json", "no-id", "not-an-object"],
)
async def test_submit_success_without_a_task_id_is_ambiguous(reply: Reply) -> None:
    """A 200 that does not name a task may still have created one: SubmitAmbiguous."""
    async with serving(reply) as (_server, gw):
        with pytest.raises(SubmitAmbiguous):
            await gw.submit(model=MODEL, text=TEXT, image_url=IMAGE_URL)


# --- error mapping ----------------------------------------------------------------------

Call = Callable[[Gateway], Any]
SUBMIT: Call = lambda gw: gw.submit(model=MODEL, text=TEXT, image_url=IMAGE_URL)  # noqa: E731
POLL: Call = lambda gw: gw.poll("cgt-7")  # noqa: E731


@pytest.mark.parametrize(
    ("call", "status", "expected"),
    [
        (SUBMIT, 400, GatewayRejected),
        (POLL, 400, GatewayRejected),
        (SUBMIT, 401, CredentialsRefused),
        (SUBMIT, 402, CredentialsRefused),
        (SUBMIT, 403, CredentialsRefused),
        (POLL, 401, CredentialsRefused),
        (POLL, 402, CredentialsRefused),
        (POLL, 403, CredentialsRefused),
        (SUBMIT, 418, GatewayRejected),
        (POLL, 422, GatewayRejected),
        (SUBMIT, 500, SubmitNotSent),
        (SUBMIT, 502, SubmitAmbiguous),  # a proxy may have passed it on ("Sent at most once")
        (SUBMIT, 503, SubmitNotSent),
        (SUBMIT, 504, SubmitAmbiguous),
        (POLL, 500, GatewayUnavailable),
        (POLL, 504, GatewayUnavailable),
    ],
)
async def test_http_status_maps_to_error(
    call: Call, status: int, expected: type[Exception]
) -> None:
    """Each non-2xx answer becomes its docs/design.md, "The gateway protocol" error, with the
    status and the gateway's words."""
    body = {"error": {"code": "SomeCode", "message": f"it went wrong, key {KEY}"}}
    async with serving(Reply.json(status, body)) as (_server, gw):
        with pytest.raises(expected) as info:
            await call(gw)
    err = info.value
    assert type(err) is expected
    assert getattr(err, "http_status", None) == status
    assert "SomeCode: it went wrong" in str(err)
    assert KEY not in str(err)


@pytest.mark.parametrize(("status", "word"), [(401, "API key"), (402, "credit"), (403, "access")])
async def test_credentials_refused_says_which(status: int, word: str) -> None:
    """401/402/403 messages name the problem: key refused, no credit, no access."""
    async with serving(Reply(status, b"")) as (_server, gw):
        with pytest.raises(CredentialsRefused, match=word):
            await SUBMIT(gw)


@pytest.mark.parametrize(
    ("call", "expected"), [(SUBMIT, SubmitNotSent), (POLL, GatewayUnavailable)]
)
async def test_a_403_that_is_not_the_gateways_json_is_a_block_not_a_credentials_pause(
    call: Any, expected: type[Exception]
) -> None:
    """An HTML 403 (a proxy's or a firewall's challenge page in front of the gateway) is
    transient -- a submit provably not created, a poll to repeat -- never a credentials
    pause; it is logged once as gateway.blocked with the first bytes of the body."""
    page = b"<html><head><title>Just a moment...</title></head><body>challenge</body></html>"
    with capture_logs() as logs:
        async with serving(Reply(403, page, [("Content-Type", "text/html")])) as (_server, gw):
            for _ in range(2):
                with pytest.raises(expected) as info:
                    await call(gw)
    assert type(info.value) is expected and info.value.http_status == 403  # type: ignore[attr-defined]
    assert "Just a moment" in info.value.message  # type: ignore[attr-defined]
    blocked = [e for e in logs if e["event"] == "gateway.blocked"]
    assert len(blocked) == 1 and blocked[0]["body"].startswith("<html>")


@pytest.mark.parametrize("status", [501, 505, 507])
async def test_a_submit_answered_by_another_5xx_is_never_resent(status: int) -> None:
    """Only 429, 500 and 503 say a submit was refused; another 5xx came after the
    request arrived, so the task may exist: submit_ambiguous, never resent."""
    async with serving(Reply.json(status, {"error": "odd"})) as (server, gw):
        with pytest.raises(SubmitAmbiguous) as info:
            await SUBMIT(gw)
    assert info.value.http_status == status and len(server.requests) == 1


async def test_submit_404_names_url_and_model() -> None:
    """A 404 on submit fails the job with the URL, the model and a hint about both."""
    async with serving(Reply.json(404, {"error": "Resource not found"})) as (server, gw):
        with pytest.raises(GatewayRejected) as info:
            await SUBMIT(gw)
    err = info.value
    assert err.http_status == 404
    assert f"{server.url}/byteplus/v1/generateImage2VideoTask" in err.message
    assert MODEL in err.message
    assert "Resource not found" in err.message
    assert err.hint == "check gateway.base_url and the model name"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, {"error": {"code": "ModelNotAvailable", "message": "The model x is not available"}}),
        (404, {"error": "The model seedance-1-0-lite-i2v-250428 does not exist"}),
        (410, {"error": "Gone"}),
    ],
)
async def test_a_submit_refused_because_the_model_is_gone_hints_at_the_models_command(
    status: int, body: dict[str, Any]
) -> None:
    """A 400, 404 or 410 whose words say the model is not available fails the job as
    gateway_rejected with the hint to run `seedance-watch models`; nothing is resent."""
    async with serving(Reply.json(status, body)) as (server, gw):
        with pytest.raises(GatewayRejected) as info:
            await SUBMIT(gw)
    assert info.value.http_status == status and info.value.code == "gateway_rejected"
    assert info.value.hint is not None and "`seedance-watch models`" in info.value.hint
    assert len(server.requests) == 1


async def test_a_400_about_something_else_gets_no_models_hint() -> None:
    """An ordinary invalid parameter is not mistaken for a model that is gone."""
    body = {"error": {"code": "InvalidParameter", "message": "duration not found in range"}}
    async with serving(Reply.json(400, body)) as (_server, gw):
        with pytest.raises(GatewayRejected) as info:
            await SUBMIT(gw)
    assert info.value.hint is None or "seedance-watch models" not in info.value.hint


async def test_poll_404_is_task_not_found() -> None:
    """A 404 on poll is TaskNotFound carrying the task id."""
    async with serving(Reply.json(404, {"error": "no such task"})) as (_server, gw):
        with pytest.raises(TaskNotFound) as info:
            await POLL(gw)
    assert (info.value.task_id, info.value.http_status) == ("cgt-7", 404)


@pytest.mark.parametrize(
    ("header", "expected"),
    [([("Retry-After", "7")], 7.0), ([], None), ([("Retry-After", "soon")], None)],
    ids=["seconds", "absent", "garbage"],
)
@pytest.mark.parametrize("call", [SUBMIT, POLL], ids=["submit", "poll"])
async def test_429_is_rate_limited_with_retry_after(
    call: Call, header: list[tuple[str, str]], expected: float | None
) -> None:
    """429 becomes RateLimited with the Retry-After seconds, or None when absent/garbage."""
    async with serving(Reply(429, b"slow down", header)) as (_server, gw):
        with pytest.raises(RateLimited) as info:
            await call(gw)
    assert info.value.retry_after == expected
    assert info.value.http_status == 429


async def test_429_retry_after_http_date() -> None:
    """A Retry-After HTTP-date becomes the seconds until that moment."""
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    async with serving(Reply(429, b"", [("Retry-After", when)])) as (_server, gw):
        with pytest.raises(RateLimited) as info:
            await SUBMIT(gw)
    assert info.value.retry_after is not None
    assert 100 <= info.value.retry_after <= 120


def test_parse_retry_after() -> None:
    """Seconds and HTTP-dates parse; past dates clamp to 0; garbage and negatives are None."""
    now = datetime(2025, 9, 10, 20, 0, 0, tzinfo=UTC)
    assert parse_retry_after("30", now=now) == 30.0
    assert parse_retry_after("Wed, 10 Sep 2025 20:01:30 GMT", now=now) == 90.0
    assert parse_retry_after("Wed, 10 Sep 2025 19:00:00 GMT", now=now) == 0.0
    for bad in (None, "", "  ", "-5", "nan", "tomorrow"):
        assert parse_retry_after(bad, now=now) is None


@pytest.mark.parametrize(
    ("reply", "fragment"),
    [
        (Reply.json(400, {"error": "invalid ratio"}), "invalid ratio"),
        (Reply.json(400, {"statusCode": 400, "message": "bad body"}), "bad body"),
        (Reply(400, b"plain words"), "plain words"),
        (Reply(400, b""), "Bad Request"),
    ],
    ids=["string-error", "message", "text", "empty"],
)
async def test_error_message_extraction(reply: Reply, fragment: str) -> None:
    """The gateway's message is found in each body shape (or the reason phrase)."""
    async with serving(reply) as (_server, gw):
        with pytest.raises(GatewayRejected, match=fragment):
            await SUBMIT(gw)


async def test_error_message_is_truncated() -> None:
    """A huge error body is cut to 500 characters in the message."""
    async with serving(Reply(400, b"x" * 5000)) as (_server, gw):
        with pytest.raises(GatewayRejected) as info:
            await SUBMIT(gw)
    assert "x" * 500 in info.value.message
    assert "x" * 501 not in info.value.message


@pytest.mark.parametrize(
    "reply",
    [Reply(action="close"), Reply(action="hang"), Reply(200, b"not json")],
    ids=["disconnect", "timeout", "not-json"],
)
async def test_poll_transport_failures_are_transient(reply: Reply) -> None:
    """Any transport failure or a non-JSON 200 on poll is GatewayUnavailable (retry the poll)."""
    async with serving(reply, request_timeout=0.3) as (_server, gw):
        with pytest.raises(GatewayUnavailable) as info:
            await POLL(gw)
    assert not isinstance(info.value, SubmitNotSent)


async def test_poll_connection_refused_is_transient() -> None:
    """Nothing listening: GatewayUnavailable."""
    async with Gateway(f"http://127.0.0.1:{free_port()}", FakeKey()) as gw:
        with pytest.raises(GatewayUnavailable):
            await POLL(gw)


# --- poll answers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("queued", "pending"),
        ("running", "pending"),
        ("QUEUED", "pending"),
        ("PROCESSING", "pending"),
        ("Pending", "pending"),
        ("in_progress", "pending"),
        ("failed", "failed"),
        ("FAILED", "failed"),
        ("ERROR", "failed"),
        ("expired", "expired"),
        ("cancelled", "cancelled"),
        ("canceled", "cancelled"),
        ("CANCELLED", "cancelled"),
    ],
)
async def test_status_spellings(raw: str, state: str) -> None:
    """Every documented status spelling maps to its state, case-insensitively."""
    async with serving(Reply.json(200, {"id": "cgt-7", "status": raw})) as (server, gw):
        status = await gw.poll("cgt-7")
    assert (status.state, status.raw_status) == (state, raw)
    [seen] = server.requests
    assert seen.target == "/bytedance-polling/getVideoResult"
    assert seen.json() == {"task_id": "cgt-7"}
    assert seen.headers["ocp-apim-subscription-key"] == KEY
    assert seen.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    "body",
    [
        {"status": "succeeded", "content": {"video_url": "https://v.example/x.mp4"}},
        {"status": "COMPLETED", "output": {"media_url": "https://v.example/x.mp4"}},
        {"status": "Succeeded", "video_url": "https://v.example/x.mp4"},
    ],
    ids=["modelark", "pixazo-new", "top-level"],
)
async def test_succeeded_finds_the_video_url(body: dict[str, Any]) -> None:
    """A success yields the video URL from whichever place the dialect puts it, and the usage."""
    body = {**body, "usage": {"completion_tokens": 103818, "total_tokens": 103818}}
    async with serving(Reply.json(200, body)) as (_server, gw):
        status = await gw.poll("cgt-7")
    assert status == TaskStatus(
        state="succeeded",
        raw_status=body["status"],
        video_url="https://v.example/x.mp4",
        usage={"completion_tokens": 103818, "total_tokens": 103818},
        error_code=None,
        error_message=None,
    )


async def test_succeeded_without_video_url_is_transient() -> None:
    """A success with no URL cannot be downloaded: GatewayUnavailable, so the poll is retried."""
    async with serving(Reply.json(200, {"status": "succeeded", "content": {}})) as (_server, gw):
        with pytest.raises(GatewayUnavailable):
            await POLL(gw)


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (
            {"code": "OutputVideoSensitiveContentDetected", "message": "blocked"},
            "OutputVideoSensitiveContentDetected",
            "blocked",
        ),
        ("model crashed", None, "model crashed"),
    ],
)
async def test_failed_task_carries_the_error(error: Any, code: str | None, message: str) -> None:
    """A failed task's error object or string comes back as error_code / error_message."""
    async with serving(Reply.json(200, {"status": "failed", "error": error})) as (_server, gw):
        status = await gw.poll("cgt-7")
    assert (status.state, status.error_code, status.error_message) == ("failed", code, message)


async def test_unknown_status_is_pending_and_logged_once(
    debug_logs: list[MutableMapping[str, Any]],
) -> None:
    """An unknown status is treated as pending, with one warning per distinct value."""
    answers = iter(["warming_up", "WARMING_UP", "warming_up", "spinning"])

    def handler(_seen: Seen) -> Reply:
        return Reply.json(200, {"status": next(answers)})

    async with serving(handler) as (_server, gw):
        states = [(await gw.poll("cgt-7")).state for _ in range(4)]
    assert states == ["pending"] * 4
    warned = [e["status"] for e in debug_logs if e["event"] == "task.unknown_status"]
    assert warned == ["warming_up", "spinning"]


async def test_response_hook_and_request_log() -> None:
    """on_response hears op, status (None on a transport error), seconds; logs omit the key."""
    seen: list[tuple[str, int | None, float]] = []

    def handler(s: Seen) -> Reply:
        if s.target.endswith("generateImage2VideoTask"):
            return Reply.json(200, {"id": "cgt-1"})
        return Reply(503, b"busy")

    with capture_logs() as logs:
        async with serving(handler, on_response=lambda *a: seen.append(a)) as (_server, gw):
            await SUBMIT(gw)
            with pytest.raises(GatewayUnavailable):
                await POLL(gw)
        async with Gateway(
            f"http://127.0.0.1:{free_port()}", FakeKey(), on_response=lambda *a: seen.append(a)
        ) as gw:
            with pytest.raises(SubmitNotSent):
                await SUBMIT(gw)
    assert [(op, status) for op, status, _ in seen] == [
        ("submit", 200),
        ("poll", 503),
        ("submit", None),
    ]
    assert all(seconds >= 0 for *_, seconds in seen)
    assert KEY not in repr(logs)


# --- download ----------------------------------------------------------------------------


async def test_download_writes_the_video_and_never_sends_the_key(
    tmp_path: Path, debug_logs: list[MutableMapping[str, Any]]
) -> None:
    """A 200 mp4 lands in dest with its sha256 and size; no key header; no query in logs."""
    dest = tmp_path / ".x.mp4.part"
    async with serving(Reply(200, MP4, [("Content-Type", "video/mp4")], chunk=1000)) as (
        server,
        gw,
    ):
        got = await gw.download(
            f"{server.url}/v/x.mp4?X-Tos-Signature=s3cr3t", dest, max_bytes=10**6
        )
    assert dest.read_bytes() == MP4
    assert got.size == len(MP4)
    assert got.sha256 == sha256(MP4)
    assert dest.stat().st_mode & 0o777 == 0o644 & ~_umask()
    [seen] = server.requests
    assert seen.method == "GET"
    assert "ocp-apim-subscription-key" not in seen.headers
    assert KEY not in repr(seen.headers)
    assert any(e["event"] == "gateway.request" and e["op"] == "download" for e in debug_logs)
    assert "s3cr3t" not in repr(debug_logs)


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(
    ("reply", "max_bytes", "match"),
    [
        (Reply(200, MP4, action="truncate"), 10**6, "broke off|Content-Length"),
        (Reply(200, b"<html>not a video</html>"), 10**6, "not an mp4"),
        (Reply(200, b"\x00\x00"), 10**6, "not an mp4"),
        (Reply(200, b""), 10**6, "empty"),
        (Reply(200, MP4, chunk=512), 2000, "max_video_bytes"),
        (Reply(200, MP4), 2000, "max_video_bytes"),
        (Reply(503, b"busy"), 10**6, "503"),
        (Reply(429, b"slow", [("Retry-After", "3")]), 10**6, "429"),
    ],
    ids=["truncated", "html", "short", "empty", "too-big-chunked", "too-big-length", "503", "429"],
)
async def test_download_broken_bodies_are_incomplete(
    tmp_path: Path, reply: Reply, max_bytes: int, match: str
) -> None:
    """Truncated, non-mp4, empty, oversize or 5xx/429 bodies: DownloadIncomplete, dest removed."""
    dest = tmp_path / ".x.mp4.part"
    dest.write_bytes(b"stale")
    async with serving(reply) as (server, gw):
        with pytest.raises(DownloadIncomplete, match=match):
            await gw.download(f"{server.url}/v/x.mp4", dest, max_bytes=max_bytes)
    assert not dest.exists()


async def test_download_too_big_stops_early(tmp_path: Path) -> None:
    """Over max_bytes the download stops without writing more than the cap."""
    big = MP4 * 50
    dest = tmp_path / ".x.mp4.part"
    async with serving(Reply(200, big, chunk=256)) as (server, gw):
        with pytest.raises(DownloadIncomplete, match="max_video_bytes"):
            await gw.download(f"{server.url}/v/x.mp4", dest, max_bytes=4096)
    assert not dest.exists()


@pytest.mark.parametrize("status", [403, 404, 410])
async def test_download_gone_is_permanent(tmp_path: Path, status: int) -> None:
    """403/404/410 mean the video URL expired: DownloadFailed with the status, dest removed."""
    dest = tmp_path / ".x.mp4.part"
    async with serving(Reply(status, b"gone")) as (server, gw):
        with pytest.raises(DownloadFailed) as info:
            await gw.download(f"{server.url}/v/x.mp4?sig=s3cr3t", dest, max_bytes=10**6)
    assert info.value.http_status == status
    assert "s3cr3t" not in info.value.message
    assert not dest.exists()


async def test_download_connection_refused_is_incomplete(tmp_path: Path) -> None:
    """Nothing listening at the video host: DownloadIncomplete (try again later)."""
    async with Gateway("http://127.0.0.1:1", FakeKey()) as gw:
        with pytest.raises(DownloadIncomplete):
            await gw.download(
                f"http://127.0.0.1:{free_port()}/x.mp4", tmp_path / "x", max_bytes=10**6
            )
