r"""The sidecar schema, the request it renders to, and the image checks (SPEC §4).

A sidecar is written by a person, so every problem is reported in words that
person can act on: the key, the value and what is allowed.  The gateway silently
replaces invalid parameters with its defaults, hence the strictness here: a typo
like ``resolutoin`` or a quoted ``"5"`` must fail the job, not change the video.

The YAML is composed to nodes first and each top-level value is constructed on
its own, so one bad value (say an integer too long to convert) is reported with
its key and position instead of hiding the rest of the file.

Line breaks in a prompt, on purpose and the same whichever way they were written:

* In the file, ``\n``, ``\r\n``, ``\r``, U+0085 (NEL), U+2028 (LINE SEPARATOR)
  and U+2029 (PARAGRAPH SEPARATOR) are all line breaks, and YAML folds each like
  ``\n``: in a plain or quoted value one line break becomes a space (an empty
  line makes a new line); a ``|`` block keeps every one.  (PyYAML alone would keep
  a raw U+2028 or U+2029 in a quoted value but fold U+0085: we do not.)
* In the prompt that results, every line break -- including one written as an
  escape in a double-quoted value (``"\r"``, ``"\N"``, ``"\L"``, ``"\P"``) -- is
  a plain ``\n``, and the prompt is stripped of surrounding white space.  That is
  what is checked (length, text commands) and sent to the gateway.
"""

from __future__ import annotations

import difflib
import os
import re
import reprlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, get_args

import structlog
import yaml
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from seedance_watch.core.names import IMAGE_TYPES
from seedance_watch.core.options import COMMAND_ORDER, GenerationOptions, Ratio, Resolution
from seedance_watch.errors import InvalidImage, InvalidSidecar
from seedance_watch.files.yaml12 import Yaml12Loader

__all__ = [
    "IMAGE_CONTENT_TYPES",
    "KNOWN_MODELS",
    "MAX_IMAGE_BYTES",
    "PROMPT_MAX_CHARS",
    "SIDECAR_KEYS",
    "ImageInfo",
    "Request",
    "Sidecar",
    "build_request",
    "check_image",
    "check_sidecar",
    "normalize_line_breaks",
    "parse_sidecar",
    "sidecar_problems",
    "unknown_model_message",
]

log = structlog.get_logger(__name__)

SIDECAR_KEYS: Final = ("prompt", "model", *COMMAND_ORDER)

#: Seedance 1.0 models that take an image (the pro models do image-to-video too).
KNOWN_MODELS: Final = frozenset(
    {"seedance-1-0-lite-i2v-250428", "seedance-1-0-pro-250528", "seedance-1-0-pro-fast-251015"}
)

PROMPT_MAX_CHARS: Final = 2000
_RESOLUTIONS: Final[tuple[str, ...]] = get_args(Resolution)
_RATIOS: Final[tuple[str, ...]] = get_args(Ratio)
_INT_RANGES: Final = {"duration": (2, 12), "seed": (-1, 4294967295)}
# Anything the gateway would parse as a command: two dashes, then a letter.
_TEXT_COMMAND = re.compile(r"--([^\W\d_][\w-]*)")
# What YAML 1.1 (and so PyYAML's reader) counts as a line break besides \r and \n.
_UNICODE_BREAKS = re.compile("[\x85\u2028\u2029]")
# Every line break a prompt may hold, each to become one "\n".
_LINE_BREAK = re.compile("\r\n|[\r\x85\u2028\u2029]")

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlevel, _repr.maxlist, _repr.maxdict = 2, 4, 4


@dataclass(frozen=True)
class Sidecar:
    """A validated sidecar: the prompt, an optional model, options not yet merged."""

    prompt: str
    model: str | None
    options: GenerationOptions


@dataclass(frozen=True)
class Request:
    """What is sent for one job: ``text`` is the prompt plus its text commands."""

    model: str
    prompt: str
    text: str
    options: GenerationOptions


def parse_sidecar(data: bytes, *, strict_model: bool = False) -> Sidecar:
    """Validate a sidecar file's bytes.

    Raises one :class:`InvalidSidecar` whose message joins every problem with
    ``"; "`` (its ``key`` is the first problem's).  An unknown model is logged as
    ``sidecar.unknown_model`` and accepted, unless ``strict_model``.
    """
    sidecar, problems = _validate(data, strict_model=strict_model)
    if problems:
        first = problems[0]
        hint = first.hint if len(problems) == 1 else None
        raise InvalidSidecar("; ".join(p.message for p in problems), key=first.key, hint=hint)
    assert sidecar is not None
    if sidecar.model is not None and sidecar.model not in KNOWN_MODELS:
        log.warning("sidecar.unknown_model", model=sidecar.model, known=sorted(KNOWN_MODELS))
    return sidecar


def sidecar_problems(data: bytes, *, strict_model: bool = False) -> list[InvalidSidecar]:
    """Every problem of a sidecar, in document order (empty when it is valid)."""
    return _validate(data, strict_model=strict_model)[1]


def check_sidecar(
    data: bytes, *, strict_model: bool = False
) -> tuple[Sidecar | None, list[InvalidSidecar]]:
    """The sidecar (None if invalid) and every problem, without logging anything.

    :func:`parse_sidecar` joins the problems' messages with ``"; "`` in that order.
    """
    return _validate(data, strict_model=strict_model)


def build_request(sidecar: Sidecar, *, defaults: GenerationOptions, default_model: str) -> Request:
    """The effective request: sidecar options over ``defaults``, commands appended."""
    options = sidecar.options.over(defaults)
    commands = options.commands()
    text = f"{sidecar.prompt} {commands}" if commands else sidecar.prompt
    return Request(
        model=sidecar.model or default_model, prompt=sidecar.prompt, text=text, options=options
    )


# --- sidecar validation -----------------------------------------------------------------


def _show(value: Any) -> str:
    """A value as the person wrote it, short enough for one line of a report."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    shown = _repr.repr(value)
    return shown if len(shown) <= 64 else shown[:60] + "..."


def _at(mark: yaml.Mark | None) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"


def _problem(message: str, key: str | None, hint: str | None = None) -> InvalidSidecar:
    return InvalidSidecar(message, key=key, hint=hint)


def _validate(data: bytes, *, strict_model: bool) -> tuple[Sidecar | None, list[InvalidSidecar]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        message = (
            f"the sidecar is not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line}, "
            f"column {column} cannot be decoded"
        )
        return None, [_problem(message, None, "Save the sidecar as UTF-8 text.")]

    # One char for one, so positions in messages stay right; see the module docstring.
    text = _UNICODE_BREAKS.sub("\n", text)
    try:
        root = yaml.compose(text, Loader=Yaml12Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "invalid YAML"
        return None, [_problem(f"YAML syntax error at {_at(mark)}: {what}", None)]
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        line, column = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        what = f"character U+{code:04X} is not allowed in YAML"
        return None, [_problem(f"YAML syntax error at line {line}, column {column}: {what}", None)]
    except (yaml.YAMLError, RecursionError) as exc:
        return None, [_problem(f"YAML syntax error: {type(exc).__name__}", None)]

    if root is None:
        message = "the sidecar is empty; it needs at least a prompt: line"
        return None, [_problem(message, "prompt")]
    if not isinstance(root, yaml.MappingNode):
        kind = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
        message = f"the sidecar must be a YAML mapping of keys (prompt: ...), not {kind}"
        return None, [_problem(message, None)]
    return _validate_mapping(root, strict_model=strict_model)


def _construct(node: yaml.Node) -> Any:
    """One node's Python value; raises what PyYAML or int() raise on bad input."""
    return Yaml12Loader("").construct_document(node)


def _validate_mapping(
    root: yaml.MappingNode, *, strict_model: bool
) -> tuple[Sidecar | None, list[InvalidSidecar]]:
    problems: list[InvalidSidecar] = []
    values: dict[str, Any] = {}
    seen: dict[str, yaml.Node] = {}
    for key_node, value_node in root.value:
        try:
            key = _construct(key_node)
        except (yaml.YAMLError, ValueError, RecursionError) as exc:
            where = _at(key_node.start_mark)
            problems.append(_problem(f"the key at {where} cannot be read: {exc}", None))
            continue
        if not isinstance(key, str):
            message = f"keys must be text, not {_show(key)} (at {_at(key_node.start_mark)})"
            problems.append(_problem(message, None))
            continue
        if key not in SIDECAR_KEYS:
            problems.append(_unknown_key(key))
            continue
        if key in seen:
            first = seen[key].start_mark.line + 1
            message = f"duplicate key {key!r} at {_at(key_node.start_mark)} (first at line {first})"
            problems.append(_problem(message, key, "Keep one line per key."))
            continue
        seen[key] = key_node
        try:
            value = _construct(value_node)
        except (yaml.YAMLError, ValueError, RecursionError) as exc:
            problems.append(_unreadable_value(key, value_node, exc))
            continue
        if key == "prompt" and isinstance(value, str):
            value = normalize_line_breaks(value)
        problem = _check_value(key, value)
        if problem is not None:
            problems.append(problem)
        else:
            values[key] = value.strip() if isinstance(value, str) else value
    if "prompt" not in seen:
        problems.append(_problem("prompt is required and must be non-empty text", "prompt"))

    model = values.get("model")
    if strict_model and model is not None and model not in KNOWN_MODELS:
        problems.append(_problem(unknown_model_message(model), "model"))
    if problems:
        return None, problems

    options = {k: v for k, v in values.items() if k in COMMAND_ORDER}
    try:
        generation = GenerationOptions.model_validate(options)
    except ValidationError as exc:  # the checks above should make this unreachable
        return None, [_problem(f"invalid options: {exc.errors()[0]['msg']}", None)]
    return Sidecar(prompt=values["prompt"], model=model, options=generation), []


def normalize_line_breaks(text: str) -> str:
    r"""``text`` with each line break (``\r\n``, ``\r``, U+0085, U+2028, U+2029) as ``\n``."""
    return _LINE_BREAK.sub("\n", text)


def unknown_model_message(model: str) -> str:
    """What a strict check says about a model the daemon does not know."""
    known = ", ".join(sorted(KNOWN_MODELS))
    return f"model: {_show(model)} is not a known model; use one of {known}"


def _unreadable_value(key: str, node: yaml.Node, exc: Exception) -> InvalidSidecar:
    where = _at(node.start_mark)
    if isinstance(exc, ValueError):  # int() refuses numbers of thousands of digits
        message = f"{key}: the number at {where} has too many digits"
        if key in _INT_RANGES:
            message += "; use an integer from {} to {}".format(*_INT_RANGES[key])
        return _problem(message, key)
    if isinstance(exc, RecursionError):
        return _problem(f"{key}: the value at {where} is nested too deeply", key)
    return _problem(f"{key}: the value at {where} cannot be read: {exc}", key)


def _unknown_key(key: str) -> InvalidSidecar:
    close = difflib.get_close_matches(key.lower(), SIDECAR_KEYS, n=1, cutoff=0.6)
    if close:
        return _problem(f"unknown key {_show(key)} (did you mean {close[0]!r}?)", key)
    allowed = ", ".join(SIDECAR_KEYS)
    return _problem(f"unknown key {_show(key)}; the keys are {allowed}", key)


def _check_value(key: str, value: Any) -> InvalidSidecar | None:
    """The problem with one known key's value, or None when it is valid."""
    if key == "prompt":
        return _check_prompt(value)
    if key == "model":
        if isinstance(value, str) and value.strip():
            return None
        example = min(KNOWN_MODELS)
        return _problem(
            f"model: {_show(value)} is not allowed; use a model id such as {example}", key
        )
    if key in ("resolution", "ratio"):
        allowed = _RESOLUTIONS if key == "resolution" else _RATIOS
        if isinstance(value, str) and value in allowed:
            return None
        message = f"{key}: {_show(value)} is not allowed; use one of {', '.join(allowed)}"
        return _problem(message, key)
    if key in _INT_RANGES:
        low, high = _INT_RANGES[key]
        wanted = f"use an integer from {low} to {high}"
        if not isinstance(value, int) or isinstance(value, bool):
            quoted = " (without quotes)" if isinstance(value, str) else ""
            return _problem(f"{key}: {_show(value)} is not an integer; {wanted}{quoted}", key)
        if not low <= value <= high:
            return _problem(f"{key}: {_show(value)} is out of range; {wanted}", key)
        return None
    # camerafixed, watermark
    if isinstance(value, bool):
        return None
    return _problem(f"{key}: {_show(value)} is not allowed; use true or false", key)


def _check_prompt(value: Any) -> InvalidSidecar | None:
    if not isinstance(value, str) or not value.strip():
        message = "prompt is required and must be non-empty text"
        if value is not None and not isinstance(value, str):
            message += f", not {_show(value)}"
        return _problem(message, "prompt", "Write the prompt as text, in quotes if in doubt.")
    prompt = value.strip()
    if len(prompt) > PROMPT_MAX_CHARS:
        message = f"prompt is {len(prompt)} characters long; the limit is {PROMPT_MAX_CHARS}"
        return _problem(message, "prompt")
    found = _TEXT_COMMAND.search(prompt)
    if found is None:
        return None
    name = found.group(1)
    if name in COMMAND_ORDER:
        message = f"prompt contains a text command '--{name}'; set {name}: in the sidecar instead"
        hint = f"Remove '--{name} ...' from the prompt and add a line '{name}: ...'."
    else:
        message = f"prompt contains a text command '--{name}'; remove it (the gateway reads it)"
        hint = "Text commands in the prompt are not allowed; use the sidecar keys."
    return _problem(message, "prompt", hint)


# --- image checks ------------------------------------------------------------------------

MAX_IMAGE_BYTES: Final = 30 * 1024 * 1024
_MIN_SHORT_SIDE: Final = 300  # exclusive
_MAX_LONG_SIDE: Final = 6000  # exclusive
_MIN_RATIO, _MAX_RATIO = 0.4, 2.5  # inclusive

_FORMAT_OF_SUFFIX: Final = {suffix: fmt for suffix, (fmt, _) in IMAGE_TYPES.items()}
IMAGE_CONTENT_TYPES: Final = dict(IMAGE_TYPES.values())
# Only these decoders are tried: less attack surface, and a clear "not supported".
# (The JPEG decoder itself returns "MPO" for the multi-picture JPEGs some cameras
# write; to everyone else they are JPEGs.)
_PILLOW_FORMATS: Final = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")


@dataclass(frozen=True)
class ImageInfo:
    """What the checks learned about an image: canonical format, pixels and bytes."""

    format: str
    width: int
    height: int
    size: int
    content_type: str


def check_image(path: Path) -> ImageInfo:
    """Check an image against the model's limits: its header, then one full decode.

    Raises :class:`InvalidImage` naming the numbers involved.  An ``OSError``
    from the file itself (gone, unreadable) propagates: it is not the image's fault.
    """
    suffix = path.suffix.lower()
    expected = _FORMAT_OF_SUFFIX.get(suffix)
    if expected is None:
        allowed = ", ".join(sorted(_FORMAT_OF_SUFFIX))
        shown = repr(path.suffix) if path.suffix else "no extension"
        raise InvalidImage(f"{shown} is not an image extension; use one of {allowed}")

    with open(path, "rb") as fp:
        # fstat, not stat: the size is that of the very file that is decoded.
        size = os.fstat(fp.fileno()).st_size
        if size == 0:
            raise InvalidImage("the image is empty (0 bytes)")
        if size > MAX_IMAGE_BYTES:
            raise InvalidImage(
                f"the image is {size / 1024 / 1024:.1f} MB ({size} bytes); "
                f"the limit is 30 MB ({MAX_IMAGE_BYTES} bytes)",
                hint="Compress or scale the image below 30 MB.",
            )
        fmt, width, height = _read_header(fp)

    if fmt != expected:
        raise InvalidImage(
            f"the file is a {fmt} image but its extension {path.suffix} means {expected}",
            hint=f"Rename it with the extension of a {fmt} file, or convert it to {expected}.",
        )
    _check_dimensions(width, height)
    _decode(path)
    return ImageInfo(
        format=fmt, width=width, height=height, size=size, content_type=IMAGE_CONTENT_TYPES[fmt]
    )


def _read_header(fp: BinaryIO) -> tuple[str, int, int]:
    """Identify and verify the image, then reopen it for its size (verify spends the file)."""
    try:
        with warnings.catch_warnings():
            # Above Pillow's pixel limit the image breaks the side limits anyway;
            # make the warning an error so the report says so, every time.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp, formats=_PILLOW_FORMATS) as im:
                im.verify()
            fp.seek(0)
            with Image.open(fp, formats=_PILLOW_FORMATS) as im:
                fmt, (width, height) = im.format or "", im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(
            f"the image is too large to decode ({exc}); "
            f"the longer side must be under {_MAX_LONG_SIDE} px"
        ) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(
            "the file is not a readable JPEG, PNG, WebP, BMP, TIFF or GIF image"
        ) from exc
    except OSError as exc:  # Pillow's word for "truncated" or "broken"
        raise InvalidImage(f"the image cannot be decoded: {exc}") from exc
    except Exception as exc:  # crafted files make decoders raise anything
        raise InvalidImage(f"the image cannot be decoded: {type(exc).__name__}: {exc}") from exc
    return ("JPEG" if fmt == "MPO" else fmt), width, height


def _decode(path: Path) -> None:
    """Decode the pixels once: a truncated JPEG passes ``verify()`` (which reads only
    its structure) but would be uploaded, submitted and billed as a broken image."""
    try:
        with Image.open(path, formats=_PILLOW_FORMATS) as im:
            im.load()
    except OSError as exc:  # "image file is truncated", "broken data stream"
        raise InvalidImage(
            f"the image cannot be decoded: {exc}",
            hint="The file looks cut short (an interrupted copy?); drop it again.",
        ) from exc
    except Exception as exc:  # crafted files make decoders raise anything
        raise InvalidImage(f"the image cannot be decoded: {type(exc).__name__}: {exc}") from exc


def _check_dimensions(width: int, height: int) -> None:
    shorter, longer = min(width, height), max(width, height)
    if shorter <= _MIN_SHORT_SIDE:
        raise InvalidImage(
            f"image is {width}x{height} px: the shorter side must be over {_MIN_SHORT_SIDE} px",
            hint="Use a larger image or upscale it.",
        )
    if longer >= _MAX_LONG_SIDE:
        raise InvalidImage(
            f"image is {width}x{height} px: the longer side must be under {_MAX_LONG_SIDE} px",
            hint="Scale the image down.",
        )
    # Integer arithmetic: 0.4 and 2.5 are inclusive bounds, exactly.
    if 5 * width < 2 * height or 2 * width > 5 * height:
        ratio = width / height
        shown = f"{ratio:.2f}"
        if _MIN_RATIO <= float(shown) <= _MAX_RATIO:  # rounding must not hide the excess
            shown = f"{ratio:.6g}"
        raise InvalidImage(
            f"aspect ratio {shown} (width/height {width}x{height}) is outside "
            f"{_MIN_RATIO} to {_MAX_RATIO}",
            hint="Crop the image to a ratio between 2:5 and 5:2.",
        )
