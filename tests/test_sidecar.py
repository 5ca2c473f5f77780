"""The sidecar schema: every bad sidecar is refused with a report a person can act on."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from seedance_watch.core.options import GenerationOptions
from seedance_watch.errors import InvalidSidecar
from seedance_watch.files.sidecar import (
    KNOWN_MODELS,
    SIDECAR_KEYS,
    Sidecar,
    build_request,
    check_sidecar,
    parse_sidecar,
    sidecar_problems,
)

DEFAULTS = GenerationOptions(resolution="720p", duration=5, camerafixed=False)
LITE = "seedance-1-0-lite-i2v-250428"
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
        ["duration: 20 is out of range; use an integer from 2 to 12"],
    ),
    ("prompt: x\nduration: 1\n", "duration", ["duration: 1 is out of range"]),
    ('prompt: x\nduration: "5"\n', "duration", ["duration: '5' is not an integer", "quotes"]),
    ("prompt: x\nduration: 5.0\n", "duration", ["duration: 5.0 is not an integer"]),
    ("prompt: x\nduration: true\n", "duration", ["duration: true is not an integer"]),
    ("prompt: x\nduration:\n", "duration", ["duration: null is not an integer"]),
    (
        "prompt: x\nduration: " + "9" * 5000 + "\n",
        "duration",
        ["too many digits", "2 to 12"],
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
    sidecar = parse_sidecar(f"prompt: |\n  clouds drift\nmodel: {LITE}\n".encode())
    assert sidecar == Sidecar(prompt="clouds drift", model=LITE, options=GenerationOptions())


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
    assert all(model in info.value.message for model in KNOWN_MODELS)


@pytest.mark.parametrize("model", sorted(KNOWN_MODELS))
def test_known_models_pass_strict_mode(model: str) -> None:
    """Every Seedance 1.0 i2v model is known, even in strict mode."""
    assert parse_sidecar(f"prompt: x\nmodel: {model}\n".encode(), strict_model=True).model == model


def test_every_option_is_parsed() -> None:
    """All option keys are read with their YAML 1.2 types."""
    text = (
        b"prompt: clouds\nresolution: 1080p\nratio: adaptive\nduration: 12\n"
        b"camerafixed: true\nseed: -1\nwatermark: false\n"
    )
    assert parse_sidecar(text).options == GenerationOptions(
        resolution="1080p",
        ratio="adaptive",
        duration=12,
        camerafixed=True,
        seed=-1,
        watermark=False,
    )


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
    request = build_request(parse_sidecar(text), defaults=DEFAULTS, default_model=LITE)
    assert request.text == expected
    assert request.model == LITE
    assert request.options == parse_sidecar(text).options.over(DEFAULTS)


def test_request_without_commands_is_just_the_prompt() -> None:
    """With no options anywhere the text is the bare prompt; the sidecar's model wins."""
    sidecar = parse_sidecar(b"prompt: clouds\nmodel: seedance-1-0-pro-250528\n")
    request = build_request(sidecar, defaults=GenerationOptions(), default_model=LITE)
    assert request.text == "clouds"
    assert request.prompt == "clouds"
    assert request.model == "seedance-1-0-pro-250528"


def test_sidecar_keys_are_prompt_model_and_every_option() -> None:
    """SIDECAR_KEYS covers exactly prompt, model and the GenerationOptions fields."""
    assert set(SIDECAR_KEYS) == {"prompt", "model", *GenerationOptions.model_fields}


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
