"""What the commands print: text that shows what a name holds and never drives the terminal.

Names, prompts and messages come from whoever can drop a file, and from the
gateway's answers.  Printed raw, a name holding ``ESC [ 2 J`` clears the screen of
whoever runs ``status``, one holding ``ESC ] 52`` writes to their clipboard, and one
holding a newline forges a line of output.  So every line a command prints goes
through :func:`printable` (docs/design.md, "Command-line output"): control characters
(C0, DEL, C1), the bidirectional overrides that reorder what is shown, the line and
paragraph separators, and lone surrogates become escapes that show what the name
holds -- ``\\x1b``, ``\\n``, ``\\u202e``, and for a byte of a file name that is not
UTF-8 (kept as a surrogate escape) that byte, ``\\xff``.  JSON output (``--json``)
is ASCII with ``\\u`` escapes already.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["printable"]

_SHORT: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
# C0, DEL and C1; the Unicode bidi controls (ALM, LRM, RLM, LRE..RLO, LRI..PDI); the line
# and paragraph separators; every surrogate (only a lone one can be in a str).
_UNSAFE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)


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
    """``text`` with every character that could steer a terminal written as an escape.

    One line in, one line out: a newline inside ``text`` becomes ``\\n``, so apply
    it to each line (or each value) of the output, never to lines already joined.
    """
    if text.isprintable():  # the usual case: nothing to look for
        return text
    return _UNSAFE.sub(_escape, text)
