"""Text for people: names and messages shown without letting them steer the display.

Names, prompts and messages come from whoever can drop a file, and from the
gateway's answers.  Printed raw, a name holding ``ESC [ 2 J`` clears the screen of
whoever runs ``status``, one holding a newline forges a line of output, and a file
name that is not UTF-8 (kept as a surrogate escape, ``\\udce9``) cannot even be
encoded: a page or a JSON answer holding one fails as a whole.  So what people read
goes through one of these (docs/design.md, "Command-line output"):

* :func:`printable`, for a name or one line: control characters (C0, DEL, C1), the
  bidirectional overrides that reorder what is shown, the line and paragraph
  separators, and lone surrogates become escapes that show what the text holds --
  ``\\x1b``, ``\\n``, ``\\u202e``, and for a byte of a file name that is not UTF-8
  that byte, ``\\xe9``.  The commands print every line through it; the status page
  and the notifications show every name through it.
* :func:`prose`, for a prompt, a message or a hint, where a line break is layout, not
  content: runs of white space (line breaks included) become one space, then
  :func:`printable`.

The result is always valid Unicode without surrogates, so it encodes as UTF-8.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["printable", "prose", "shorten"]

_SHORT: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
# C0, DEL and C1; the Unicode bidi controls (ALM, LRM, RLM, LRE..RLO, LRI..PDI); the line
# and paragraph separators; every surrogate (only a lone one can be in a str).
_UNSAFE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
_SPACE: Final = re.compile(r"[\t\n\v\f\r \x85\u2028\u2029]+")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in _SHORT:
        return _SHORT[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's escape of one undecodable byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every character that could steer a display written as an escape.

    One line in, one line out: a newline inside ``text`` becomes ``\\n``, so apply
    it to each line (or each value) of the output, never to lines already joined.
    """
    if text.isprintable():  # the usual case: nothing to look for
        return text
    return _UNSAFE.sub(_escape, text)


def prose(text: str) -> str:
    """A prompt, message or hint as one line: white space runs become one space, then
    :func:`printable`."""
    return printable(_SPACE.sub(" ", text).strip())


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, at a word when one ends near the
    cut, with an ellipsis when anything was cut."""
    if len(text) <= limit:
        return text
    cut = text[: max(1, limit - 1)]
    space = cut.rfind(" ")
    if space >= limit * 2 // 3:
        cut = cut[:space]
    return cut.rstrip() + "\u2026"
