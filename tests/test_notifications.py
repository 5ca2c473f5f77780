"""Notifications through Apprise to a real JSON receiver on loopback (docs/design.md, "Hooks and
notifications")."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from seedance_watch.config import NotifyConfig, load_config
from seedance_watch.errors import ConfigError
from seedance_watch.pipeline.ports import JobEnd
from seedance_watch.service.notify import Notifications

from .helpers import Receiver

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def notifications(urls: list[str], events: list[str] | None = None, **kw: Any) -> Notifications:
    config = NotifyConfig(urls=urls, **({"events": events} if events is not None else {}))
    return Notifications(config, backoff=0.05, **kw)


def drain(n: Notifications, timeout: float = 20) -> bool:
    return asyncio.run(n.drain(timeout))


def done_end() -> JobEnd:
    return JobEnd(
        "done",
        "job-1",
        "holiday/beach.jpg",
        Path("/srv/outbox/holiday/beach.json"),
        output=Path("/srv/outbox/holiday/beach.mp4"),
    )


def failed_end() -> JobEnd:
    return JobEnd(
        "failed",
        "job-2",
        "holiday/cat.png",
        Path("/srv/failed/holiday/cat.error.json"),
        code="invalid_sidecar",
        message="duration must be 5 or 10",
        hint="Fix the sidecar YAML, then move the pair back into the inbox.",
    )


def test_done_job_sends_one_message_saying_where_the_video_is(receiver: Receiver) -> None:
    """One ended job is one message: which file, where the video and its details are."""
    n = notifications([receiver.json_url])
    try:
        n.job_ended(done_end())
        assert drain(n)
    finally:
        n.close()
    (post,) = receiver.posts
    assert post["title"] == "Video ready: holiday/beach.jpg"
    assert post["type"] == "success"
    assert "/srv/outbox/holiday/beach.mp4" in post["message"]
    assert "/srv/outbox/holiday/beach.json" in post["message"]


def test_failed_job_message_says_why_and_what_to_do(receiver: Receiver) -> None:
    """A failure names the file, the code, the reason, the hint and the retry command."""
    n = notifications([receiver.json_url])
    try:
        n.job_ended(failed_end())
        assert drain(n)
    finally:
        n.close()
    (post,) = receiver.posts
    assert post["title"] == "Video failed: holiday/cat.png"
    assert post["type"] == "failure"
    body = post["message"]
    for text in (
        "invalid_sidecar",
        "duration must be 5 or 10",
        "What to do: Fix the sidecar YAML",
        "/srv/failed/holiday/cat.error.json",
        "seedance-watch retry job-2",
    ):
        assert text in body


def test_pause_and_resume_messages_follow_notify_events(receiver: Receiver) -> None:
    """A budget pause says when it lifts (local time); 'resumed' is sent only when asked for."""
    lifts = 1796166000.0  # 2026-12-02 00:00 in Paris
    n = Notifications(NotifyConfig(urls=[receiver.json_url]), timezone="Europe/Paris", backoff=0.05)
    try:
        n.pause_started("budget", "today's spend is 0.54 USD of 0.60", lifts)
        n.pause_ended("budget")  # not in the default events
        assert drain(n)
    finally:
        n.close()
    (post,) = receiver.posts
    assert post["title"] == "seedance-watch paused: budget"
    assert post["type"] == "warning"
    assert "Submits resume at 2026-12-02 00:00 Europe/Paris." in post["message"]
    assert "max_cost_per_day" in post["message"]

    n = notifications([receiver.json_url], events=["resumed"])
    try:
        n.pause_started("credentials", "401 from the gateway")
        n.job_ended(done_end())
        n.pause_ended("credentials")
        assert drain(n)
    finally:
        n.close()
    assert [p["title"] for p in receiver.posts[1:]] == ["seedance-watch resumed: credentials"]


def test_every_url_gets_the_message_once(receiver: Receiver) -> None:
    """Two URLs: each is sent each message once, in the order they were queued."""
    other = Receiver()
    n = notifications([receiver.json_url, other.json_url])
    try:
        n.job_ended(done_end())
        n.job_ended(failed_end())
        assert drain(n)
    finally:
        n.close()
        other.close()
    for r in (receiver, other):
        assert [p["title"] for p in r.posts] == [
            "Video ready: holiday/beach.jpg",
            "Video failed: holiday/cat.png",
        ]


def test_failing_receiver_is_retried_until_it_accepts(receiver: Receiver) -> None:
    """Two 500s then a 200: three attempts, one delivery, nothing logged as failed."""
    receiver.plan = [500, 500]
    n = notifications([receiver.json_url], attempts=4)
    try:
        with capture_logs() as logs:
            n.job_ended(done_end())
            assert drain(n)
    finally:
        n.close()
    assert len(receiver.posts) == 3
    assert all(p["title"] == "Video ready: holiday/beach.jpg" for p in receiver.posts)
    assert not [e for e in logs if e["event"] == "notify.failed"]


def test_receiver_that_keeps_failing_is_given_up_and_logged(receiver: Receiver) -> None:
    """Always 500: a few attempts, then notify.failed (the URL's secrets hidden); never raises."""
    receiver.plan = [500] * 10
    secret_url = receiver.json_url.replace("json://", "json://user:hunter2@")
    n = notifications([secret_url], attempts=3)
    try:
        with capture_logs() as logs:
            n.job_ended(failed_end())
            assert drain(n)
    finally:
        n.close()
    assert len(receiver.posts) == 3
    (failed,) = [e for e in logs if e["event"] == "notify.failed"]
    assert failed["attempts"] == 3 and failed["notification"] == "failed"
    assert failed["title"] == "Video failed: holiday/cat.png"
    assert "hunter2" not in json.dumps(failed, default=str)


def test_unreachable_receiver_does_not_raise_or_block() -> None:
    """Nothing listens: the call returns at once, the worker gives up and logs."""
    n = notifications(["json://127.0.0.1:9/"], attempts=2)
    try:
        with capture_logs() as logs:
            n.job_ended(done_end())
            assert drain(n)
    finally:
        n.close()
    assert [e["event"] for e in logs if e["event"].startswith("notify.")] == ["notify.failed"]


def test_sending_never_blocks_the_caller(receiver: Receiver) -> None:
    """job_ended returns while the receiver still holds the request open."""
    receiver.gate.clear()
    n = notifications([receiver.json_url])
    try:
        n.job_ended(done_end())  # returns although no answer can come yet
        assert not drain(n, timeout=0.05)
        receiver.gate.set()
        assert drain(n)
    finally:
        n.close()
    assert len(receiver.posts) == 1


def test_without_urls_nothing_runs() -> None:
    """No notify.urls: no thread, drain is immediate."""
    n = Notifications(NotifyConfig())
    n.job_ended(done_end())
    n.pause_started("budget", "x", None)
    assert not n.enabled
    assert drain(n, timeout=0.01)
    assert not [t for t in threading.enumerate() if t.name == "seedance-notify"]
    n.close()


def test_config_refuses_an_unknown_url_without_echoing_it(tmp_path: Path) -> None:
    """An URL Apprise does not know names notify.urls and its scheme, never its token."""
    path = tmp_path / "seedance-watch.yaml"
    path.write_text(
        'storage: {bucket: b}\nnotify: {urls: ["json://127.0.0.1:1/", "nosuch://tok3n-s3cret@host"]}\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.key == "notify.urls"
    assert "notify.urls[1]" in info.value.message and "nosuch://" in info.value.message
    assert "tok3n-s3cret" not in info.value.message
    ok = load_config(path, {"SEEDANCE_WATCH_NOTIFY__URLS": '["ntfy://ntfy.example.com/videos"]'})
    assert ok.notify.urls == ["ntfy://ntfy.example.com/videos"]


def test_a_name_that_is_not_utf8_is_sent_with_its_bytes_shown() -> None:
    """A file name that is not UTF-8 (``b\\udce9ach.jpg``) and a message with a line
    break and a terminal escape still make a message a service can encode: the name
    shows as ``b\\xe9ach.jpg``, the message stays one line of the body, and the failure
    is in words beside its code."""
    sent: list[tuple[str, str]] = []

    def strict_sender(url: str, message: Any) -> bool:
        # What a mail or chat service does with the text: encode it as UTF-8.
        sent.append((message.title.encode("utf-8").decode(), message.body.encode("utf-8").decode()))
        return True

    n = notifications(["json://localhost"], sender=strict_sender)
    try:
        n.job_ended(
            JobEnd(
                "failed",
                "job-3",
                "sub/b\udce9ach.jpg",
                Path("/srv/failed/sub/b\udce9ach.error.json"),
                code="invalid_image",
                message="b\udce9ach.jpg:\nnot an image \x1b[2J",
                hint="Replace it",
            )
        )
        n.job_ended(done_end())
        assert drain(n)
    finally:
        n.close()
    (title, body), (done_title, _) = sent
    assert title == "Video failed: sub/b\\xe9ach.jpg" and done_title.startswith("Video ready")
    assert "sub/b\\xe9ach.jpg did not become a video: the image could not be read" in body
    assert "(invalid_image)" in body and "b\\xe9ach.error.json" in body
    assert "\\x1b[2J" in body and "\x1b" not in body
    assert "Why: b\\xe9ach.jpg: not an image" in body  # a message is one line
