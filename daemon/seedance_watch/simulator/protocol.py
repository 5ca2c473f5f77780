"""The wire shapes of the simulated gateway: requests, replies, error bodies, body checks.

Pure functions over parsed requests, so the exact request contract of SPEC §2
and §4 (``image_url`` a string, exactly one text item, exactly the keys of each
submit body, known models offering the kind asked for) reads in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from seedance_watch.core.models import KIND_NAMES, Kind
from seedance_watch.simulator.config import MODEL_KINDS

__all__ = [
    "POLL_PATH",
    "STATUS_PREFIX",
    "SUBMIT_PATHS",
    "BadRequest",
    "HttpReply",
    "HttpRequest",
    "SubmitRequest",
    "check_submit_body",
    "error_reply",
    "invalid",
    "json_body",
    "json_reply",
    "server_error",
    "xml_error",
]


#: The submit endpoints and the kind of task each creates (SPEC §2, §4).
SUBMIT_PATHS: dict[str, Kind] = {
    "/byteplus/v1/generateImage2VideoTask": "image",
    "/byteplus/v1/generateFrame2VideoTask": "frames",
    "/byteplus/v1/generateVideoTask": "text",
}
#: Polling a task answered ``{"id"}``: ``POST`` with ``{"task_id"}``.
POLL_PATH = "/bytedance-polling/getVideoResult"
#: Polling a task answered with the envelope: ``GET STATUS_PREFIX + request_id``.
STATUS_PREFIX = "/v2/requests/status/"


@dataclass(frozen=True)
class SubmitRequest:
    """A submit body that passed the checks."""

    kind: Kind
    model: str
    text: str
    #: The image URLs to fetch, in body order (none for text).
    urls: tuple[str, ...]


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


def check_submit_body(kind: Kind, body: Any) -> SubmitRequest:
    """The checked submit of ``kind``, or ``BadRequest`` (400; 404 for an unknown model)."""
    if kind == "image":
        model, text, urls = _image_body(body)
    elif kind == "frames":
        model, text, urls = _flat_body(body, ("first_frame", "last_frame"))
    else:
        model, text, urls = _flat_body(body, ())
    _check_model(model, kind)
    for name, url in zip(_URL_NAMES[kind], urls, strict=True):
        if urlsplit(url).scheme not in ("http", "https"):
            raise invalid(f"{name} could not be fetched: not an http(s) URL")
    return SubmitRequest(kind, model, text, urls)


_URL_NAMES: dict[Kind, tuple[str, ...]] = {
    "image": ("image_url",),
    "frames": ("first_frame", "last_frame"),
    "text": (),
}


def _image_body(body: Any) -> tuple[str, str, tuple[str, ...]]:
    if not isinstance(body, dict) or set(body) != {"model", "content"}:
        raise invalid('the body must hold exactly "model" and "content"')
    model, content = body["model"], body["content"]
    if not isinstance(model, str):
        raise invalid("model must be a string")
    _check_known(model)
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
    return model, texts[0], (urls[0],)


def _flat_body(body: Any, url_keys: tuple[str, ...]) -> tuple[str, str, tuple[str, ...]]:
    """A body of exactly ``model``, ``text`` and ``url_keys``, every value a string."""
    keys = ("model", "text", *url_keys)
    if not isinstance(body, dict) or set(body) != set(keys):
        wanted = ", ".join(f'"{k}"' for k in keys)
        got = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise invalid(f"the body must hold exactly {wanted}; got {got}")
    for key in keys:
        if not isinstance(body[key], str):
            raise invalid(f"{key} must be a string, not {type(body[key]).__name__}")
    _check_known(body["model"])
    if not body["text"].strip():
        raise invalid("text must not be empty")
    return body["model"], body["text"], tuple(body[k] for k in url_keys)


def _check_known(model: str) -> None:
    if model not in MODEL_KINDS:
        raise BadRequest(
            error_reply(
                404, "ModelNotFound", f"The model {model} does not exist or you have no access."
            )
        )


def _check_model(model: str, kind: Kind) -> None:
    if kind not in MODEL_KINDS[model]:
        offered = ", ".join(sorted(KIND_NAMES[k] for k in MODEL_KINDS[model]))
        raise invalid(
            f"The model {model} does not support {KIND_NAMES[kind]} (it offers: {offered})."
        )


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
