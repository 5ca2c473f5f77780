"""The wire shapes of the simulated gateway: requests, replies, error bodies, body checks.

Pure functions over parsed requests, so the exact request contract of SPEC §2
(``image_url`` a string, exactly one text item, known models) reads in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from seedance_watch.simulator.config import KNOWN_MODELS

__all__ = [
    "BadRequest",
    "HttpReply",
    "HttpRequest",
    "check_submit_body",
    "error_reply",
    "invalid",
    "json_body",
    "json_reply",
    "server_error",
    "xml_error",
]


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


def check_submit_body(body: Any) -> tuple[str, str, str]:
    """``(model, text, image_url)`` from a submit body, or ``BadRequest``."""
    if not isinstance(body, dict) or set(body) != {"model", "content"}:
        raise invalid('the body must hold exactly "model" and "content"')
    model, content = body["model"], body["content"]
    if not isinstance(model, str):
        raise invalid("model must be a string")
    if model not in KNOWN_MODELS:
        raise BadRequest(
            error_reply(
                404, "ModelNotFound", f"The model {model} does not exist or you have no access."
            )
        )
    if not isinstance(content, list):
        raise invalid("content must be a list")
    texts: list[str] = []
    urls: list[str] = []
    for item in content:
        if not isinstance(item, dict) or set(item) not in ({"type", "text"}, {"type", "image_url"}):
            raise invalid(f"content item {item!r} is not a text or image_url item")
        if item["type"] == "text" and "text" in item and isinstance(item["text"], str):
            texts.append(item["text"])
        elif item["type"] == "image_url" and "image_url" in item:
            if not isinstance(item["image_url"], str):
                raise invalid("content.image_url must be a string URL, not an object")
            urls.append(item["image_url"])
        else:
            raise invalid(f"content item {item!r} is not a text or image_url item")
    if len(texts) != 1:
        raise invalid("content must hold exactly one text item")
    if len(urls) != 1:
        raise invalid("content must hold exactly one image_url item")
    if urlsplit(urls[0]).scheme not in ("http", "https"):
        raise invalid("image_url could not be fetched: not an http(s) URL")
    return model, texts[0], urls[0]


def server_error(status: int) -> HttpReply:
    if status == 502:
        html = (
            b"<html><head><title>502 Bad Gateway</title></head>"
            b"<body><h1>502 Bad Gateway</h1></body></html>"
        )
        return HttpReply(502, html, content_type="text/html")
    if status == 503:
        return error_reply(503, "ServiceUnavailable", "The service is temporarily unavailable.")
    return error_reply(500, "InternalServerError", "An internal error occurred (simulated).")


def xml_error(status: int, code: str, message: str) -> HttpReply:
    body = (
        "<?xml version='1.0' encoding='UTF-8'?>"
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return HttpReply(status, body.encode(), content_type="application/xml")
