"""The sidecar schema: every bad sidecar is refused with a report a person can act on."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from structlog.testing import capture_logs

from seedance_watch.config import GatewayConfig
from seedance_watch.core.models import (
    DEFAULT_MODELS,
    KIND_NAMES,
    MODELS,
    OPTION_UNION,
    Choice,
    IntRange,
    Kind,
    ModelTable,
    kind_refusal,
)
from seedance_watch.core.names import IMAGE_SUFFIXES
from seedance_watch.core.options import GenerationOptions
from seedance_watch.core.stability import DropHint
from seedance_watch.errors import InvalidSidecar
from seedance_watch.files import sidecar as sidecar_module
from seedance_watch.files.sidecar import (
    SIDECAR_KEYS,
    Sidecar,
    bare_name_fault,
    build_request,
    check_sidecar,
    parse_sidecar,
    sidecar_hint,
    sidecar_problems,
)

DEFAULTS = GenerationOptions(resolution="720p", duration=5, camerafixed=False)
PRO = "seedance-1-0-pro-250528"
PRO_FAST = "seedance-1-0-pro-fast-251015"
FAST2 = "seedance-2-0-fast"
LITE = "seedance-1-0-lite-i2v-250428"  # switched off on 2026-05-13
T2V = "seedance-1-0-lite-t2v-250428"  # likewise
LIVE = [row.model for row in MODELS.live()]
POSITION = re.compile(r"line \d+, column \d+")

# (sidecar text, expected key, fragments the message must contain)
BAD_SIDECARS: list[tuple[str, str | None, list[str]]] = [
    ("prompt: [unclosed\n", None, ["YAML syntax error at line 2, column 1"]),
    ('prompt: "a"\n  bad: indent\n', None, ["YAML syntax error at line 2, column 3"]),
    ("- a\n- b\n", None, ["must be a YAML mapping", "not a list"]),
    ("just a sentence\n", None, ["must be a YAML mapping"]),
    ("", "prompt", ["empty", "prompt"]),
    ("resolution: 720p\n", "prompt", ["prompt is required and must be non-empty text"]),
    ('prompt: ""\n', "prompt", ["prompt is required and must be non-empty text"]),
    ('prompt: "   "\n', "prompt", ["prompt is required and must be non-empty text"]),
    ("prompt:\n", "prompt", ["prompt is required and must be non-empty text"]),
    ("prompt: 42\n", "prompt", ["prompt is required and must be non-empty text", "42"]),
    ("prompt: [a, b]\n", "prompt", ["non-empty text", "['a', 'b']"]),
    (f"prompt: {'x' * 2001}\n", "prompt", ["2001 characters", "limit is 2000"]),
    (
        'prompt: "clouds --ratio 16:9"\n',
        "prompt",
        ["prompt contains a text command '--ratio'; set ratio: in the sidecar instead"],
    ),
    ('prompt: "clouds --fps 24"\n', "prompt", ["'--fps'"]),
    ("prompt: x\nresolutoin: 720p\n", "resolutoin", ["unknown key 'resolutoin'", "'resolution'"]),
    ("prompt: x\nPrompt: y\n", "Prompt", ["unknown key 'Prompt' (did you mean 'prompt'?)"]),
    ("prompt: x\nfoo: 1\n", "foo", ["unknown key 'foo'", "resolution", "watermark"]),
    ("prompt: x\n1: 2\n", None, ["keys must be text", "line 2, column 1"]),
    ("prompt: x\nprompt: y\n", "prompt", ["duplicate key 'prompt'", "line 2"]),
    ("prompt: x\nresolution: 4k\n", "resolution", ["resolution: '4k' is not allowed; use one of"]),
    ("prompt: x\nresolution: 720\n", "resolution", ["720", "480p, 720p, 1080p"]),
    ("prompt: x\nratio: 5:4\n", "ratio", ["ratio: '5:4' is not allowed", "21:9, adaptive"]),
    ("prompt: x\nratio: 1.78\n", "ratio", ["ratio: 1.78 is not allowed"]),
    (
        "prompt: x\nduration: 20\n",
        "duration",
        ["duration: 20 is out of range; use an integer from 2 to 15, or auto"],
    ),
    ("prompt: x\nduration: 1\n", "duration", ["duration: 1 is out of range"]),
    ('prompt: x\nduration: "5"\n', "duration", ["duration: '5' is not an integer", "quotes"]),
    ("prompt: x\nduration: 5.0\n", "duration", ["duration: 5.0 is not an integer"]),
    ("prompt: x\nduration: true\n", "duration", ["duration: true is not an integer"]),
    ("prompt: x\nduration:\n", "duration", ["duration: null is not an integer"]),
    (
        "prompt: x\nduration: " + "9" * 5000 + "\n",
        "duration",
        ["too many digits", "2 to 15"],
    ),
    ("prompt: x\nseed: -2\n", "seed", ["seed: -2 is out of range", "-1 to 4294967295"]),
    ("prompt: x\nseed: 4294967296\n", "seed", ["seed: 4294967296 is out of range"]),
    (
        "prompt: x\ncamerafixed: yes\n",
        "camerafixed",
        ["camerafixed: 'yes' is not allowed", "true or false"],
    ),
    ("prompt: x\nwatermark: 0\n", "watermark", ["watermark: 0 is not allowed; use true or false"]),
    ("prompt: x\nmodel: 42\n", "model", ["model: 42 is not allowed"]),
    ("prompt: x\npriority: high\n", "priority", ["priority: 'high' is not allowed", "-1000"]),
    ("prompt: x\npriority: 2000\n", "priority", ["priority: 2000 is not allowed", "1000"]),
    ("prompt: x\npriority: true\n", "priority", ["priority: true is not allowed"]),
    ('prompt: x\nmodel: " "\n', "model", ["model: ' ' is not allowed"]),
]


@pytest.mark.parametrize(("text", "key", "fragments"), BAD_SIDECARS)
def test_bad_sidecar_is_refused_naming_key_and_value(
    text: str, key: str | None, fragments: list[str]
) -> None:
    """Each bad sidecar raises InvalidSidecar whose key and message name what is wrong."""
    with pytest.raises(InvalidSidecar) as info:
        parse_sidecar(text.encode())
    assert info.value.key == key
    assert info.value.code == "invalid_sidecar"
    for fragment in fragments:
        assert fragment in info.value.message


def test_long_values_are_truncated_in_messages() -> None:
    """A huge wrong value is shown shortened, so the report stays one readable line."""
    problems = sidecar_problems(f"prompt: x\nratio: {'y' * 500}\n".encode())
    assert len(problems) == 1
    assert len(problems[0].message) < 200
    assert "ratio: 'yyy" in problems[0].message


def test_invalid_utf8_is_refused_with_position() -> None:
    """Bytes that are not UTF-8 are refused, naming the byte and where it is."""
    with pytest.raises(InvalidSidecar) as info:
        parse_sidecar(b"prompt: ok\nmodel: caf\xe9\n")
    assert "not UTF-8" in info.value.message
    assert "0xe9 at line 2, column 11" in info.value.message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (b'prompt: "caf\\udce9"\n', "prompt"),
        (b'prompt: ok\nmodel: "m\\ud83d"\n', "model"),
        (b'prompt: ok\nreferences: ["a\\udce9.jpg"]\n', "references"),
    ],
)
def test_a_lone_surrogate_escape_is_refused(text: bytes, key: str) -> None:
    """A double-quoted ``\\ud83d`` escape gives half a surrogate pair, no character: it
    is refused naming the key, instead of crashing whatever encodes it later (the job
    id, the content key, the gateway's JSON body)."""
    with pytest.raises(InvalidSidecar) as info:
        parse_sidecar(text)
    assert info.value.key == key and "surrogate" in info.value.message
    assert parse_sidecar(b'prompt: "\\U0001F600 is fine"\n').prompt == "\U0001f600 is fine"


def test_control_character_is_a_syntax_error_with_position() -> None:
    """A NUL in the file is reported as a YAML error at its line and column."""
    with pytest.raises(InvalidSidecar) as info:
        parse_sidecar(b"prompt: ok\nseed: 1\x00\n")
    assert info.value.message.startswith("YAML syntax error at line 2, column 8")


def test_byte_order_mark_is_accepted() -> None:
    """A UTF-8 BOM (as some Windows editors write) does not break the sidecar."""
    sidecar = parse_sidecar("\ufeffprompt: café au lait\n".encode())
    assert sidecar.prompt == "café au lait"


def test_sidecar_problems_returns_every_problem() -> None:
    """sidecar_problems lists all problems in document order; parse_sidecar joins them."""
    text = b"resolutoin: 720p\nduration: 20\ncamerafixed: yes\n"
    problems = sidecar_problems(text)
    assert [p.key for p in problems] == ["resolutoin", "duration", "camerafixed", "prompt"]
    with pytest.raises(InvalidSidecar) as info:
        parse_sidecar(text)
    assert info.value.key == "resolutoin"
    assert info.value.message == "; ".join(p.message for p in problems)


def test_valid_sidecar_has_no_problems() -> None:
    """A valid sidecar yields an empty problem list."""
    assert sidecar_problems(b"prompt: clouds\n") == []


def test_unquoted_ratio_is_the_string_a_person_means() -> None:
    """ratio: 16:9 unquoted is the string "16:9" (not YAML 1.1's sexagesimal 969)."""
    assert parse_sidecar(b"prompt: clouds\nratio: 16:9\n").options.ratio == "16:9"


def test_prompt_is_stripped_and_model_kept() -> None:
    """The prompt loses surrounding blank space; a known model is kept as written."""
    sidecar = parse_sidecar(f"prompt: |\n  clouds drift\nmodel: {PRO}\n".encode())
    assert sidecar == Sidecar(prompt="clouds drift", model=PRO, options=GenerationOptions())


def test_unknown_model_is_a_warning() -> None:
    """An unknown model is accepted and logged as sidecar.unknown_model."""
    with capture_logs() as logs:
        sidecar = parse_sidecar(b"prompt: x\nmodel: seedance-2-0-new\n")
    assert sidecar.model == "seedance-2-0-new"
    events = [e for e in logs if e["event"] == "sidecar.unknown_model"]
    assert events and events[0]["model"] == "seedance-2-0-new"
    assert events[0]["log_level"] == "warning"


def test_unknown_model_is_refused_in_strict_mode() -> None:
    """With strict_model an unknown model is an error naming the known ones."""
    with pytest.raises(InvalidSidecar) as info:
        parse_sidecar(b"prompt: x\nmodel: seedance-2-0-new\n", strict_model=True)
    assert info.value.key == "model"
    assert "'seedance-2-0-new'" in info.value.message
    assert all(model in info.value.message for model in LIVE)
    assert LITE not in info.value.message  # a retired model is never suggested


KIND_LINES = {
    "image": "",
    "frames": "last_frame: end.png\n",
    "text": "mode: text\n",
    "reference": "references: [a.png, b.png]\n",
}


@pytest.mark.parametrize(
    ("model", "kind"), sorted((row.model, k) for row in MODELS.live() for k in row.kinds)
)
def test_known_models_pass_strict_mode(model: str, kind: Kind) -> None:
    """Every live model is known, even in strict mode, for each kind it offers."""
    text = f"prompt: x\nmodel: {model}\n{KIND_LINES[kind]}".encode()
    sidecar = parse_sidecar(text, strict_model=True)
    assert (sidecar.model, sidecar.kind) == (model, kind)


def test_every_option_is_parsed() -> None:
    """All option keys are read with their YAML 1.2 types."""
    text = (
        b"prompt: clouds\nresolution: 1080p\nratio: adaptive\nduration: 12\n"
        b"camerafixed: true\nseed: -1\nwatermark: false\ngenerate_audio: false\n"
    )
    assert parse_sidecar(text).options == GenerationOptions(
        resolution="1080p",
        ratio="adaptive",
        duration=12,
        camerafixed=True,
        seed=-1,
        watermark=False,
        generate_audio=False,
    )
    assert parse_sidecar(b"prompt: x\nduration: auto\n").options.duration == "auto"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            b"prompt: clouds\nratio: 16:9\nseed: 42\n",
            "clouds --resolution 720p --ratio 16:9 --duration 5 --camerafixed false --seed 42",
        ),
        (
            b"prompt: clouds\nresolution: 480p\nduration: 2\ncamerafixed: true\nwatermark: true\n",
            "clouds --resolution 480p --duration 2 --camerafixed true --watermark true",
        ),
        (
            b"watermark: false\nseed: 7\ncamerafixed: false\nduration: 10\nratio: 9:16\n"
            b"resolution: 1080p\nprompt: sea\n",
            "sea --resolution 1080p --ratio 9:16 --duration 10 --camerafixed false --seed 7"
            " --watermark false",
        ),
    ],
)
def test_request_text_renders_options_over_defaults(text: bytes, expected: str) -> None:
    """Sidecar options override the defaults and render in the gateway's order."""
    request = build_request(parse_sidecar(text), defaults=DEFAULTS)
    assert request.text == expected
    assert (request.model, request.family) == (PRO_FAST, "1.0")
    assert request.options == parse_sidecar(text).options.over(DEFAULTS)
    assert request.body_options is None


def test_request_without_commands_is_just_the_prompt() -> None:
    """With no options anywhere the text is the bare prompt; the sidecar's model wins."""
    sidecar = parse_sidecar(b"prompt: clouds\nmodel: seedance-1-0-pro-250528\n")
    request = build_request(sidecar, defaults=GenerationOptions())
    assert request.text == "clouds"
    assert request.prompt == "clouds"
    assert request.model == "seedance-1-0-pro-250528"


def test_sidecar_keys_are_prompt_model_mode_last_frame_and_every_option() -> None:
    """SIDECAR_KEYS covers exactly prompt, model, mode, last_frame, references and the
    options."""
    assert set(SIDECAR_KEYS) == {
        "prompt",
        "model",
        "mode",
        "last_frame",
        "references",
        "priority",
        *GenerationOptions.model_fields,
    }


# --- properties ---------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_keys = st.sampled_from(SIDECAR_KEYS) | st.text(max_size=12) | st.integers() | st.booleans()
_mappings = st.dictionaries(_keys, _values, max_size=6)


def _has_key_or_position(problem: InvalidSidecar) -> bool:
    return problem.key is not None or POSITION.search(problem.message) is not None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_random_input_only_ever_raises_invalid_sidecar(data: bytes) -> None:
    """Whatever the bytes, parse_sidecar returns a Sidecar or raises InvalidSidecar."""
    try:
        result = parse_sidecar(data)
    except InvalidSidecar as exc:
        assert exc.message
    else:
        assert isinstance(result, Sidecar)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mappings)
def test_random_mappings_report_a_key_or_position(mapping: dict[Any, Any]) -> None:
    """For any YAML mapping, every problem names a key or a line and column."""
    data = yaml.safe_dump(mapping).encode()
    try:
        parse_sidecar(data)
    except InvalidSidecar:
        problems = sidecar_problems(data)
        assert problems
        assert all(_has_key_or_position(p) for p in problems), [p.message for p in problems]


# The promise (files/sidecar.py, README): each line break in a prompt's value, whatever
# the character, is one "\n" in the prompt; the prompt is stripped.  Written here on its
# own, so that the oracle is the promise and not the product's code.
_EVERY_BREAK = re.compile("\r\n|[\r\x85\u2028\u2029]")


def promised_prompt(value: str) -> str:
    return _EVERY_BREAK.sub("\n", value).strip()


_breaks = st.sampled_from(["\n", "\r\n", "\r", "\x85", "\u2028", "\u2029"])
_prompts = (
    st.lists(st.one_of(st.text(max_size=40), _breaks), min_size=1, max_size=8)
    .map("".join)
    .filter(
        lambda s: (
            promised_prompt(s) != ""
            and len(promised_prompt(s)) <= 2000
            and re.search(r"--[^\W\d_]", promised_prompt(s)) is None
        )
    )
)
_options = st.fixed_dictionaries(
    {},
    optional={
        "resolution": st.sampled_from(["480p", "720p", "1080p"]),
        "ratio": st.sampled_from(["16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive"]),
        "duration": st.integers(2, 12),
        "camerafixed": st.booleans(),
        "seed": st.integers(-1, 4294967295),
        "watermark": st.booleans(),
    },
)


@settings(max_examples=100, deadline=None)
@given(_prompts, _options)
def test_valid_sidecars_round_trip(prompt: str, options: dict[str, Any]) -> None:
    """Any valid prompt, written as a double-quoted YAML string (every character kept,
    line breaks as escapes), and any options parse to what was written: the prompt
    with each line break as "\n", stripped; the options unchanged."""
    quoted = yaml.safe_dump({"prompt": prompt}, default_style='"', allow_unicode=True)
    data = (quoted + (yaml.safe_dump(options) if options else "")).encode()
    sidecar = parse_sidecar(data)
    assert sidecar.prompt == promised_prompt(prompt)
    assert sidecar.options == GenerationOptions(**options)


# How each line break reads, raw in the file (YAML folds it like \n) or escaped.
LINE_BREAKS: list[tuple[bytes, str]] = [
    *[
        (b'prompt: "a' + raw + b'b"\n', "a b")  # quoted: one break folds to a space
        for raw in (b"\n ", b"\r\n ", b"\r ", "\x85".encode(), "\u2028".encode(), "\u2029".encode())
    ],
    *[
        (b"prompt: a" + raw + b" b\n", "a b")  # plain: the same
        for raw in ("\x85".encode(), "\u2028".encode(), "\u2029".encode())
    ],
    *[
        (b"prompt: |\n  a" + raw + b"  b\n", "a\nb")  # a | block keeps each break
        for raw in (b"\n", b"\r\n", b"\r", "\x85".encode(), "\u2028".encode(), "\u2029".encode())
    ],
    (b'prompt: "a\n\n  b"\n', "a\nb"),  # quoted: an empty line is a new line
    ('prompt: "a\u2028\u2028b"\n'.encode(), "a\nb"),
    *[
        (b'prompt: "a' + escape + b'b"\n', "a\nb")  # escapes: each is one new line
        for escape in (b"\\n", b"\\r\\n", b"\\r", b"\\N", b"\\L", b"\\P", b"\\x85", b"\\u2028")
    ],
    (b'prompt: "\\L  calm sea \\r\\n"\nseed: 1\n', "calm sea"),  # stripped
]


@pytest.mark.parametrize(("data", "prompt"), LINE_BREAKS)
def test_every_line_break_character_means_the_same_in_a_prompt(data: bytes, prompt: str) -> None:
    """\\n, \\r\\n, \\r, U+0085, U+2028 and U+2029 are all line breaks: raw in the file
    YAML folds them alike (a space in a quoted or plain value, kept in a | block), and
    in the prompt every one, escaped or not, is "\\n"."""
    assert parse_sidecar(data).prompt == prompt


def test_property_tests_draw_the_same_examples_on_every_run() -> None:
    """The suite loads a derandomized Hypothesis profile without an example database
    (tests/conftest.py), so a fresh clone and CI try exactly the same examples; the
    per-test @settings inherit it.  HYPOTHESIS_PROFILE=explore opts out on purpose."""
    if os.environ.get("HYPOTHESIS_PROFILE", "deterministic") != "deterministic":
        pytest.skip("another Hypothesis profile was asked for")
    assert settings.default.derandomize is True
    assert settings.default.database is None
    assert settings(max_examples=5, deadline=None).derandomize is True


def test_check_sidecar_logs_nothing_and_lists_what_parse_joins() -> None:
    """check_sidecar (used by validate) returns each problem without logging; parse_sidecar
    raises their messages joined with '; ', and logs an unknown model only when it accepts it."""
    bad = b"prompt: ''\nduration: 40\nmodel: seedance-7\n"
    with capture_logs() as logs:
        sidecar, found = check_sidecar(bad)
        ok, none = check_sidecar(b"prompt: x\nmodel: seedance-7\n")
    assert logs == []
    assert sidecar is None and [p.key for p in found] == ["prompt", "duration"]
    assert ok is not None and ok.model == "seedance-7" and none == []
    with pytest.raises(InvalidSidecar) as info:
        parse_sidecar(bad)
    assert info.value.message == "; ".join(p.message for p in found)


# --- the model table (core/models.py) ---------------------------------------------------


def test_model_table_is_todays_seedance() -> None:
    """The live models and their kinds as the gateway serves them today: Seedance 1.0
    Pro and Pro Fast make image and text drops, the Seedance 2 family every kind; Lite
    and 1.5 Pro are retired, each with its replacement."""
    live = {row.model: set(row.kinds) for row in MODELS.live()}
    every = {"image", "frames", "text", "reference"}
    assert live == {
        PRO_FAST: {"image", "text"},
        PRO: {"image", "text"},
        "seedance-2-0": every,
        FAST2: every,
        "seedance-2-0-mini": every,
        "seedance-2-5": every,
    }
    retired = {row.model: (row.retired_on, row.replacement) for row in MODELS.values()}
    for model in (LITE, T2V, "seedance-1-0-lite-i2v-250219", "seedance-1-0-lite-t2v-250219"):
        assert retired[model] == (dt.date(2026, 5, 13), PRO_FAST)
    assert retired["seedance-1-5-pro-251215"] == (dt.date(2026, 11, 11), "seedance-2-5")
    assert set(KIND_NAMES) == every
    assert dict(DEFAULT_MODELS) == {
        "image": PRO_FAST,
        "text": PRO_FAST,
        "frames": FAST2,
        "reference": FAST2,
    }


def test_the_option_ranges_are_the_union_of_the_live_models() -> None:
    """What any live model takes, per option: every resolution and ratio some row lists,
    duration from the shortest to the longest (or auto, as Seedance 2 takes it), seed's
    range, and the booleans; the options model checks the same integer bounds."""
    assert dict(OPTION_UNION) == {
        "resolution": Choice(("480p", "720p", "1080p")),
        "ratio": Choice(("16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive")),
        "duration": IntRange(2, 15, auto=True),
        "camerafixed": Choice((True, False)),
        "seed": IntRange(-1, 4294967295),
        "watermark": Choice((True, False)),
        "generate_audio": Choice((True, False)),
    }
    GenerationOptions(duration=15, seed=4294967295)
    for bad in ({"duration": 16}, {"duration": 1}, {"seed": -2}):
        with pytest.raises(ValidationError):
            GenerationOptions.model_validate(bad)


def test_a_model_with_a_new_range_widens_the_union_and_retired_ones_do_not() -> None:
    """A new row is the one place a wider range is written: the union follows it (values
    one row lacks come from another, first seen first); a retired row's options count for
    nothing; a key that is a choice in one row and a range in another is refused."""
    two = MODELS["seedance-2-0"]  # 480p and 720p, 4 to 15 s or auto
    wide = dataclasses.replace(
        two,
        model="seedance-9",
        options={**two.options, "duration": IntRange(1, 20), "resolution": Choice(("1080p",))},
    )
    gone = dataclasses.replace(
        wide,
        model="seedance-0",
        options={**two.options, "duration": IntRange(1, 60)},
        retired_on=dt.date(2026, 1, 1),
        replacement="seedance-2-0",
    )
    union = ModelTable((two, wide, gone)).option_union()
    assert union["duration"] == IntRange(1, 20, auto=True)
    assert union["resolution"] == Choice(("480p", "720p", "1080p"))
    assert "seed" not in union  # no live row takes it
    assert ModelTable((*MODELS.values(), gone)).option_union() == OPTION_UNION
    mixed = dataclasses.replace(wide, options={**two.options, "duration": Choice(("5",))})
    with pytest.raises(ValueError, match="duration: a choice in one model and a range"):
        ModelTable((two, mixed)).option_union()


def test_a_row_with_a_resolution_or_ratio_outside_the_known_ones_is_refused() -> None:
    """Resolution and Ratio name every value a row may list: a row going outside them is
    an error in the table, not a value the options model would then refuse."""
    two = MODELS["seedance-2-0"]
    for key, value in (("resolution", "2k"), ("ratio", "2:1")):
        odd = dataclasses.replace(
            two, model="seedance-9", options={**two.options, key: Choice((value,))}
        )
        with pytest.raises(ValueError, match=f"seedance-9: a {key} outside"):
            ModelTable((*MODELS.values(), odd))


def test_the_sidecars_option_checks_read_the_union(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sidecar's messages say what the union says: widen a range or a choice there
    and the sidecar takes it (and says so when refusing), with nothing else changed."""
    wider = {
        **OPTION_UNION,
        "duration": IntRange(1, 20, auto=True),
        "resolution": Choice(("480p", "720p", "1080p", "2k")),
    }
    monkeypatch.setattr(sidecar_module, "OPTION_UNION", wider)
    _, problems = check_sidecar(b"prompt: x\nduration: 21\n")
    assert [p.message for p in problems] == [
        "duration: 21 is out of range; use an integer from 1 to 20, or auto (Seedance 2: "
        "the model picks)"
    ]
    _, problems = check_sidecar(b"prompt: x\nresolution: 4k\n")
    assert [p.message for p in problems] == [
        "resolution: '4k' is not allowed; use one of 480p, 720p, 1080p, 2k"
    ]
    _, problems = check_sidecar(b"prompt: x\nseed: " + b"9" * 5000 + b"\n")
    assert problems[0].message.endswith("has too many digits; use an integer from -1 to 4294967295")


def test_every_row_names_its_source_and_when_it_was_read() -> None:
    """A row is data with its provenance: a source and the day it was read."""
    for row in MODELS.values():
        assert row.source.strip() and row.read_on.year >= 2026


@pytest.mark.parametrize(
    ("kind", "models"),
    [
        ("image", [PRO_FAST, PRO, "seedance-2-0", FAST2, "seedance-2-0-mini", "seedance-2-5"]),
        ("frames", ["seedance-2-0", FAST2, "seedance-2-0-mini", "seedance-2-5"]),
        ("text", [PRO_FAST, PRO, "seedance-2-0", FAST2, "seedance-2-0-mini", "seedance-2-5"]),
    ],
)
def test_models_for_lists_the_live_models_of_a_kind(kind: Kind, models: list[str]) -> None:
    """models_for(kind) lists the live models that take the kind, in table order."""
    assert MODELS.models_for(kind) == models


def test_kind_refusal_names_model_its_kinds_and_the_models_that_do() -> None:
    """A known model lacking the kind is refused in one sentence; a retired one names
    its date and replacement; an offered kind or an unknown model is not refused."""
    assert kind_refusal(FAST2, "frames") is None
    assert kind_refusal("seedance-9-0", "frames") is None
    assert kind_refusal(PRO_FAST, "frames") == (
        f"{PRO_FAST} does not offer first and last frame (it takes image to video, "
        f"text to video); models that do: seedance-2-0, {FAST2}, seedance-2-0-mini, seedance-2-5"
    )
    assert kind_refusal(LITE, "image") == (f"{LITE} was switched off on 2026-05-13; use {PRO_FAST}")


# --- mode and last_frame ------------------------------------------------------------------

BAD_KIND_SIDECARS: list[tuple[str, str, list[str]]] = [
    ("mode: video\n", "mode", ["mode: 'video' is not allowed; use image or text"]),
    ("mode: Text\n", "mode", ["mode: 'Text' is not allowed", "image or text"]),
    ("mode: 1\n", "mode", ["mode: 1 is not allowed"]),
    ("mode:\n", "mode", ["mode: null is not allowed"]),
    ("mode: [text]\n", "mode", ["mode: ['text'] is not allowed"]),
    ("mdoe: text\n", "mdoe", ["unknown key 'mdoe' (did you mean 'mode'?)"]),
    ("lastframe: e.png\n", "lastframe", ["(did you mean 'last_frame'?)"]),
    ("last_frame: 42\n", "last_frame", ["last_frame: 42 is not a file name"]),
    ("last_frame: [a.png]\n", "last_frame", ["last_frame: ['a.png'] is not a file name"]),
    ("last_frame:\n", "last_frame", ["last_frame: null is not a file name"]),
    ('last_frame: ""\n', "last_frame", ["last_frame: '' is empty"]),
    ('last_frame: " end.png"\n', "last_frame", ["' end.png' has spaces around it"]),
    ("last_frame: sub/end.png\n", "last_frame", ["'sub/end.png' is not a bare file name"]),
    ("last_frame: ../end.png\n", "last_frame", ["is not a bare file name", "own folder"]),
    ("last_frame: ..\\end.png\n", "last_frame", ["is not a bare file name"]),
    ("last_frame: ..\n", "last_frame", ["'..' is not a bare file name"]),
    ('last_frame: "end\\0.png"\n', "last_frame", ["contains a control character"]),
    ('last_frame: "end\\t.png"\n', "last_frame", ["contains a control character"]),
    ("last_frame: .end.png\n", "last_frame", ["'.end.png' is a hidden or partial-download"]),
    ("last_frame: ~end.png\n", "last_frame", ["is a hidden or partial-download name"]),
    ("last_frame: end.txt\n", "last_frame", ["'end.txt' is not an image file name", ".png"]),
    ("last_frame: end\n", "last_frame", ["is not an image file name", ".jpeg, .jpg"]),
    ("last_frame: end.png.part\n", "last_frame", ["is a hidden or partial-download name"]),
    (f"last_frame: {'e' * 252}.png\n", "last_frame", ["too long for a file name", "255"]),
    (
        "mode: text\nlast_frame: end.png\n",
        "last_frame",
        ["last_frame: mode: text and last_frame make different kinds of drop", "keep one"],
    ),
    (
        "last_frame: end.png\nreferences: [a.png]\n",
        "references",
        ["references: last_frame and references make different kinds of drop"],
    ),
    (
        "references: [a.png]\nmode: text\n",
        "references",
        ["references: mode: text and references make different kinds"],
    ),
    ("references: a.png\n", "references", ["references: 'a.png' is not a list of file names"]),
    ("references: []\n", "references", ["references: lists 0 images; list 1 to 9"]),
    (
        "references: [a.png, b.png, c.png, d.png, e.png, f.png, g.png, h.png, i.png, j.png]\n",
        "references",
        ["references: lists 10 images; list 1 to 9"],
    ),
    ("references: [a.png, ../b.png]\n", "references", ["item 2 '../b.png' is not a bare"]),
    ("references: [a.png, b.txt]\n", "references", ["item 2 'b.txt' is not an image file"]),
    ("references: [a.png, 3]\n", "references", ["item 2 3 is not a file name"]),
    ("references: [a.png, a.png]\n", "references", ["a.png is listed twice"]),
]


@pytest.mark.parametrize(("text", "key", "fragments"), BAD_KIND_SIDECARS)
def test_bad_mode_or_last_frame_is_refused_naming_key_and_value(
    text: str, key: str, fragments: list[str]
) -> None:
    """A bad mode: or last_frame: raises InvalidSidecar naming the key, the value
    and what is allowed."""
    with pytest.raises(InvalidSidecar) as info:
        parse_sidecar(b"prompt: x\n" + text.encode())
    assert info.value.key == key
    for fragment in fragments:
        assert fragment in info.value.message


@pytest.mark.parametrize(
    ("text", "mode", "last_frame", "kind"),
    [
        ("", "image", None, "image"),
        ("mode: image\n", "image", None, "image"),
        ("mode: text\n", "text", None, "text"),
        ("last_frame: end.png\n", "image", "end.png", "frames"),
        ("mode: image\nlast_frame: 'Beach End.JPEG'\n", "image", "Beach End.JPEG", "frames"),
        ("last_frame: fin-é.webp\n", "image", "fin-é.webp", "frames"),
        (f"last_frame: {'e' * 251}.png\n", "image", "e" * 251 + ".png", "frames"),
    ],
)
def test_mode_and_last_frame_choose_the_kind(
    text: str, mode: str, last_frame: str | None, kind: Kind
) -> None:
    """mode defaults to image; a last_frame (kept exactly as written) makes a frames
    drop, mode: text a text drop."""
    sidecar = parse_sidecar(b"prompt: x\n" + text.encode())
    assert (sidecar.mode, sidecar.last_frame, sidecar.kind) == (mode, last_frame, kind)


@pytest.mark.parametrize("name", sorted(IMAGE_SUFFIXES))
def test_last_frame_takes_every_image_suffix_in_any_case(name: str) -> None:
    """Every image suffix of the inbox is a last frame's, upper or lower case."""
    for spelled in (f"end{name}", f"end{name.upper()}"):
        assert parse_sidecar(f"prompt: x\nlast_frame: {spelled}\n".encode()).last_frame == spelled


# --- build_request: kinds and models ------------------------------------------------------


def _sidecar(**fields: Any) -> Sidecar:
    return Sidecar(**{"prompt": "clouds", "model": None, "options": GenerationOptions(), **fields})


@pytest.mark.parametrize(
    ("fields", "kind", "model"),
    [
        ({}, "image", PRO_FAST),
        ({"last_frame": "end.png"}, "frames", FAST2),
        ({"mode": "text"}, "text", PRO),
        ({"references": ("a.png",)}, "reference", "seedance-2-0-mini"),
        ({"mode": "text", "model": FAST2}, "text", FAST2),
        ({"last_frame": "end.png", "model": "seedance-2-5"}, "frames", "seedance-2-5"),
        ({"model": "seedance-9-0"}, "image", "seedance-9-0"),
    ],
)
def test_build_request_kind_and_model(fields: dict[str, Any], kind: Kind, model: str) -> None:
    """The kind follows mode, last_frame and references; the sidecar's model wins, else
    the model the config names for the kind."""
    models: dict[Kind, str] = {
        "image": PRO_FAST,
        "frames": FAST2,
        "text": PRO,
        "reference": "seedance-2-0-mini",
    }
    request = build_request(_sidecar(**fields), defaults=DEFAULTS, models=models)
    assert (request.kind, request.model) == (kind, model)
    if request.family == "1.0":
        assert request.text == "clouds --resolution 720p --duration 5 --camerafixed false"
    else:  # the prompt alone; camerafixed (a default Seedance 2 does not take) left out
        assert request.text == "clouds"
        assert request.body_options == {"resolution": "720p", "duration": 5}


def test_build_request_models_default_to_the_configs_defaults() -> None:
    """A caller that passes no models gets the gateway.*model defaults of today."""
    assert GatewayConfig().models == dict(DEFAULT_MODELS)
    for kind, fields in (
        ("image", {}),
        ("text", {"mode": "text"}),
        ("frames", {"last_frame": "e.png"}),
        ("reference", {"references": ("a.png",)}),
    ):
        request = build_request(_sidecar(**fields), defaults=DEFAULTS)
        assert (request.kind, request.model) == (kind, DEFAULT_MODELS[kind])  # type: ignore[index]


@pytest.mark.parametrize(
    ("fields", "models", "model", "takes", "use"),
    [
        ({"last_frame": "e.png"}, {"frames": PRO}, PRO, "image to video, text to", [FAST2]),
        ({"references": ("a.png",)}, {"reference": PRO_FAST}, PRO_FAST, "image", [FAST2]),
        ({"last_frame": "e.png", "model": PRO_FAST}, {}, PRO_FAST, "image", ["seedance-2-5"]),
    ],
)
def test_build_request_refuses_a_model_without_the_kind(
    fields: dict[str, Any],
    models: dict[Kind, str],
    model: str,
    takes: str,
    use: list[str],
) -> None:
    """A known model that does not offer the drop's kind is an invalid sidecar (key
    model), naming the model, the kinds it takes, and the models that do in the hint."""
    with pytest.raises(InvalidSidecar) as info:
        build_request(_sidecar(**fields), defaults=DEFAULTS, models={**DEFAULT_MODELS, **models})
    assert info.value.key == "model"
    assert info.value.message.startswith(f"model: {model} does not offer ")
    assert f"(it takes {takes}" in info.value.message
    assert info.value.hint is not None
    assert all(m in info.value.hint for m in use)
    if "model" not in fields:  # a default model: the message says which setting it is
        (kind,) = models
        assert f"{model} is gateway.{'model' if kind == 'image' else kind + '_model'}" in (
            info.value.message
        )


@pytest.mark.parametrize("model", [LITE, T2V, "seedance-1-5-pro-251215"])
def test_a_retired_model_is_refused_naming_its_date_and_replacement(model: str) -> None:
    """A sidecar naming a model that was switched off is invalid_sidecar at parse (so
    validate and intake refuse it before anything is uploaded), with the date and the
    replacement, and a hint pointing at `seedance-watch models`."""
    row = MODELS[model]
    line = "mode: text\n" if "t2v" in model else ""
    problems = sidecar_problems(f"prompt: x\nmodel: {model}\n{line}".encode())
    assert [p.key for p in problems] == ["model"]
    assert problems[0].message == (
        f"model: {model} was switched off on {row.retired_on}; use {row.replacement}"
    )
    assert problems[0].hint is not None and "seedance-watch models" in problems[0].hint
    assert row.replacement in problems[0].hint


@pytest.mark.parametrize(
    ("line", "model", "key", "fragment"),
    [
        ("camerafixed: true", FAST2, "camerafixed", f"{FAST2} does not take camerafixed"),
        ("seed: 42", "seedance-2-5", "seed", "does not take seed (it takes resolution"),
        ("generate_audio: false", PRO_FAST, "generate_audio", "does not take generate_audio"),
        ("duration: auto", PRO, "duration", "does not take duration: auto; it takes an integer"),
        ("duration: 13", PRO_FAST, "duration", "does not take duration: 13; it takes an"),
        ("duration: 3", FAST2, "duration", "from 4 to 15, or auto"),
        ("resolution: 1080p", "seedance-2-0", "resolution", "it takes 480p or 720p"),
    ],
)
def test_an_option_the_model_does_not_take_is_refused(
    line: str, model: str, key: str, fragment: str
) -> None:
    """A sidecar key (or value) the chosen model does not take is invalid_sidecar naming
    the key, the model and what it takes."""
    sidecar = parse_sidecar(f"prompt: x\nmodel: {model}\n{line}\n".encode())
    with pytest.raises(InvalidSidecar) as info:
        build_request(sidecar, defaults=DEFAULTS)
    assert info.value.key == key
    assert info.value.message.startswith(f"{key}: {model} does not take {key}")
    assert fragment in info.value.message


def test_resolution_1080p_is_taken_by_seedance_2_5_only_in_its_family() -> None:
    """seedance-2-5 takes 1080p where seedance-2-0 does not."""
    sidecar = parse_sidecar(b"prompt: x\nmodel: seedance-2-5\nresolution: 1080p\n")
    assert build_request(sidecar, defaults=DEFAULTS).body_options == {
        "resolution": "1080p",
        "duration": 5,
    }


def test_defaults_a_model_does_not_take_are_left_out() -> None:
    """A defaults: key the chosen model does not take is simply not sent to it."""
    defaults = GenerationOptions(
        resolution="1080p", duration=12, camerafixed=True, seed=7, generate_audio=False
    )
    one = build_request(_sidecar(), defaults=defaults)  # Seedance 1.0: no generate_audio
    assert one.text == "clouds --resolution 1080p --duration 12 --camerafixed true --seed 7"
    two = build_request(_sidecar(model="seedance-2-0"), defaults=defaults)
    assert two.text == "clouds"
    assert two.body_options == {"duration": 12, "generate_audio": False}


def test_seedance_2_sends_duration_auto_as_minus_one_and_keys_only_when_set() -> None:
    """A Seedance 2 request sends the prompt alone and the set options as keys,
    duration: auto as -1."""
    sidecar = parse_sidecar(
        f"prompt: waves\nmodel: {FAST2}\nduration: auto\ngenerate_audio: false\n"
        "ratio: 9:16\n".encode()
    )
    request = build_request(sidecar, defaults=GenerationOptions())
    assert (request.text, request.family) == ("waves", "2")
    assert request.body_options == {"ratio": "9:16", "duration": -1, "generate_audio": False}
    assert request.options.duration == "auto"


@pytest.mark.parametrize(
    ("text", "model", "kind"),
    [
        ("last_frame: e.png\n", PRO, "first and last frame"),
        ("last_frame: e.png\n", PRO_FAST, "first and last frame"),
        ("references: [a.png]\n", PRO, "reference images"),
    ],
)
def test_a_sidecar_model_without_its_kind_is_refused_at_parse(
    text: str, model: str, kind: str
) -> None:
    """parse_sidecar (and so validate) already refuses a sidecar whose own model does
    not offer its kind, with the same words as build_request."""
    data = f"prompt: x\nmodel: {model}\n{text}".encode()
    problems = sidecar_problems(data)
    assert [p.key for p in problems] == ["model"]
    assert problems[0].message.startswith(f"model: {model} does not offer {kind} (it takes ")


def test_unknown_model_with_a_kind_is_accepted_with_a_warning() -> None:
    """An unknown model is the gateway's to judge for image and text drops: logged, kept,
    sent in the Seedance 1.0 dialect."""
    with capture_logs() as logs:
        sidecar = parse_sidecar(b"prompt: x\nmode: text\nmodel: seedance-3-0-t2v\n")
    assert [e["model"] for e in logs if e["event"] == "sidecar.unknown_model"] == [
        "seedance-3-0-t2v"
    ]
    request = build_request(sidecar, defaults=DEFAULTS)
    assert (request.kind, request.model, request.family) == ("text", "seedance-3-0-t2v", "1.0")


def test_an_unknown_model_cannot_make_frames_or_reference_drops() -> None:
    """Only the table's Seedance 2 models have frames and reference endpoints."""
    for fields in ({"last_frame": "e.png"}, {"references": ("a.png",)}):
        with pytest.raises(InvalidSidecar) as info:
            build_request(_sidecar(model="seedance-3-0", **fields), defaults=DEFAULTS)
        assert info.value.key == "model" and FAST2 in info.value.message


def test_strict_model_refuses_unknown_models_of_every_kind_listing_the_live_ones() -> None:
    """With strict_model an unknown model is refused for a frames or text drop too, and
    the message lists every live model."""
    for line in ("mode: text\n", "last_frame: e.png\n"):
        with pytest.raises(InvalidSidecar) as info:
            parse_sidecar(f"prompt: x\nmodel: seedance-3-0\n{line}".encode(), strict_model=True)
        assert info.value.key == "model"
        assert all(model in info.value.message for model in LIVE)


# --- sidecar_hint -------------------------------------------------------------------------

ALONE = DropHint(alone=True)
NONE = DropHint()

HINTS: list[tuple[bytes, str, DropHint]] = [
    (b"prompt: x\n", "a.yaml", NONE),
    (b"prompt: x\nmode: text\n", "a.yaml", ALONE),
    (b"prompt: x\nmode: image\n", "a.yaml", NONE),
    (b"prompt: x\nmode: 'image'\n", "a.yaml", NONE),
    (b"prompt: x\nmode: !!str image\n", "a.yaml", NONE),
    (b"prompt: x\nmode: video\n", "a.yaml", ALONE),
    (b"prompt: x\nmode: Image\n", "a.yaml", ALONE),
    (b"prompt: x\nmode:\n", "a.yaml", ALONE),
    (b"prompt: x\nmode: 5\n", "a.yaml", ALONE),
    (b"prompt: x\nmode: [image]\n", "a.yaml", ALONE),
    (b"prompt: x\nmode: {a: b}\n", "a.yaml", ALONE),
    (b"prompt: x\nmode: image\nmode: text\n", "a.yaml", ALONE),
    (b"prompt: &m image\nmode: *m\n", "a.yaml", NONE),
    (b"prompt: &m text\nmode: *m\n", "a.yaml", ALONE),
    (b"prompt: x\nmode: *nowhere\n", "a.yaml", NONE),  # not YAML: an undefined alias
    (b"prompt: x\nmode: text\nlast_frame: end.png\n", "a.yaml", ALONE),
    (b"prompt: x\nlast_frame: end.png\n", "a.yaml", DropHint(last_frame="end.png")),
    (b"prompt: x\nlast_frame: end.png\nmode: image\n", "a.yaml", DropHint(last_frame="end.png")),
    (b"{prompt: x, last_frame: 'B e.JPG'}", "sub/a.yml", DropHint(last_frame="B e.JPG")),
    (b"{prompt: x, mode: text}", "a.yaml", ALONE),
    (b"\xef\xbb\xbfprompt: x\nmode: text\n", "a.yaml", ALONE),  # a BOM
    (b"prompt: x\nlast_frame: beach.png\n", "other.yaml", DropHint(last_frame="beach.png")),
    (b"prompt: x\nlast_frame: beach.png\n", "beach.yaml", NONE),  # its own image
    (b"prompt: x\nlast_frame: beach.png\n", "sub/beach.yml", NONE),
    (b"prompt: x\nlast_frame: sub/end.png\n", "a.yaml", NONE),
    (b"prompt: x\nlast_frame: ../end.png\n", "a.yaml", NONE),
    (b"prompt: x\nlast_frame: .end.png\n", "a.yaml", NONE),
    (b"prompt: x\nlast_frame: end.txt\n", "a.yaml", NONE),
    (b"prompt: x\nlast_frame: 42\n", "a.yaml", NONE),
    (b"prompt: x\nlast_frame: [end.png]\n", "a.yaml", NONE),
    (b'prompt: x\nlast_frame: " end.png"\n', "a.yaml", NONE),
    (b"prompt: x\nlast_frame: !!binary end.png\n", "a.yaml", NONE),
    (b"prompt: [a, {mode: text, b: [c]}]\nmode: text\n", "a.yaml", ALONE),  # depth
    (b"prompt: {mode: text, last_frame: e.png}\n", "a.yaml", NONE),  # nested: not the drop's
    (b"prompt: mode\nx: last_frame\n", "a.yaml", NONE),  # values are not keys
    (b"? [mode]\n: text\nlast_frame: e.png\n", "a.yaml", DropHint(last_frame="e.png")),
    (b"- mode: text\n", "a.yaml", NONE),
    (b"mode: text", "a.yaml", ALONE),
    (b"just text\n", "a.yaml", NONE),
    (b"", "a.yaml", NONE),
    (b"# only a comment\n", "a.yaml", NONE),
    (b"mode: text\nprompt: [unclosed\n", "a.yaml", NONE),
    (b"mode: text\n---\nmode: text\n", "a.yaml", NONE),  # two documents
    (b"mode: text\nprompt: caf\xe9\n", "a.yaml", NONE),  # not UTF-8
    (b"mode: text\nprompt: a\x00\n", "a.yaml", NONE),  # a NUL
    (b"\x00\x01\x02\xff\xfe\x89PNG\r\n\x1a\n", "a.yaml", NONE),
    (b"prompt: " + b"[" * 100_000, "a.yaml", NONE),
    (b"prompt: " + b"{a: " * 50_000, "a.yaml", NONE),
    (b"prompt: " + b"- " * 50_000, "a.yaml", NONE),
    (b"prompt: x\nmode: text\n" + b"#" * (3 << 20), "a.yaml", ALONE),  # a huge comment
    # Over 1 MiB: intake refuses it (never cut), so its drop fails at once.
    (b"prompt: '" + b"x" * (1 << 20) + b"'\nmode: text\n", "a.yaml", ALONE),
    (b"prompt: x\n" + b"#" * (1 << 20), "a.yaml", ALONE),
]


@pytest.mark.parametrize("parser", ["libyaml", "pure"])
@pytest.mark.parametrize(("data", "name", "hint"), HINTS, ids=range(len(HINTS)))
def test_sidecar_hint(
    data: bytes, name: str, hint: DropHint, parser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alone for any mode but image; a last_frame only when it is a valid bare image name
    that is not the sidecar's own; the default hint for anything that is not a readable
    YAML mapping.  The same with PyYAML's pure-Python parser, which the hint falls back
    to where PyYAML was built without libyaml (patched in: no other way to reach it)."""
    if parser == "pure":
        monkeypatch.setattr(sidecar_module, "_EVENT_LOADER", yaml.SafeLoader)
    else:
        assert yaml.__with_libyaml__
    assert sidecar_hint(data, name) == hint


_yamlish = st.lists(
    st.sampled_from(
        [
            "mode", "last_frame", "prompt", ":", ": ", " ", "\n", "  ", "\t", "-", "- ", "?",
            "text", "image", "end.png", "a.yaml", "/", "..", "[", "]", "{", "}", ",", "'", '"',
            "\\", "&a ", "*a", "!!str ", "!!int ", "!", "#", "---", "...", "|", ">", "%YAML 1.2",
            "\ufeff", "\u2028", "\x85", "\x00", "é",
        ]
    ),
    max_size=40,
).map("".join)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | _yamlish.map(str.encode))
def test_sidecar_hint_never_raises(data: bytes) -> None:
    """Whatever the bytes, sidecar_hint returns a consistent DropHint: never both alone
    and a last frame, and a last frame only when it is a valid bare image name."""
    hint = sidecar_hint(data, "a.yaml")
    assert isinstance(hint, DropHint)
    assert not (hint.alone and hint.last_frame is not None)
    if hint.last_frame is not None:
        assert bare_name_fault(hint.last_frame) is None


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([None, "image", "text"]),
    st.none() | st.sampled_from(["end.png", "B e.JPEG", "a.png", "x.gif", "sub/x.png", "x.txt"]),
    st.sampled_from(["plain", "single", "double"]),
)
def test_sidecar_hint_agrees_with_parse(mode: str | None, last: str | None, style: str) -> None:
    """For every sidecar intake accepts, the hint says what the parsed sidecar says."""
    quote = {"plain": "", "single": "'", "double": '"'}[style]
    text = "prompt: x\n"
    if mode is not None:
        text += f"mode: {quote}{mode}{quote}\n"
    if last is not None:
        text += f"last_frame: {quote}{last}{quote}\n"
    sidecar, problems = check_sidecar(text.encode())
    hint = sidecar_hint(text.encode(), "a.yaml")
    if sidecar is None:
        assert problems
        return
    assert hint.alone == (sidecar.kind == "text")
    expected = sidecar.last_frame if sidecar.last_frame != "a.png" else None
    assert hint.last_frame == expected


def test_priority_is_read_and_carried_into_the_request() -> None:
    """``priority:`` is a whole number (default 0) that the request carries to the job;
    unset in the sidecar it is None there (a folder preset may set it)."""
    assert parse_sidecar(b"prompt: x\n").priority is None
    assert build_request(parse_sidecar(b"prompt: x\n"), defaults=DEFAULTS).priority == 0
    sidecar = parse_sidecar(b"prompt: x\npriority: -5\n")
    assert sidecar.priority == -5
    assert (
        build_request(parse_sidecar(b"prompt: x\npriority: 10\n"), defaults=DEFAULTS).priority == 10
    )
