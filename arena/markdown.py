"""Model output as safe HTML: escape first, then a little markdown.

Answers are untrusted text. Every character of the input is HTML-escaped *before* any
formatting is applied, and the formatting only wraps escaped text in a fixed set of tags
(`p`, `br`, `pre`, `code`, `ul`, `ol`, `li`, `strong`, `em`) with no attributes taken from
the input (an ordered list's `start` is an integer we parse). No links, images or raw HTML
are supported, so there is nothing for a model to inject.

Supported: fenced code blocks (```` ``` ````, an unclosed fence runs to the end, as in a
truncated answer), inline `code`, **bold**, *italic*, `-`/`*`/`+` bullet lists, `1.`
numbered lists, `#` headings (shown bold), blank-line paragraphs and line breaks.

Written by hand rather than with a markdown library: the libraries pass raw HTML through
by default and need a sanitizer behind them; escape-first over this small subset is
simpler to audit.
"""

from __future__ import annotations

import re
from html import escape

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_BULLET = re.compile(r"^\s{0,3}[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^\s{0,3}(\d{1,9})[.)]\s+(.*)$")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
_ITALIC = re.compile(r"(?<![*\w])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![*\w])")


def render_markdown(text: str) -> str:
    """Safe HTML for untrusted `text` (see the module docstring for the subset).

    The caller can insert the result into a page as is: it contains no tag or attribute
    from the input, only escaped text inside the tags listed above."""
    out: list[str] = []
    prose: list[str] = []
    code: list[str] | None = None
    fence = ""
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        match = _FENCE.match(line)
        if code is None and match:
            out.append(_render_prose(prose))
            prose, code, fence = [], [], match.group(1)
        elif code is not None and match and match.group(1) == fence and not line.strip().strip(fence[0]):
            out.append(_code_block(code))
            code = None
        elif code is not None:
            code.append(line)
        else:
            prose.append(line)
    if code is not None:
        out.append(_code_block(code))
    out.append(_render_prose(prose))
    return "".join(out)


def _code_block(lines: list[str]) -> str:
    return f"<pre><code>{escape(chr(10).join(lines))}</code></pre>"


def _render_prose(lines: list[str]) -> str:
    """Paragraphs, lists and headings of lines outside code fences."""
    html: list[str] = []
    paragraph: list[str] = []
    items: list[str] = []
    list_kind = ""
    list_start = 1

    def close_paragraph() -> None:
        if paragraph:
            html.append("<p>" + "<br>".join(_inline(p) for p in paragraph) + "</p>")
            paragraph.clear()

    def close_list() -> None:
        nonlocal list_kind
        if items:
            start = f' start="{list_start}"' if list_kind == "ol" and list_start != 1 else ""
            html.append(f"<{list_kind}{start}>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + f"</{list_kind}>")
            items.clear()
        list_kind = ""

    for line in lines:
        bullet, numbered, heading = _BULLET.match(line), _NUMBERED.match(line), _HEADING.match(line)
        if not line.strip():
            close_paragraph()
            close_list()
        elif bullet or numbered:
            close_paragraph()
            kind = "ul" if bullet else "ol"
            if kind != list_kind:
                close_list()
                list_kind = kind
                list_start = int(numbered.group(1)) if numbered else 1
            items.append(bullet.group(1) if bullet else numbered.group(2))
        elif heading:
            close_paragraph()
            close_list()
            html.append(f"<p><strong>{_inline(heading.group(1))}</strong></p>")
        elif items and line.startswith((" ", "\t")):
            items[-1] += " " + line.strip()  # a list item's continuation line
        else:
            close_list()
            paragraph.append(line)
    close_paragraph()
    close_list()
    return "".join(html)


def _inline(text: str) -> str:
    """Escape, then format. Code spans are set aside first (as NUL-delimited placeholders;
    NULs in the input are dropped) so nothing inside them is formatted, while emphasis may
    still wrap them: `**`x`**`."""
    spans: list[str] = []

    def hold(match: re.Match[str]) -> str:
        spans.append(f"<code>{match.group(1)}</code>")
        return f"\x00{len(spans) - 1}\x00"

    formatted = _emphasis(_INLINE_CODE.sub(hold, escape(text.replace("\x00", ""))))
    return re.sub("\x00(\\d+)\x00", lambda m: spans[int(m.group(1))], formatted)


def _emphasis(escaped: str) -> str:
    escaped = _BOLD.sub(lambda m: f"<strong>{m.group(1) or m.group(2)}</strong>", escaped)
    return _ITALIC.sub(lambda m: f"<em>{m.group(1)}</em>", escaped)
