"""Tests for the logging set-up and its redaction."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from seedance_watch.logs import (
    CHATTY_LOGGERS,
    SIGNING_LOGGERS,
    clear_secrets,
    configure_logging,
    redact_event,
    redact_text,
    redact_url,
    register_secret,
)

CANARY = "pk-CANARY-7f3a9c0e51d2"
PRESIGNED = (
    "https://bucket.s3.amazonaws.com/seedance-watch/j1/beach.jpg"
    "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE&X-Amz-Signature=abc123"
)


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    """Leave structlog, the root logger and the secret list as they were."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    chatty = {name: logging.getLogger(name).level for name in (*CHATTY_LOGGERS, *SIGNING_LOGGERS)}
    yield
    structlog.reset_defaults()
    clear_secrets()
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    for name, lvl in chatty.items():
        logging.getLogger(name).setLevel(lvl)


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_have_event_level_timestamp_and_fields() -> None:
    """JSON mode writes one parseable object per event, with the bound fields."""
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)
    log = structlog.get_logger("seedance_watch.test")
    log.info("job.submitted", job_id="j1", task_id="cgt-1")
    log.bind(job_id="j2").warning("task.polled", status="running")
    first, second = json_lines(out)
    assert first["event"] == "job.submitted" and first["level"] == "info"
    assert first["job_id"] == "j1" and first["task_id"] == "cgt-1"
    assert str(first["timestamp"]).endswith("Z")
    assert second == {**second, "event": "task.polled", "level": "warning", "job_id": "j2"}


def test_auto_is_json_on_a_non_tty_and_console_renders_plain() -> None:
    """auto on a StringIO is JSON; console mode is key=value text without colours."""
    out = io.StringIO()
    configure_logging(fmt="auto", stream=out)
    structlog.get_logger().info("job.done", job_id="j1")
    assert json_lines(out)[0]["event"] == "job.done"
    out = io.StringIO()
    configure_logging(fmt="console", stream=out)
    structlog.get_logger().info("job.done", job_id="j1")
    text = out.getvalue()
    assert "job.done" in text and "job_id=j1" in text and "\x1b[" not in text


def test_level_filters_and_stdlib_goes_through_the_same_pipeline() -> None:
    """Below-level events are dropped; stdlib records become JSON events too."""
    out = io.StringIO()
    configure_logging(fmt="json", level="warning", stream=out)
    structlog.get_logger().info("job.quiet")
    logging.getLogger("seedance_watch.x").warning("plain %s", "message")
    lines = json_lines(out)
    assert [line["event"] for line in lines] == ["plain message"]
    assert lines[0]["level"] == "warning" and lines[0]["logger"] == "seedance_watch.x"


def test_chatty_libraries_are_quiet_unless_debug() -> None:
    """httpx INFO is hidden at level info and shown at level debug."""
    out = io.StringIO()
    configure_logging(fmt="json", level="info", stream=out)
    logging.getLogger("httpx").info("HTTP Request: POST /x")
    assert json_lines(out) == []
    configure_logging(fmt="json", level="debug", stream=out)
    logging.getLogger("httpx").info("HTTP Request: POST /x")
    assert [line["event"] for line in json_lines(out)] == ["HTTP Request: POST /x"]


def test_reconfiguring_replaces_the_handler() -> None:
    """Calling configure_logging twice writes each event once, to the new stream."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging(fmt="json", stream=first)
    configure_logging(fmt="json", stream=second)
    configure_logging(fmt="json", stream=second)
    structlog.get_logger().info("job.once")
    logging.getLogger("seedance_watch.y").warning("std.once")
    assert first.getvalue() == ""
    assert [line["event"] for line in json_lines(second)] == ["job.once", "std.once"]


def test_loggers_created_before_a_reload_follow_it() -> None:
    """A module-level logger picks up a new level and format after reconfiguring."""
    log = structlog.get_logger("seedance_watch.early")
    out = io.StringIO()
    configure_logging(fmt="json", level="info", stream=out)
    log.debug("job.hidden")
    configure_logging(fmt="console", level="debug", stream=out)
    log.debug("job.shown", job_id="j9")
    assert "job.hidden" not in out.getvalue()
    assert "job.shown" in out.getvalue() and "job_id=j9" in out.getvalue()


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_registered_secret_never_appears(fmt: str) -> None:
    """A canary key is masked in fields, messages, tracebacks and stdlib records."""
    out = io.StringIO()
    configure_logging(fmt=fmt, level="debug", stream=out)
    register_secret(CANARY)
    log = structlog.get_logger("seedance_watch.test")
    log.info("job.submitted", job_id="j1", note=f"header was {CANARY}", extra=[{"k": CANARY}])
    try:
        raise RuntimeError(f"gateway said: bad key {CANARY}")
    except RuntimeError:
        log.exception("job.crashed", job_id="j1")
    logging.getLogger("httpx").warning("request failed with key %s", CANARY)
    try:
        raise ValueError(CANARY)
    except ValueError:
        logging.getLogger("botocore").exception("boom")
    text = out.getvalue()
    assert CANARY not in text
    assert text.count("***") >= 5
    assert "RuntimeError: gateway said: bad key ***" in text
    assert "job.crashed" in text and "request failed with key ***" in text


def test_secret_named_fields_are_masked_but_ids_and_counts_are_not() -> None:
    """api_key/authorization/token fields are masked; job_id, s3_key, *_tokens are kept."""
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)
    structlog.get_logger().info(
        "gateway.request",
        api_key="abc",
        authorization="Bearer x",
        token="t",
        access_token="t",
        password="p",
        client_secret="s",
        headers={"Ocp-Apim-Subscription-Key": "k", "Content-Type": "application/json"},
        job_id="j1",
        s3_key="seedance-watch/j1/a.jpg",
        content_key="abc123",
        usage={"completion_tokens": 103818, "total_tokens": 103818},
    )
    (line,) = json_lines(out)
    for name in ("api_key", "authorization", "token", "access_token", "password", "client_secret"):
        assert line[name] == "***", name
    assert line["headers"] == {
        "Ocp-Apim-Subscription-Key": "***",
        "Content-Type": "application/json",
    }
    assert line["job_id"] == "j1" and line["s3_key"] == "seedance-watch/j1/a.jpg"
    assert line["content_key"] == "abc123"
    assert line["usage"] == {"completion_tokens": 103818, "total_tokens": 103818}


def test_presigned_query_strings_are_stripped_everywhere() -> None:
    """Signed URLs lose their query in fields, inside text and in stdlib messages."""
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)
    structlog.get_logger().info("image.uploaded", url=PRESIGNED, note=f"fetching {PRESIGNED} now")
    logging.getLogger("httpx").warning("GET %s failed", PRESIGNED)
    text = out.getvalue()
    assert "X-Amz-" not in text and "AKIDEXAMPLE" not in text
    first, second = json_lines(out)
    base = "https://bucket.s3.amazonaws.com/seedance-watch/j1/beach.jpg"
    assert first["url"] == base
    assert first["note"] == f"fetching {base} now"
    assert second["event"] == f"GET {base} failed"


def test_signing_material_is_masked_outside_urls_and_botocore_auth_stays_quiet() -> None:
    """A canonical request's query (no scheme) loses its credential and signature values;
    botocore.auth's debug lines (signing internals) are dropped even at level debug."""
    out = io.StringIO()
    configure_logging(fmt="json", level="debug", stream=out)
    canonical = (
        "GET\n/b/k.jpg\nX-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F2026"
        "&X-Amz-Signature=deadbeef&X-Amz-Expires=86400"
    )
    logging.getLogger("botocore.auth").debug("CanonicalRequest:\n%s", canonical)
    logging.getLogger("botocore.endpoint").debug("query %s", canonical)
    text = out.getvalue()
    assert "AKIDEXAMPLE" not in text and "deadbeef" not in text
    (line,) = json_lines(out)
    assert line["logger"] == "botocore.endpoint"
    assert "X-Amz-Credential=***" in str(line["event"]) and "X-Amz-Expires=86400" in str(
        line["event"]
    )


SIGNED_REQUEST = (
    "Sending http request: <AWSPreparedRequest stream_output=False, method=PUT, "
    "url=http://127.0.0.1:5000/b/k.jpg, headers={'Content-Type': b'image/jpeg', "
    "'X-Amz-Date': b'20261201T120000Z', 'X-Amz-Security-Token': b'FQoGZXIvYXdzEXAMPLE', "
    "'X-Amz-Content-SHA256': b'UNSIGNED-PAYLOAD', 'Authorization': b'AWS4-HMAC-SHA256 "
    "Credential=AKIDEXAMPLE/20261201/us-east-1/s3/aws4_request, SignedHeaders=host;"
    "x-amz-date;x-amz-security-token, Signature=0123abcd', 'Content-Length': '5'}>"
)


def test_request_header_dumps_lose_their_credentials_at_level_debug() -> None:
    """botocore's debug "Sending http request" line carries the signed headers: the
    Authorization value (access key id, signature) and the session token are masked
    whole, the other headers stay for debugging; the same for tuple-style header lists,
    header lines and a SigV4 value met in any other message."""
    out = io.StringIO()
    configure_logging(fmt="json", level="debug", stream=out)
    logging.getLogger("botocore.endpoint").debug("%s", SIGNED_REQUEST)
    log = structlog.get_logger()
    log.debug("http.headers", raw="[(b'Host', b'h'), (b'authorization', b'Bearer sekrit')]")
    log.debug("http.raw", text="PUT / HTTP/1.1\nHost: h\nProxy-Authorization: Basic dXNlcg==\n")
    log.warning("s3.odd", error="header was AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/x, Sig")
    text = out.getvalue()
    for leak in ("Signature=", "Credential=", "AKIDEXAMPLE", "FQoGZX", "sekrit", "dXNlcg"):
        assert leak not in text, leak
    first, second, third, _ = json_lines(out)
    assert "'X-Amz-Security-Token': '***'" in first["event"]
    assert "'Authorization': '***'" in first["event"]
    assert "'Content-Type': b'image/jpeg'" in first["event"]
    assert "'Content-Length': '5'" in first["event"]
    assert second["raw"] == "[(b'Host', b'h'), (b'authorization', '***')]"
    assert third["text"] == "PUT / HTTP/1.1\nHost: h\nProxy-Authorization: ***\n"


def test_redact_url() -> None:
    """Only signed queries are dropped; plain URLs are unchanged; passwords masked."""
    assert redact_url("https://h/b/k.jpg?X-Amz-Signature=1") == "https://h/b/k.jpg"
    assert redact_url("https://tos.x/v.mp4?X-Tos-Signature=ab&X-Tos-Expires=9") == (
        "https://tos.x/v.mp4"
    )
    assert redact_url("https://h/k?AWSAccessKeyId=a&Signature=b&Expires=1") == "https://h/k"
    assert redact_url("https://h/page?q=1") == "https://h/page?q=1"
    assert redact_url("http://user:pw@h:9/x") == "http://user:***@h:9/x"
    assert redact_url("not a url") == "not a url"


def test_redact_text_keeps_the_sentence_around_a_url_and_can_drop_every_query() -> None:
    """A signed URL in running text loses its query but not the punctuation after it;
    with ``all_queries`` (reports, pauses) a plain URL's query goes too."""
    text = f"fetch of {PRESIGNED}; then (see https://h/page?token=t1)."
    assert redact_text(text) == (
        "fetch of https://bucket.s3.amazonaws.com/seedance-watch/j1/beach.jpg; "
        "then (see https://h/page?token=t1)."
    )
    assert redact_text(text, all_queries=True) == (
        "fetch of https://bucket.s3.amazonaws.com/seedance-watch/j1/beach.jpg; "
        "then (see https://h/page)."
    )
    assert redact_url("https://h/page?q=1#frag", all_queries=True) == "https://h/page"


def test_redact_event_handles_odd_values() -> None:
    """Objects are redacted through their repr; nested containers are walked."""

    class Holder:
        def __repr__(self) -> str:
            return f"Holder({CANARY})"

    register_secret(CANARY)
    out = redact_event(None, "info", {"event": "x", "obj": Holder(), "nested": ({CANARY: 1},)})
    assert CANARY not in repr(out)
    register_secret("")  # ignored: must not mask every empty string
    assert redact_event(None, "info", {"event": "ok"})["event"] == "ok"


def test_invalid_format_or_level_is_refused() -> None:
    """Unknown formats and levels raise ValueError instead of logging oddly."""
    with pytest.raises(ValueError):
        configure_logging(fmt="xml")
    with pytest.raises(ValueError):
        configure_logging(level="trace")
