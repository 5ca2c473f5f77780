"""The text commands at the end of a prompt, read the way the gateway reads them.

An unknown ``--command`` is an error (400); an invalid value is silently replaced
by the default, as the real gateway does.  The parameters actually used are kept
so a test can see what the gateway would have generated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DEFAULTS", "CommandError", "ParsedText", "parse_text"]

#: What the gateway uses when a command is absent or its value is invalid.
DEFAULTS: dict[str, str | int | bool] = {
    "resolution": "720p",
    "ratio": "adaptive",
    "duration": 5,
    "camerafixed": False,
    "seed": -1,
    "watermark": False,
}

_RATIOS = frozenset({"16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive"})
_RESOLUTIONS = frozenset({"480p", "720p", "1080p"})
# A command is `--` then a letter, at the start or after white space.
_COMMAND = re.compile(r"(?:^|(?<=\s))--([A-Za-z][\w-]*)(?:\s+(?!--[A-Za-z])(\S+))?")


class CommandError(ValueError):
    """The text holds a command the gateway does not know."""


@dataclass(frozen=True)
class ParsedText:
    """The prompt without its commands, and the parameters used."""

    prompt: str
    params: dict[str, str | int | bool]
    #: Commands whose value was invalid and replaced by the default.
    replaced: tuple[str, ...]


def _bool(value: str) -> bool | None:
    return {"true": True, "false": False}.get(value.lower())


def _int_in(value: str, low: int, high: int) -> int | None:
    try:
        number = int(value)
    except ValueError:
        return None
    return number if low <= number <= high else None


def _coerce(name: str, value: str | None) -> str | int | bool | None:
    """The value if valid for ``name``, else ``None``."""
    if value is None:
        return None
    if name == "resolution":
        return value.lower() if value.lower() in _RESOLUTIONS else None
    if name == "ratio":
        return value if value in _RATIOS else None
    if name == "duration":
        return _int_in(value, 2, 12)
    if name == "seed":
        return _int_in(value, -1, 4294967295)
    return _bool(value)  # camerafixed, watermark


def parse_text(text: str) -> ParsedText:
    """Split ``text`` into prompt and parameters; raise ``CommandError`` on an unknown command."""
    params = dict(DEFAULTS)
    replaced: list[str] = []
    first = None
    for match in _COMMAND.finditer(text):
        name, raw = match.group(1), match.group(2)
        if name not in DEFAULTS:
            raise CommandError(f"unknown command --{name}")
        first = match.start() if first is None else first
        value = _coerce(name, raw)
        if value is None:
            replaced.append(name)
        else:
            params[name] = value
    prompt = text if first is None else text[:first]
    return ParsedText(prompt=prompt.strip(), params=params, replaced=tuple(replaced))
