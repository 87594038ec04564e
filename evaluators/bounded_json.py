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


#: More values than any task file holds once its YAML aliases are expanded.
MAX_YAML_VALUES = 100_000


class TooMany(ValueError):
    """YAML aliases that expand to more values than allowed (a "billion laughs" file);
    `line` is the first anchor an alias repeats (1-based)."""

    def __init__(self, line: int, limit: int) -> None:
        super().__init__(f"line {line}: its aliases expand to more than {limit:,} values")
        self.line, self.limit = line, limit


def safe_yaml(text: str, limit: int = MAX_YAML_VALUES):
    """`yaml.safe_load(text)`, refusing (`TooMany`) a document whose aliases expand to more
    than `limit` values: a few lines of nested aliases name billions of values, which the
    loader shares but anything that walks the result (a copy, a JSON encoding) expands.
    The node graph is measured before anything is built; aliases point at shared nodes, so
    measuring is linear in the text."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        sizes: dict[int, int] = {}
        aliased: list[int] = []

        def size(n) -> int:
            known = sizes.get(id(n))
            if known is not None:
                aliased.append(n.start_mark.line + 1)
                return known
            sizes[id(n)] = 1  # a recursive alias counts once
            children = n.value if isinstance(n, yaml.SequenceNode) else \
                [c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode) else ()
            total = 1 + sum(size(c) for c in children)
            sizes[id(n)] = total
            if total > limit:
                raise TooMany(min(aliased, default=n.start_mark.line + 1), limit)
            return total

        size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


#: A `\uD800`-`\uDFFF` escape: the only way a lone surrogate gets into decoded UTF-8 text.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def lone_surrogate(value: object, field: str = "") -> str | None:
    """What is wrong when a string in decoded JSON `value` (keys too) holds a lone UTF-16
    surrogate (`"\\ud800"` with no pair): `json.loads` takes it, but it is not Unicode text
    and no record, hash or response could hold it. None when there is none. Worth calling
    only on text that `SURROGATE_ESCAPE` matches."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (f"{('field ' + repr(field) + ': ') if field else ''}\\u{ord(value[exc.start]):04x} "
                    "is half of a UTF-16 surrogate pair without its other half: not Unicode text")
    elif isinstance(value, dict):
        for key, item in value.items():
            found = lone_surrogate(key, field) or lone_surrogate(item, key if isinstance(key, str) and not field else field)
            if found:
                return found
    elif isinstance(value, list):
        for item in value:
            found = lone_surrogate(item, field)
            if found:
                return found
    return None


def long_number(text: str, line: int = 1) -> str:
    """Where and what, for the one `ValueError` `json.loads` raises besides
    `JSONDecodeError`: a number with more digits than Python converts
    (`sys.get_int_max_str_digits`, 4300). `line` is the text's first line number."""
    import sys

    limit = sys.get_int_max_str_digits()
    found = re.search(r"\d{%d,}" % (limit + 1), text)
    if found:
        line += text.count("\n", 0, found.start())
        column = found.start() - text.rfind("\n", 0, found.start())
        return f"line {line}, column {column}: a number with more than {limit} digits"
    return f"line {line}: a number too long to read"
