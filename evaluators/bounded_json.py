"""JSON that cannot crash its reader: a nesting bound checked before parsing.

Python's `json`, msgspec and PyYAML all recurse per level of nesting, so a file of 100,000
`[` (a few hundred kilobytes) ends in `RecursionError` and a traceback. Dataset files,
task files, prompt pools and battle imports are untrusted: each is checked here first,
and a file nested deeper than `MAX_DEPTH` is refused with the line where it went too deep.
"""

from __future__ import annotations

import re

#: Deeper than any record format we read (a chat record is 4 levels deep).
MAX_DEPTH = 64

# A JSON string (skipped whole, so brackets inside it do not count) or a bracket.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class TooDeep(ValueError):
    """The text nests deeper than allowed; `line` is where it first did (1-based)."""

    def __init__(self, line: int, limit: int) -> None:
        super().__init__(f"line {line}: nested deeper than {limit} levels")
        self.line, self.limit = line, limit


def check_depth(text: str, limit: int = MAX_DEPTH) -> None:
    """Raise `TooDeep` when brackets (`[`, `{`) outside JSON strings nest deeper than `limit`.

    Linear in the text; a text with at most `limit` opening brackets is accepted without a
    scan. Works on YAML flow collections too (its single-quoted strings are not skipped,
    which can only over-count)."""
    if text.count("[") + text.count("{") <= limit:
        return
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                raise TooDeep(text.count("\n", 0, match.start()) + 1, limit)
        elif token in ("]", "}"):
            depth = max(0, depth - 1)
