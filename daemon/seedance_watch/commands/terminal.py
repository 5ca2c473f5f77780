"""What the commands print: text that shows what a name holds and never drives the terminal.

Every line a command prints goes through :func:`printable` (docs/design.md,
"Command-line output"), which lives in :mod:`seedance_watch.core.text` so that the
status page and the notifications show names by the same rule: control characters,
bidirectional overrides and line separators become escapes (``\\x1b``, ``\\n``,
``\\u202e``), and a byte of a file name that is not UTF-8 (kept as a surrogate
escape) shows as that byte, ``\\xff``.  JSON output (``--json``) is ASCII with
``\\u`` escapes already.
"""

from __future__ import annotations

from seedance_watch.core.text import printable

__all__ = ["printable"]
