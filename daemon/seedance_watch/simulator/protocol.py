"""The wire shapes of the simulated gateway: requests, replies and error bodies.

Pure functions over parsed requests; the submit bodies are checked in
``submits.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "POLL_PATH",
    "STATUS_PREFIX",
    "BadRequest",
    "HttpReply",
    "HttpRequest",
    "error_reply",
    "invalid",
    "json_body",
    "json_reply",
    "server_error",
    "xml_error",
]


#: Polling a task answered ``{"id"}``: ``POST`` with ``{"task_id"}``.
POLL_PATH = "/bytedance-polling/getVideoResult"
#: Polling a task answered with the envelope: ``GET STATUS_PREFIX + request_id``.
STATUS_PREFIX = "/v2/requests/status/"


@dataclass(frozen=True)
class HttpRequest:
    method: str
    #: The request target as sent (path and query).
    target: str
    #: Header names in lower case (a repeated header keeps its last value).
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path


@dataclass
class HttpReply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: Send the headers (with the full Content-Length) and this many body bytes, then close.
    truncate_at: int | None = None
    #: HEAD: headers only.
    head_only: bool = False


def json_reply(
    status: int, payload: Any, headers: list[tuple[str, str]] | None = None
) -> HttpReply:
    return HttpReply(status, json.dumps(payload).encode(), headers=headers or [])


def error_reply(status: int, code: str, message: str, **extra: Any) -> HttpReply:
    return json_reply(status, {"error": {"code": code, "message": message}}, **extra)


class BadRequest(Exception):
    """A request the gateway refuses; carries the reply to send."""

    def __init__(self, reply: HttpReply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def invalid(message: str) -> BadRequest:
    return BadRequest(error_reply(400, "InvalidParameter", message))


def json_body(request: HttpRequest) -> Any:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise invalid("Content-Type must be application/json")
    try:
        return json.loads(request.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid(f"the body is not valid JSON: {exc}") from exc


def server_error(status: int) -> HttpReply:
    """What a failing gateway (or the proxy in front of it) answers with ``status``."""
    if status in (502, 504):
        title = "502 Bad Gateway" if status == 502 else "504 Gateway Time-out"
        html = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
        return HttpReply(status, html.encode(), content_type="text/html")
    if status == 503:
        return error_reply(503, "ServiceUnavailable", "The service is temporarily unavailable.")
    if status == 500:
        return error_reply(500, "InternalServerError", "An internal error occurred (simulated).")
    return error_reply(status, "SimulatedError", f"A simulated HTTP {status} answer.")


def xml_error(status: int, code: str, message: str) -> HttpReply:
    body = (
        "<?xml version='1.0' encoding='UTF-8'?>"
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return HttpReply(status, body.encode(), content_type="application/xml")
