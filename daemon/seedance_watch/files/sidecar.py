r"""The sidecar schema, the request it renders to, and the drop hint (docs/design.md, "The
sidecar").

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
import re
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Final

import structlog
import yaml
from pydantic import ValidationError

from seedance_watch.core.models import (
    DEFAULT_MODELS,
    KIND_NAMES,
    MODELS,
    OPTION_KEYS,
    OPTION_UNION,
    IntRange,
    Kind,
    ModelTable,
)
from seedance_watch.core.names import IMAGE_SUFFIXES, is_ignored
from seedance_watch.core.options import COMMAND_ORDER, GenerationOptions
from seedance_watch.core.stability import DropHint
from seedance_watch.errors import InvalidSidecar
from seedance_watch.files.yaml12 import Yaml12Loader

__all__ = [
    "MAX_REFERENCES",
    "MODES",
    "PRESET_KEYS",
    "PROMPT_MAX_CHARS",
    "SIDECAR_KEYS",
    "SIDECAR_MAX_BYTES",
    "Preset",
    "Request",
    "Sidecar",
    "bare_name_fault",
    "build_request",
    "check_preset",
    "check_sidecar",
    "normalize_line_breaks",
    "parse_sidecar",
    "sidecar_hint",
    "sidecar_problems",
    "unknown_model_message",
]

log = structlog.get_logger(__name__)

SIDECAR_KEYS: Final = (
    "prompt",
    "model",
    "mode",
    "last_frame",
    "references",
    "priority",
    *OPTION_KEYS,
)
#: What a folder preset may hold (docs/design.md, "Folder presets"): the sidecar's keys
#: but those of one drop -- its prompt, and what pairs its files (mode, last_frame,
#: references), which the inbox reads from the sidecar itself.
PRESET_KEYS: Final = ("model", "priority", *OPTION_KEYS)
#: Where a value came from when no sidecar or preset set it (``Request.origins``).
CONFIG_DEFAULTS: Final = "config defaults"
#: ``priority:`` takes a whole number in this range (higher goes to the gateway first).
PRIORITY_RANGE: Final = (-1000, 1000)
#: How many images a reference drop may list.
MAX_REFERENCES: Final = 9
#: What ``mode:`` takes: ``image`` (the default: an image drop, with or without a
#: ``last_frame``) or ``text`` (the sidecar alone is the drop).
MODES: Final = ("image", "text")
#: The largest sidecar: a larger one is invalid_sidecar, never cut (docs/design.md,
#: "Keys").  Readers read one byte more, so that a larger file is seen as one.
SIDECAR_MAX_BYTES: Final = 1 << 20

PROMPT_MAX_CHARS: Final = 2000
# Anything the gateway would parse as a command: two dashes, then a letter.
_TEXT_COMMAND = re.compile(r"--([^\W\d_][\w-]*)")
# What YAML 1.1 (and so PyYAML's reader) counts as a line break besides \r and \n.
_UNICODE_BREAKS = re.compile("[\x85\u2028\u2029]")
# A lone surrogate, which a double-quoted "\ud83d" escape gives: not a character.
_SURROGATE = re.compile("[\ud800-\udfff]")
# Every line break a prompt may hold, each to become one "\n".
_LINE_BREAK = re.compile("\r\n|[\r\x85\u2028\u2029]")

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlevel, _repr.maxlist, _repr.maxdict = 2, 4, 4


@dataclass(frozen=True)
class Sidecar:
    """A validated sidecar: the prompt, an optional model, options not yet merged.

    ``mode`` is ``image`` or ``text``; ``last_frame`` the bare file name of the end
    image; ``references`` the bare names of one to nine reference images, in order.
    The three exclude one another.
    """

    prompt: str
    model: str | None
    options: GenerationOptions
    mode: str = "image"
    #: Higher goes to the gateway first among waiting jobs (None: not set here, 0 unless
    #: a folder preset says otherwise).
    priority: int | None = None
    last_frame: str | None = None
    references: tuple[str, ...] = ()

    @property
    def kind(self) -> Kind:
        """The kind of drop: ``text`` (mode: text), ``reference`` (reference images),
        ``frames`` (a last frame) or ``image``."""
        if self.mode == "text":
            return "text"
        if self.references:
            return "reference"
        return "frames" if self.last_frame is not None else "image"


@dataclass(frozen=True)
class Preset:
    """A validated folder preset (``.seedance-watch.yaml``): defaults for the drops in
    its folder and below.  ``path`` names it in messages (relative to the inbox)."""

    path: str
    model: str | None = None
    priority: int | None = None
    options: GenerationOptions = field(default_factory=GenerationOptions)


@dataclass(frozen=True)
class Request:
    """What is sent for one job.

    ``options`` are the effective options (the sidecar's over the defaults the model
    takes).  ``family`` is the model's request dialect: ``1.0`` sends them as text
    commands, so ``text`` is the prompt plus its commands; ``2`` sends them as body
    keys, so ``text`` is the prompt alone.
    """

    model: str
    prompt: str
    text: str
    options: GenerationOptions
    kind: Kind = "image"
    family: str = "1.0"
    priority: int = 0
    #: Where each effective value came from, for ``validate``: ``model``, ``priority``
    #: and each set option → ``sidecar``, a preset's path, a config key (the model) or
    #: :data:`CONFIG_DEFAULTS`.
    origins: Mapping[str, str] = field(default_factory=dict)

    @property
    def body_options(self) -> dict[str, Any] | None:
        """The options a Seedance 2 request sends as keys (None for Seedance 1.0)."""
        return self.options.body_keys() if self.family == "2" else None


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
    if sidecar.model is not None and sidecar.model not in MODELS:
        log.warning("sidecar.unknown_model", model=sidecar.model, known=sorted(MODELS))
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


def build_request(
    sidecar: Sidecar,
    *,
    defaults: GenerationOptions,
    models: Mapping[Kind, str] = DEFAULT_MODELS,
    table: ModelTable = MODELS,
    presets: Sequence[Preset] = (),
) -> Request:
    """The effective request: the sidecar's keys over its folder presets' over the
    ``defaults`` the model takes (docs/design.md, "Folder presets").

    ``presets`` run from the inbox's top folder to the drop's own; the nearest wins
    key by key.  The model is the sidecar's, else the nearest preset's, else
    ``models[kind]`` (``gateway.model``, ``text_model``, ``frames_model`` or
    ``reference_model``).  A known model that is retired, that does not offer the
    drop's kind, or that does not take one of the sidecar's own options raises
    :class:`InvalidSidecar` naming the key (and the preset file, for a preset's
    model or option); a config default it does not take is left out, and so is a
    preset's option when the sidecar chose the model itself (the sidecar wins).  An
    unknown model is the gateway's to judge: it is sent in the Seedance 1.0
    dialect, which only image and text drops have.
    """
    kind = sidecar.kind
    origins: dict[str, str] = {}
    preset_model = next((p for p in reversed(presets) if p.model is not None), None)
    if sidecar.model is not None:
        model, origins["model"] = sidecar.model, "sidecar"
    elif preset_model is not None:
        assert preset_model.model is not None
        model, origins["model"] = preset_model.model, preset_model.path
    else:
        model, origins["model"] = models[kind], MODEL_SETTINGS[kind]
    problem = _kind_problem(model, kind, from_sidecar=sidecar.model is not None, table=table)
    if problem is not None:
        if sidecar.model is None and preset_model is not None:
            raise _in_preset(preset_model.path, problem)
        raise problem
    # The presets' options, nearest first, each key from the nearest preset setting it.
    layered = GenerationOptions()
    for preset in presets:
        layered = preset.options.over(layered)
        for key in preset.options.set_options():
            origins[key] = preset.path
    for key in sidecar.options.set_options():
        origins[key] = "sidecar"
    row = table.get(model)
    if row is None:
        if kind not in ("image", "text"):
            use = ", ".join(table.models_for(kind))
            raise _problem(
                f"model: {_show(model)} is not a model the daemon knows, and a "
                f"{KIND_NAMES[kind]} drop needs a Seedance 2 model from its table; use "
                f"one of {use}",
                "model",
            )
        options = sidecar.options.over(layered.over(defaults))
        family = "1.0"
    else:
        refusals = sidecar.options.refusals(row)
        if refusals:
            first_key = refusals[0][0]
            message = "; ".join(f"{key}: {why}" for key, why in refusals)
            raise _problem(message, first_key, "Remove the line, or choose a model that takes it.")
        from_presets = layered.model_copy(update=sidecar.options.set_options())
        refused = [(k, why) for k, why in from_presets.refusals(row) if origins[k] != "sidecar"]
        if refused and sidecar.model is None:
            path = origins[refused[0][0]]  # the first preset's keys, in one message
            mine = [(k, why) for k, why in refused if origins[k] == path]
            message = "; ".join(f"{k}: {why}" for k, why in mine)
            hint = "Remove the line from the preset, or set a model that takes it."
            raise _in_preset(path, _problem(message, mine[0][0], hint))
        options = sidecar.options.over(layered.fitted(row).over(defaults.fitted(row)))
        family = row.family
    for key in options.set_options():
        origins.setdefault(key, CONFIG_DEFAULTS)
    priority = sidecar.priority
    origins["priority"] = "sidecar"
    if priority is None:
        preset_priority = next((p for p in reversed(presets) if p.priority is not None), None)
        if preset_priority is not None:
            priority, origins["priority"] = preset_priority.priority, preset_priority.path
        else:
            priority, origins["priority"] = 0, "default"
    if family == "2":
        text = sidecar.prompt
    else:
        commands = options.commands()
        text = f"{sidecar.prompt} {commands}" if commands else sidecar.prompt
    return Request(
        model=model,
        prompt=sidecar.prompt,
        text=text,
        options=options,
        kind=kind,
        family=family,
        priority=priority or 0,
        origins={k: origins[k] for k in ("model", *options.set_options(), "priority")},
    )


def _in_preset(path: str, problem: InvalidSidecar) -> InvalidSidecar:
    """``problem`` of a value a folder preset set, naming the preset file."""
    return InvalidSidecar(f"{path}: {problem.message}", key=problem.key, hint=problem.hint)


def sidecar_hint(data: bytes, sidecar_name: str) -> DropHint:
    """What a sidecar says about the files of its drop, for pairing; never raises.

    ``alone`` when a ``mode:`` key holds anything but ``image`` (so ``mode: text``
    is a drop of its own, and a bad mode fails at once instead of waiting for an
    image); else, with a ``references:`` key, ``alone`` too (a reference drop has
    no image of the sidecar's name) and the images it lists, when the list is one
    intake accepts and there is no ``last_frame:`` beside it (else none, so the
    drop fails at once); else ``last_frame`` when it names a valid bare image name.
    A name whose stem is the sidecar's own is never claimed (intake refuses it).
    Bytes that are not a readable YAML mapping give the default hint, and intake
    reports them.

    A sidecar over :data:`SIDECAR_MAX_BYTES` is ``alone``: intake refuses it, so its
    drop fails at once instead of waiting for files.  The YAML is read as a stream
    of parser events (libyaml's when present), never built into values, so even a
    large sidecar costs little.
    """
    if len(data) > SIDECAR_MAX_BYTES:
        return DropHint(alone=True)
    try:
        return _hint(data, PurePosixPath(sidecar_name).stem)
    except Exception:  # anything a parser raises on crafted input: no hint
        return DropHint()


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


def _compose(data: bytes, what: str) -> tuple[yaml.Node | None, list[InvalidSidecar]]:
    """The YAML document's root node, or the problem that stops the reading (``what``:
    "sidecar" or "preset", for the messages)."""
    if len(data) > SIDECAR_MAX_BYTES:
        # Cutting it would drop whatever follows the cut: a key, a fix, a typo.
        message = (
            f"the {what} is over {SIDECAR_MAX_BYTES} bytes (1 MiB), the limit; "
            "nothing in it was used"
        )
        hint = (
            "A sidecar holds a prompt and a few keys: remove what it does not need."
            if what == "sidecar"
            else f"A {what} holds a few keys: remove what it does not need."
        )
        return None, [_problem(message, None, hint)]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        message = (
            f"the {what} is not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line}, "
            f"column {column} cannot be decoded"
        )
        return None, [_problem(message, None, f"Save the {what} as UTF-8 text.")]

    # One char for one, so positions in messages stay right; see the module docstring.
    text = _UNICODE_BREAKS.sub("\n", text)
    try:
        root = yaml.compose(text, Loader=Yaml12Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        said = exc.problem or exc.context or "invalid YAML"
        return None, [_problem(f"YAML syntax error at {_at(mark)}: {said}", None)]
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        line, column = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        said = f"character U+{code:04X} is not allowed in YAML"
        return None, [_problem(f"YAML syntax error at line {line}, column {column}: {said}", None)]
    except (yaml.YAMLError, RecursionError) as exc:
        return None, [_problem(f"YAML syntax error: {type(exc).__name__}", None)]

    return root, []


def _validate(data: bytes, *, strict_model: bool) -> tuple[Sidecar | None, list[InvalidSidecar]]:
    root, problems = _compose(data, "sidecar")
    if problems:
        return None, problems
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


def _read_keys(
    root: yaml.MappingNode, allowed: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, yaml.Node], list[InvalidSidecar]]:
    """Each top-level key's checked value, the key nodes seen, and every problem."""
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
        if key not in allowed:
            problems.append(_unknown_key(key) if key not in SIDECAR_KEYS else _not_in_preset(key))
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
            # A file name is kept exactly (the check refuses spaces around it).
            strip = isinstance(value, str) and key not in ("last_frame", "references")
            values[key] = value.strip() if strip else value
    return values, seen, problems


def _not_in_preset(key: str) -> InvalidSidecar:
    message = (
        f"{key}: belongs in each drop's sidecar, not in a folder preset (a preset sets "
        f"defaults for every drop below it; it may hold {', '.join(PRESET_KEYS)})"
    )
    return _problem(message, key, "Move the line into the sidecars that need it.")


def check_preset(
    data: bytes, path: str, *, strict_model: bool = False
) -> tuple[Preset | None, list[InvalidSidecar]]:
    """A folder preset's bytes checked with the sidecar's rules (docs/design.md, "Folder
    presets"): the preset (None if invalid) and every problem.  ``path`` names the
    file in the preset (its messages do not: the caller prefixes them)."""
    root, problems = _compose(data, "preset")
    if problems:
        return None, problems
    if root is None:
        return Preset(path), []  # an empty preset sets nothing
    if not isinstance(root, yaml.MappingNode):
        kind = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
        message = f"the preset must be a YAML mapping of keys (ratio: ...), not {kind}"
        return None, [_problem(message, None)]
    values, _, problems = _read_keys(root, PRESET_KEYS)
    model = values.get("model")
    if strict_model and model is not None and model not in MODELS:
        problems.append(_problem(unknown_model_message(model), "model"))
    if problems:
        return None, problems
    options = GenerationOptions.model_validate(
        {k: v for k, v in values.items() if k in OPTION_KEYS}
    )
    return Preset(path, model=model, priority=values.get("priority"), options=options), []


def _validate_mapping(
    root: yaml.MappingNode, *, strict_model: bool
) -> tuple[Sidecar | None, list[InvalidSidecar]]:
    values, seen, problems = _read_keys(root, SIDECAR_KEYS)
    if "prompt" not in seen:
        problems.append(_problem("prompt is required and must be non-empty text", "prompt"))

    mode = values.get("mode", "image")
    kinds: list[str] = [k for k in ("last_frame", "references") if k in seen]
    if mode == "text":
        kinds.insert(0, "mode")
    if len(kinds) > 1:
        said = {"mode": "mode: text", "last_frame": "last_frame", "references": "references"}
        message = (
            f"{said[kinds[1]]}: {' and '.join(said[k] for k in kinds)} make different kinds "
            "of drop (text to video, first and last frame, reference images); keep one"
        )
        problems.append(_problem(message, kinds[1]))
    last_frame = values.get("last_frame")

    model = values.get("model")
    if strict_model and model is not None and model not in MODELS:
        problems.append(_problem(unknown_model_message(model), "model"))
    if problems:
        return None, problems

    options = {k: v for k, v in values.items() if k in OPTION_KEYS}
    try:
        generation = GenerationOptions.model_validate(options)
    except ValidationError as exc:  # the checks above should make this unreachable
        return None, [_problem(f"invalid options: {exc.errors()[0]['msg']}", None)]
    sidecar = Sidecar(
        prompt=values["prompt"],
        model=model,
        options=generation,
        mode=mode,
        last_frame=last_frame,
        references=tuple(values.get("references", ())),
        priority=values.get("priority"),
    )
    # The sidecar's own model must offer its kind; the default models are checked
    # by build_request (they are the config's).
    refused = None if model is None else _kind_problem(model, sidecar.kind, from_sidecar=True)
    if refused is not None:
        return None, [refused]
    return sidecar, []


def normalize_line_breaks(text: str) -> str:
    r"""``text`` with each line break (``\r\n``, ``\r``, U+0085, U+2028, U+2029) as ``\n``."""
    return _LINE_BREAK.sub("\n", text)


def unknown_model_message(model: str) -> str:
    """What a strict check says about a model the daemon does not know."""
    known = ", ".join(row.model for row in MODELS.live())
    return f"model: {_show(model)} is not a known model; use one of {known}"


#: The config key that names each kind's model.
MODEL_SETTINGS: Final[Mapping[Kind, str]] = {
    "image": "gateway.model",
    "text": "gateway.text_model",
    "frames": "gateway.frames_model",
    "reference": "gateway.reference_model",
}


def _kind_problem(
    model: str, kind: Kind, *, from_sidecar: bool, table: ModelTable = MODELS
) -> InvalidSidecar | None:
    """The problem of a known ``model`` that is retired or does not offer ``kind``."""
    refusal = table.refusal(model, kind)
    if refusal is None:
        return None
    message = f"model: {refusal}"
    if not from_sidecar:
        message += f" ({model} is {MODEL_SETTINGS[kind]}: the sidecar names no model)"
    row = table[model]
    if row.retired and row.replacement is not None:
        hint = (
            f"Set model: {row.replacement} (or remove the line for the default); "
            "`seedance-watch models` lists the models of today."
        )
    else:
        hint = (
            f"Set model: to one of {', '.join(table.models_for(kind))} "
            f"for a {KIND_NAMES[kind]} drop."
        )
    return _problem(message, "model", hint)


_NAME_MAX_BYTES: Final = 255  # the longest file name Linux, macOS and Windows allow


def bare_name_fault(value: object) -> str | None:
    """What is wrong with ``value`` as a ``last_frame``, or None for a bare image name.

    A bare name (no folder part, not ``.``/``..``), of an image the inbox would
    watch (not hidden, not a partial download), with one of the image suffixes.
    """
    if not isinstance(value, str):
        return "is not a file name; write the name of an image file"
    if not value:
        return "is empty; write the name of an image file"
    if value != value.strip():
        return "has spaces around it; write the file name alone"
    if "/" in value or "\\" in value or value in (".", ".."):
        return "is not a bare file name; the image must be in the sidecar's own folder"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "contains a control character; no file name holds one"
    if len(value.encode("utf-8", "surrogatepass")) > _NAME_MAX_BYTES:
        return f"is too long for a file name (over {_NAME_MAX_BYTES} bytes)"
    if is_ignored(value):
        return "is a hidden or partial-download name, which the inbox ignores"
    if PurePosixPath(value).suffix.lower() not in IMAGE_SUFFIXES:
        return f"is not an image file name; use one of {', '.join(sorted(IMAGE_SUFFIXES))}"
    return None


def _unreadable_value(key: str, node: yaml.Node, exc: Exception) -> InvalidSidecar:
    where = _at(node.start_mark)
    if isinstance(exc, ValueError):  # int() refuses numbers of thousands of digits
        message = f"{key}: the number at {where} has too many digits"
        spec = OPTION_UNION.get(key)
        if isinstance(spec, IntRange):
            message += f"; use an integer from {spec.low} to {spec.high}"
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
    for text in value if isinstance(value, list) else (value,):
        found = _SURROGATE.search(text) if isinstance(text, str) else None
        if found is not None:
            # A "\ud83d" escape in double quotes: no character, and no UTF-8 for the
            # gateway, the ledger or a file name.
            return _problem(
                f"{key}: holds U+{ord(found.group()):04X}, half of a UTF-16 surrogate pair, "
                "which is not a character",
                key,
                "Write the character itself, or its \\U escape (\\U0001F600).",
            )
    if key == "prompt":
        return _check_prompt(value)
    if key == "model":
        if isinstance(value, str) and value.strip():
            return None
        example = DEFAULT_MODELS["image"]
        return _problem(
            f"model: {_show(value)} is not allowed; use a model id such as {example}", key
        )
    if key == "priority":
        low, high = PRIORITY_RANGE
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return None
        return _problem(
            f"priority: {_show(value)} is not allowed; use a whole number from {low} to {high} "
            "(higher goes to the gateway first; the default is 0)",
            key,
        )
    if key == "mode":
        if isinstance(value, str) and value in MODES:
            return None
        return _problem(f"mode: {_show(value)} is not allowed; use image or text", key)
    if key == "last_frame":
        fault = bare_name_fault(value)
        if fault is None:
            return None
        hint = "Name an image in the sidecar's own folder, such as beach-end.png."
        return _problem(f"last_frame: {_show(value)} {fault}", key, hint)
    if key == "references":
        return _check_references(value)
    return _check_option(key, value)


def _check_option(key: str, value: Any) -> InvalidSidecar | None:
    """An option's value against what any live model takes (:data:`OPTION_UNION`);
    whether the drop's own model takes it is :func:`build_request`'s question."""
    spec = OPTION_UNION.get(key)
    if spec is None:
        return _problem(f"{key}: no model the daemon knows takes {key} today", key)
    if isinstance(spec, IntRange):
        wanted = f"use an integer from {spec.low} to {spec.high}"
        if spec.auto:
            if value == "auto":
                return None
            wanted += ", or auto (Seedance 2: the model picks)"
        if not isinstance(value, int) or isinstance(value, bool):
            quoted = " (without quotes)" if isinstance(value, str) else ""
            return _problem(f"{key}: {_show(value)} is not an integer; {wanted}{quoted}", key)
        if not spec.low <= value <= spec.high:
            return _problem(f"{key}: {_show(value)} is out of range; {wanted}", key)
        return None
    if spec.allows(value):
        return None
    if all(isinstance(v, bool) for v in spec.values):  # camerafixed, watermark...
        return _problem(f"{key}: {_show(value)} is not allowed; use {spec.describe()}", key)
    allowed = ", ".join(str(v) for v in spec.values)
    return _problem(f"{key}: {_show(value)} is not allowed; use one of {allowed}", key)


def _check_references(value: Any) -> InvalidSidecar | None:
    """``references``: a list of 1 to :data:`MAX_REFERENCES` distinct bare image names."""
    hint = "List the images in the sidecar's own folder: references: [shoe.jpg, shoe-2.jpg]"
    if not isinstance(value, list):
        return _problem(
            f"references: {_show(value)} is not a list of file names", "references", hint
        )
    if not 1 <= len(value) <= MAX_REFERENCES:
        message = f"references: lists {len(value)} images; list 1 to {MAX_REFERENCES}"
        return _problem(message, "references", hint)
    for index, item in enumerate(value, 1):
        fault = bare_name_fault(item)
        if fault is not None:
            return _problem(f"references: item {index} {_show(item)} {fault}", "references", hint)
    doubles = sorted({name for name in value if value.count(name) > 1})
    if doubles:
        message = f"references: {', '.join(doubles)} is listed twice; list each image once"
        return _problem(message, "references", hint)
    return None


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


# --- the drop hint -----------------------------------------------------------------------

# libyaml's parser when PyYAML has it (as its wheels do): events at C speed.
_EVENT_LOADER: Final = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
# Nesting deeper than this is refused (a sidecar's values are scalars): pure PyYAML
# takes quadratic time over deep flow nesting, and intake's composer recurses.
_MAX_DEPTH: Final = 100
# Tags under which a scalar is text ("!" is a quoted scalar's, None a plain one's).
_TEXT_TAGS: Final = (None, "!", "tag:yaml.org,2002:str")
# Tags under which a collection is a plain sequence.
_SEQ_TAGS: Final = (None, "!", "tag:yaml.org,2002:seq")


def _hint(data: bytes, own_stem: str) -> DropHint:
    """:func:`sidecar_hint` without its guard: walks the top level of the mapping.

    A plain scalar that passes :func:`bare_name_fault` ends in an image suffix, so
    no YAML 1.2 implicit type (null, bool, int, float) can claim it: it is text.
    An alias stands for the text scalar it names, as it does when intake reads it.
    ``references`` is a flow or block sequence of such scalars.
    """
    text = _UNICODE_BREAKS.sub("\n", data.decode("utf-8-sig"))
    events = yaml.parse(text, Loader=_EVENT_LOADER)
    found: dict[str, list[str | None]] = {"mode": [], "last_frame": []}
    # One entry per references key: its items (None for one that is no text), or
    # None when the value is not a plain sequence.
    lists: list[list[str | None] | None] = []
    items: list[str | None] | None = None  # the sequence being read
    anchors: dict[str, str | None] = {}
    depth, documents, at_key, key = 0, 0, True, None
    for event in events:
        if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            if isinstance(event, yaml.AliasEvent):
                if event.anchor not in anchors:  # intake's composer refuses it
                    return DropHint()
            else:  # a collection's anchor is known too, standing for no text
                anchors[event.anchor] = _text_of(event, anchors)
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:  # a sidecar is one document; intake refuses more
                return DropHint()
            continue
        if isinstance(event, yaml.StreamStartEvent | yaml.StreamEndEvent | yaml.DocumentEndEvent):
            continue
        if depth == 0 and not isinstance(event, yaml.MappingStartEvent):
            return DropHint()  # a list, a single value or an empty document
        if depth == 1:
            if at_key:
                key = _text_of(event, anchors)
            elif key == "references":
                sequence = isinstance(event, yaml.SequenceStartEvent) and event.tag in _SEQ_TAGS
                items = [] if sequence else None
                lists.append(items)
            elif key in found:
                found[key].append(_text_of(event, anchors))
            if not isinstance(event, yaml.MappingEndEvent):
                at_key = not at_key
        elif depth == 2 and items is not None:
            # An item of the list, or its end (a nested collection's end is deeper).
            if isinstance(event, yaml.SequenceEndEvent):
                items = None
            else:
                items.append(_text_of(event, anchors))
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > _MAX_DEPTH:  # never a valid sidecar; PyYAML's scanner would be slow
                return DropHint()
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1

    # A duplicate key is intake's to refuse; any mode but image fails sooner alone.
    if any(mode != "image" for mode in found["mode"]):
        return DropHint(alone=True)
    if lists:
        # A list intake refuses, or another kind beside it: claim nothing, fail at once.
        listed = lists[0]
        if len(lists) > 1 or found["last_frame"] or listed is None:
            return DropHint(alone=True)
        if _check_references(listed) is not None:
            return DropHint(alone=True)
        others = (n for n in listed if n is not None and PurePosixPath(n).stem != own_stem)
        return DropHint(alone=True, references=tuple(others))
    name = found["last_frame"][0] if found["last_frame"] else None
    if name is None or bare_name_fault(name) is not None or PurePosixPath(name).stem == own_stem:
        return DropHint()
    return DropHint(last_frame=name)


def _text_of(event: yaml.Event, anchors: Mapping[str, str | None]) -> str | None:
    """A node's text when it is a text scalar, or an alias of one; else None."""
    if isinstance(event, yaml.AliasEvent):
        return anchors.get(event.anchor or "")
    if isinstance(event, yaml.ScalarEvent) and event.tag in _TEXT_TAGS:
        return event.value
    return None
