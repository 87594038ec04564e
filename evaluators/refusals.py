"""Refusals: how an answer that declines to help is recognised, in English and Chinese.

`is_refusal` is the detector of the dataset checks' refusal balance and of `arena trace
--refused`. The patterns are a default; `CheckConfig.refusal_patterns` replaces them.
"""

from __future__ import annotations

import functools
import re

#: Refusal openers, matched case-insensitively near the start of an answer. "I can't"
#: alone is too broad ("I can't make Thursday" is a fine answer), so it needs a verb.
DEFAULT_REFUSAL_PATTERNS: tuple[str, ...] = (
    r"\bI(?:'m| am) sorry,? but\b",
    r"\bI apologi[sz]e,? but\b",
    r"\bas an AI\b",
    r"\bas a (?:large )?language model\b",
    r"\bI(?: can't| cannot| can not| won't| will not| am unable to| am not able to|'m unable to|'m not able to)"
    r" (?:help|assist|provide|comply|fulfil|fulfill|answer|do that|support|share|generate|create|write|give"
    r"|discuss|engage|disclose|tell)\b",
    r"^\s*I cannot\b",
    r"\bI must (?:decline|refuse)\b",
    # Chinese: apologies that lead into a refusal, "as an AI", "I cannot answer/provide ...".
    r"(?:对不起|抱歉|很抱歉|非常抱歉)[，,、\s]*(?:但是?)?[，,\s]*我?(?:无法|不能|不可以|没法|没有办法|不便|不会)",
    r"作为(?:一个|一名|一款)?(?:人工智能|AI|ai|语言模型|大语言模型|AI助手|人工智能助手)",
    r"我(?:无法|不能|没有办法|没法|不可以)(?:回答|提供|帮助|帮您|协助|满足|完成|讨论|透露|生成|处理|告诉)",
    r"我(?:必须|只能)?(?:拒绝|婉拒)",
)


@functools.lru_cache(maxsize=16)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern, ...]:
    """The patterns as one alternation (one scan of the answer instead of one per pattern);
    separately when joining could change them (a capturing group, whose backreferences
    would be renumbered, or global inline flags)."""
    each = tuple(re.compile(p, re.IGNORECASE) for p in patterns)
    if len(each) < 2 or any(p.groups for p in each):
        return each
    try:
        return (re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE),)
    except re.error:
        return each


def is_refusal(answer: str, patterns: tuple[str, ...] = DEFAULT_REFUSAL_PATTERNS, search_chars: int = 200) -> bool:
    """True when the answer opens like a refusal: a pattern matches within its first
    `search_chars` characters (curly apostrophes read as straight). The refusal-rate check
    and `arena trace --refused` both use it."""
    head = answer[:search_chars].replace("\u2019", "'")
    return any(p.search(head) for p in _compiled(tuple(patterns)))
