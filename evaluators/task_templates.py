"""Task templates (`doc_to_text`, `doc_to_target`, ...) rendered safely: task files are
untrusted, so templates render in Jinja's sandbox, bounded in what they may build, how long
they may run and how much they may write (`render_bounded`)."""

from __future__ import annotations

import functools
import re
import sys
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import SandboxedEnvironment

from evaluators import safe_regex

# Jinja's sandbox makes `{{ cycler.__init__.__globals__ }}` and friends raise `SecurityError`
# instead of reaching Python objects, and caps `range`; what builds text is bounded here.
#: The longest string or list a template may build, and the largest `**` exponent.
MAX_TEMPLATE_ITEMS = 1_000_000
MAX_EXPONENT = 1024
#: Seconds one template may take on one document, and the longest text it may render.
TEMPLATE_TIMEOUT_S = 2.0
MAX_TEMPLATE_OUTPUT = 1_000_000
# A width or precision of a million or more in a %-format or a str.format field.
_HUGE_FORMAT = re.compile(r"%[-+ #0]*(?:\*|\d{7,})|%[-+ #0]*\d*\.\d{7,}|\{[^{}]*:[^{}]*\d{7,}[^{}]*\}")


def _regex_replace(text: str, pattern: str, replacement: str = "", count: int = 0) -> str:
    import regex

    try:
        return safe_regex.sub(pattern, replacement, text, count=count)
    except safe_regex.RegexTooSlow as exc:
        raise jinja2.sandbox.SecurityError(f"regex_replace {exc}") from None
    except regex.error as exc:
        raise jinja2.TemplateError(f"regex_replace pattern {pattern[:60]!r}: {exc}") from None


def _check_call(args: tuple, kwargs: dict, owner: Any = None, name: str = "") -> None:
    """Refuse a call that would build something huge before it runs (a C call such as
    `'x'.center(10**10)` cannot be stopped once started): a number over the template limit
    as an argument, a format string with a huge width, a replace that multiplies its text."""
    values = [*args, *kwargs.values()]
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_TEMPLATE_ITEMS:
            raise jinja2.sandbox.SecurityError(f"a number {value} in a template call is over the limit of {MAX_TEMPLATE_ITEMS}")
    formats = [owner] if isinstance(owner, str) and name in ("format", "format_map") else []
    formats += [v for v in values[:1] if isinstance(v, str) and name == "format"]  # the format filter
    if any(_HUGE_FORMAT.search(f) for f in formats):
        raise jinja2.sandbox.SecurityError("a format width over the template limit")
    if name in ("extend", "update") and isinstance(owner, (list, dict)) and args and hasattr(args[0], "__len__") \
            and len(owner) + len(args[0]) > MAX_TEMPLATE_ITEMS:
        raise jinja2.sandbox.SecurityError(f"a {type(owner).__name__} of over {MAX_TEMPLATE_ITEMS} items in a template")
    if name == "replace":
        text, new = (owner, args[1] if len(args) > 1 else "") if isinstance(owner, str) else \
            (args[0] if args else "", args[2] if len(args) > 2 else "")
        if isinstance(text, str) and isinstance(new, str) and (len(text) + 1) * max(len(new), 1) > MAX_TEMPLATE_ITEMS:
            raise jinja2.sandbox.SecurityError("a replace that could build text over the template limit")


def _bounded_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)  # keeps Jinja's pass_context/pass_environment marks
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_call(args[1:] if getattr(fn, "jinja_pass_arg", None) else args, kwargs, name=name)
        return fn(*args, **kwargs)

    return bounded


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator with `~` (string concatenation) going through the sandbox's
    `concat`, so a loop that doubles a namespace's text stops at the limit."""

    def visit_Concat(self, node, frame) -> None:
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _BoundedSandbox(SandboxedEnvironment):
    """Jinja's sandbox with what builds text bounded: `*`, `**` and `%`, calls and filters
    (`_check_call`), so `{{ 'x' * 10**10 }}` or `{{ 'x'|center(10**10) }}` fails instead of
    filling the worker's memory; `render_bounded` also bounds time and output."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _BoundedCodeGenerator

    @staticmethod
    def concat(parts: tuple) -> str:
        texts = [str(p) for p in parts]
        if sum(map(len, texts)) > MAX_TEMPLATE_ITEMS:
            raise jinja2.sandbox.SecurityError(f"a concatenation over the template limit of {MAX_TEMPLATE_ITEMS} characters")
        return "".join(texts)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = {name: _bounded_filter(name, fn) for name, fn in self.filters.items()}

    def call(__self, __context, __obj, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
        # str.format comes wrapped by the sandbox (`wrap_str_format`): its string is the wrapped method's
        owner = getattr(__obj, "__self__", None) or getattr(getattr(__obj, "__wrapped__", None), "__self__", None)
        _check_call(args, kwargs, owner, getattr(__obj, "__name__", ""))
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)) \
                and len(left) + len(right) > MAX_TEMPLATE_ITEMS:
            raise jinja2.sandbox.SecurityError(f"a sum of {len(left) + len(right)} items is over the template limit")
        if operator == "%" and isinstance(left, str) and _HUGE_FORMAT.search(left):
            raise jinja2.sandbox.SecurityError("a format width over the template limit")
        if operator == "**" and isinstance(right, (int, float)) and (
                abs(right) > MAX_EXPONENT or isinstance(left, int) and left.bit_length() * abs(right) > 64 * MAX_EXPONENT):
            raise jinja2.sandbox.SecurityError(f"a power {right} is over the template limit")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > MAX_TEMPLATE_ITEMS:
                    raise jinja2.sandbox.SecurityError(
                        f"a repetition of {len(seq) * times} items is over the template limit of {MAX_TEMPLATE_ITEMS}")
        return super().call_binop(context, operator, left, right)


_ENV = _BoundedSandbox(loader=jinja2.BaseLoader(), undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
_ENV.filters["regex_replace"] = _regex_replace


class _TemplateTimeout(Exception):
    pass


def render_bounded(template: jinja2.Template, variables: dict[str, Any]) -> str:
    """`template.render(**variables)` in at most `TEMPLATE_TIMEOUT_S` seconds and
    `MAX_TEMPLATE_OUTPUT` characters (nested loops over the sandbox's ranges run 10^10
    times): past either, `SecurityError`. A range over the sandbox's cap is one too."""
    deadline = time.monotonic() + TEMPLATE_TIMEOUT_S
    events = 0

    def tick(frame, event, arg):  # the template's Python frames, a line at a time
        nonlocal events
        events += 1
        if events % 256 == 0 and time.monotonic() > deadline:
            raise _TemplateTimeout
        return tick

    previous = sys.gettrace()
    sys.settrace(tick)
    parts, size = [], 0
    try:
        for part in template.generate(**variables):
            size += len(part)
            if size > MAX_TEMPLATE_OUTPUT:
                raise jinja2.sandbox.SecurityError(f"the template renders over {MAX_TEMPLATE_OUTPUT:,} characters")
            parts.append(part)
    except _TemplateTimeout:
        raise jinja2.sandbox.SecurityError(f"the template ran over {TEMPLATE_TIMEOUT_S:g} s on one document") from None
    except OverflowError as exc:  # e.g. range() past the sandbox's cap
        raise jinja2.sandbox.SecurityError(f"the template went over a limit: {exc}") from None
    finally:
        sys.settrace(previous)
    return "".join(parts)


@lru_cache(maxsize=512)
def _compile(template: str) -> jinja2.Template:
    return _ENV.from_string(template)
