"""Regular expressions from task files, which are untrusted: run by the `regex` engine with
a time limit, so a pattern that backtracks catastrophically (`(a+)+$`) fails in a second
instead of holding a worker for good."""

from __future__ import annotations

#: Seconds one pattern may run on one text.
REGEX_TIMEOUT_S = 1.0


class RegexTooSlow(ValueError):
    """A pattern ran over `REGEX_TIMEOUT_S` on one text."""


def check_pattern(pattern: object) -> str | None:
    """None when `pattern` is a regular expression the engine compiles, else what is wrong."""
    import regex

    if not isinstance(pattern, str):
        return f"expected a regular expression (a string), got {type(pattern).__name__}"
    try:
        regex.compile(pattern)
    except regex.error as exc:
        return f"{pattern[:60]!r} is not a valid regular expression: {exc}"
    return None


def sub(pattern: str, replacement: str, text: str, *, count: int = 0) -> str:
    """`re.sub` under the time limit; `RegexTooSlow` past it, `regex.error` for a bad pattern."""
    import regex

    try:
        return regex.sub(pattern, replacement, text, count=count, timeout=REGEX_TIMEOUT_S)
    except TimeoutError:
        raise RegexTooSlow(f"pattern {pattern[:60]!r} ran over {REGEX_TIMEOUT_S:g} s on one text "
                           "(catastrophic backtracking?)") from None
