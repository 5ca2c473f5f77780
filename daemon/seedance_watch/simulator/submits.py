"""The submit endpoints of today's gateway, and their bodies checked as it checks them.

Which paths exist, and what each makes, comes from the model table
(``core/models.py``): the two Seedance 1.0 endpoints of the seed document, whose
body names the model, and each Seedance 2 model's endpoints, which name it
themselves.  ``generateFrame2VideoTask`` is gone, so it is an unknown path (404)
like any other.

Rules that live here:

* Seedance 1.0 (``{"model", "content"}`` for an image, ``{"model", "text"}`` for
  text): a model the table does not know is a 404; a retired one a 400 saying it
  is not available; a live model of another family, or one that does not make the
  kind asked for, a 400.  Options travel as ``--commands`` in the text (read, and
  invalid values replaced, by ``commands.parse_text``).
* Seedance 2: no ``model`` key; top-level keys ``content`` and the options the
  model's row lists, nothing else; exactly one non-empty text item with no
  ``--command``; each image ``{"type": "image_url", "image_url": {"url"}, "role"}``
  with the roles its operation takes; every option value one the row allows (the
  wire spells ``duration: auto`` as -1).  Each refusal is a 400 naming the key.

Pure: no I/O (the images are fetched by the caller).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from seedance_watch.core.models import (
    KIND_NAMES,
    KINDS,
    OPTION_KEYS,
    IntRange,
    Kind,
    ModelRow,
    ModelTable,
)
from seedance_watch.simulator.protocol import BadRequest, error_reply, invalid

__all__ = [
    "AUTO_DURATION",
    "MAX_REFERENCES",
    "SEEDANCE_1_ENDPOINTS",
    "Endpoint",
    "Operation",
    "SubmitRequest",
    "check_submit",
    "submit_endpoints",
]

#: The seed document's endpoints, served whichever 1.0 models are live (so a
#: retired model there is the gateway's "not available", not a 404).
SEEDANCE_1_ENDPOINTS: Final[Mapping[str, Kind]] = {
    "/byteplus/v1/generateImage2VideoTask": "image",
    "/byteplus/v1/generateVideoTask": "text",
}
#: ``duration`` on the Seedance 2 wire when the model is to pick the length.
AUTO_DURATION: Final = -1
MAX_REFERENCES: Final = 9

#: What a Seedance 2 endpoint does: first (and last) frame, text, or reference images.
Operation = Literal["frames", "text", "reference"]

_COMMAND = re.compile(r"--([^\W\d_][\w-]*)")
_TEXT_ITEM = frozenset({"type", "text"})
_IMAGE_ITEM = frozenset({"type", "image_url", "role"})


@dataclass(frozen=True)
class Endpoint:
    """One submit path: its family and the kinds of task it makes."""

    path: str
    #: ``1.0`` (the body names the model) or ``2`` (``row`` is the endpoint's model).
    family: str
    kinds: frozenset[Kind]
    row: ModelRow | None = None

    @property
    def prefix(self) -> str:
        """The first path segment, which begins every envelope ``request_id``
        (``byteplus``, ``seedance-2-0-fast``)."""
        return self.path.strip("/").split("/")[0]

    @property
    def operation(self) -> Operation:
        if self.kinds <= {"image", "frames"}:
            return "frames"
        if self.kinds == {"text"}:
            return "text"
        if self.kinds == {"reference"}:
            return "reference"
        raise ValueError(f"{self.path}: no operation makes {sorted(self.kinds)} at once")


@dataclass(frozen=True)
class SubmitRequest:
    """A submit body that passed the checks."""

    kind: Kind
    #: The body's model (Seedance 1.0) or the endpoint's (Seedance 2).
    model: str
    family: str
    #: The text with its commands (1.0) or the prompt alone (Seedance 2).
    text: str
    #: The image URLs to fetch, in body order (none for text).
    urls: tuple[str, ...]
    #: The role of each URL: Seedance 2's ``role``, or the 1.0 body key (``image_url``).
    roles: tuple[str, ...]
    #: Seedance 2's top-level options as sent (1.0: empty; they are in the text).
    options: Mapping[str, Any] = field(default_factory=dict)


def submit_endpoints(models: ModelTable) -> dict[str, Endpoint]:
    """Every submit path of the gateway serving ``models``; ``ValueError`` for a table
    this gateway cannot serve (a path shared by two models, an unknown family)."""
    routes = {
        path: Endpoint(path, "1.0", frozenset({kind}))
        for path, kind in SEEDANCE_1_ENDPOINTS.items()
    }
    kinds_at: dict[str, set[Kind]] = {}
    rows_at: dict[str, ModelRow] = {}
    for row in models.values():
        if row.family == "1.0":
            stray = {p for p in row.endpoints.values() if p not in SEEDANCE_1_ENDPOINTS}
            if stray:
                raise ValueError(f"{row.model}: Seedance 1.0 is served only at the 1.0 endpoints")
            continue
        if not row.endpoints:
            continue
        if row.family != "2":
            raise ValueError(f"{row.model}: the simulator does not speak family {row.family}")
        for kind, path in row.endpoints.items():
            if path in routes or rows_at.setdefault(path, row) is not row:
                raise ValueError(f"{path}: the endpoint of more than one model")
            kinds_at.setdefault(path, set()).add(kind)
    for path, kinds in kinds_at.items():
        endpoint = Endpoint(path, "2", frozenset(kinds), rows_at[path])
        _ = endpoint.operation  # refuses an endpoint that mixes operations
        routes[path] = endpoint
    return routes


def check_submit(endpoint: Endpoint, body: Any, models: ModelTable) -> SubmitRequest:
    """The checked submit at ``endpoint``, or ``BadRequest`` (400; 404 for an unknown
    model)."""
    if endpoint.family == "2":
        assert endpoint.row is not None
        return _seedance_2(endpoint, endpoint.row, body)
    (kind,) = endpoint.kinds
    if kind == "text":
        model, text = _text_body(body, models, endpoint)
        return SubmitRequest("text", model, "1.0", text, (), ())
    model, text, url = _image_body(body, models, endpoint)
    if urlsplit(url).scheme not in ("http", "https"):
        raise invalid("image_url could not be fetched: not an http(s) URL")
    return SubmitRequest("image", model, "1.0", text, (url,), ("image_url",))


# --- Seedance 1.0 -------------------------------------------------------------------------


def _image_body(body: Any, models: ModelTable, endpoint: Endpoint) -> tuple[str, str, str]:
    if not isinstance(body, dict) or set(body) != {"model", "content"}:
        raise invalid('the body must hold exactly "model" and "content"')
    model, content = body["model"], body["content"]
    if not isinstance(model, str):
        raise invalid("model must be a string")
    _check_1_0_model(model, "image", models, endpoint)
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
    return model, texts[0], urls[0]


def _text_body(body: Any, models: ModelTable, endpoint: Endpoint) -> tuple[str, str]:
    """A body of exactly ``model`` and ``text``, both strings."""
    if not isinstance(body, dict) or set(body) != {"model", "text"}:
        got = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise invalid(f'the body must hold exactly "model", "text"; got {got}')
    for key in ("model", "text"):
        if not isinstance(body[key], str):
            raise invalid(f"{key} must be a string, not {type(body[key]).__name__}")
    _check_1_0_model(body["model"], "text", models, endpoint)
    if not body["text"].strip():
        raise invalid("text must not be empty")
    return body["model"], body["text"]


def _check_1_0_model(model: str, kind: Kind, models: ModelTable, endpoint: Endpoint) -> None:
    row = models.get(model)
    if row is None:
        raise BadRequest(
            error_reply(
                404, "ModelNotFound", f"The model {model} does not exist or you have no access."
            )
        )
    _check_live(row)
    if row.family != "1.0":
        where = ", ".join(sorted(set(row.endpoints.values())))
        raise invalid(
            f"The model {model} is not served at {endpoint.path}: Seedance {row.family} "
            f"models have endpoints of their own ({where})."
        )
    if kind not in row.kinds:
        offered = ", ".join(KIND_NAMES[k] for k in KINDS if k in row.kinds)
        raise invalid(
            f"The model {model} does not support {KIND_NAMES[kind]} (it offers: {offered})."
        )


def _check_live(row: ModelRow) -> None:
    if row.retired_on is not None:
        raise BadRequest(
            error_reply(
                400,
                "ModelNotAvailable",
                f"The model {row.model} is not available: it was switched off on "
                f"{row.retired_on.isoformat()}.",
            )
        )


# --- Seedance 2 ---------------------------------------------------------------------------


def _seedance_2(endpoint: Endpoint, row: ModelRow, body: Any) -> SubmitRequest:
    _check_live(row)
    if not isinstance(body, dict):
        raise invalid(f'the body must be a JSON object with "content", not {type(body).__name__}')
    if "model" in body:
        raise invalid(
            f'"model" is not a parameter of {endpoint.path}: the endpoint names the model '
            f"({row.model})"
        )
    takes = [k for k in OPTION_KEYS if k in row.options]
    unknown = [k for k in body if k != "content" and k not in row.options]
    if unknown:
        raise invalid(
            f"{', '.join(unknown)}: not a parameter of {row.model} "
            f"(it takes content, {', '.join(takes)})"
        )
    if not isinstance(body.get("content"), list):
        raise invalid("content is required: a list of one text item and the image items")
    text, urls, roles = _content(body["content"])
    kind = _check_roles(endpoint, roles)
    options = {k: body[k] for k in takes if k in body}
    for key, value in options.items():
        _check_option(row, key, value)
    return SubmitRequest(kind, row.model, "2", text, urls, roles, options)


def _content(content: list[Any]) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """The prompt, and the URL and role of each image item, in order."""
    texts: list[str] = []
    urls: list[str] = []
    roles: list[str] = []
    for index, item in enumerate(content):
        where = f"content[{index}]"
        if not isinstance(item, dict):
            raise invalid(f"{where} must be an object, not {type(item).__name__}")
        kind = item.get("type")
        if kind == "text":
            _exact_keys(where, item, _TEXT_ITEM)
            text = item["text"]
            if not isinstance(text, str) or not text.strip():
                raise invalid(f"{where}.text must be a non-empty string")
            command = _COMMAND.search(text)
            if command is not None:
                raise invalid(
                    f"{where}.text holds a text command '--{command.group(1)}': Seedance 2 "
                    "takes its options as top-level keys"
                )
            texts.append(text)
        elif kind == "image_url":
            _exact_keys(where, item, _IMAGE_ITEM)
            urls.append(_image_url(where, item["image_url"]))
            role = item["role"]
            if not isinstance(role, str):
                raise invalid(f"{where}.role must be a string, not {type(role).__name__}")
            roles.append(role)
        else:
            raise invalid(f"{where}.type must be text or image_url, not {json.dumps(kind)}")
    if len(texts) != 1:
        raise invalid(f"content must hold exactly one text item, not {len(texts)}")
    return texts[0], tuple(urls), tuple(roles)


def _exact_keys(where: str, item: dict[str, Any], keys: frozenset[str]) -> None:
    missing = sorted(keys - set(item))
    extra = sorted(set(item) - keys)
    if missing:
        raise invalid(f"{where}.{missing[0]} is required")
    if extra:
        raise invalid(f"{where}.{extra[0]}: not a key of a {item['type']} item")


def _image_url(where: str, value: Any) -> str:
    if isinstance(value, str):
        raise invalid(f'{where}.image_url must be an object {{"url": ...}}, not a string')
    if not isinstance(value, dict) or set(value) != {"url"}:
        raise invalid(f'{where}.image_url must be exactly {{"url": "<http(s) URL>"}}')
    url = value["url"]
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise invalid(f"{where}.image_url.url must be an http(s) URL")
    return url


def _check_roles(endpoint: Endpoint, roles: tuple[str, ...]) -> Kind:
    """The kind of task the images' roles make at ``endpoint`` (or a 400)."""
    got = f"got roles [{', '.join(roles)}]" if roles else "got no image"
    operation = endpoint.operation
    if operation == "text":
        if roles:
            raise invalid(f"{endpoint.path} takes no image; {got}")
        return "text"
    if operation == "reference":
        if not 1 <= len(roles) <= MAX_REFERENCES or set(roles) != {"reference_image"}:
            raise invalid(
                f"{endpoint.path} takes 1 to {MAX_REFERENCES} images of role reference_image; {got}"
            )
        return "reference"
    shapes: dict[tuple[str, ...], Kind] = {}
    if "image" in endpoint.kinds:
        shapes[("first_frame",)] = "image"
    if "frames" in endpoint.kinds:
        shapes[("first_frame", "last_frame")] = "frames"
    if roles not in shapes:
        wanted = " or ".join(f"[{', '.join(shape)}]" for shape in shapes)
        raise invalid(f"{endpoint.path} takes images of roles {wanted}, in that order; {got}")
    return shapes[roles]


def _check_option(row: ModelRow, key: str, value: Any) -> None:
    spec = row.options[key]
    if isinstance(spec, IntRange):
        ok = type(value) is int and (
            spec.low <= value <= spec.high or (spec.auto and value == AUTO_DURATION)
        )
        takes = f"an integer from {spec.low} to {spec.high}"
        if spec.auto:
            takes += f", or {AUTO_DURATION} (the model picks)"
    else:
        ok = spec.allows(value)
        takes = spec.describe()
    if not ok:
        raise invalid(f"{key}: {row.model} does not take {json.dumps(value)} (it takes {takes})")
