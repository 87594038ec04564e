"""Refusals: how an answer that declines to help is recognised, in English and Chinese.

`is_refusal` is the detector of the dataset checks' refusal balance and of `arena trace
--refused`. The patterns are a default; `CheckConfig.refusal_patterns` replaces them.
"""

from __future__ import annotations

import functools
import re

from evaluators.lang import simplified

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
    r"作为(?:一个|一名|一款)?(?:人工智能|人工智慧|AI|ai|语言模型|大语言模型|AI助手|人工智能助手|人工智慧助手)",
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
    and `arena trace --refused` both use it. Traditional Chinese is read as Simplified
    (`抱歉，我無法回答` is `抱歉，我无法回答`), as every check reads it.

    Most answers contain none of the literal strings some pattern needs (`required_literals`),
    which a few substring searches tell ~10x faster than the patterns; only the others are
    searched with them."""
    head = simplified(answer[:search_chars].replace("\u2019", "'"))
    needles = _needles(tuple(patterns))
    if needles is not None:
        folded = _fold(head)
        if not any(needle in folded for needle in needles):
            return False
    return any(p.search(head) for p in _compiled(tuple(patterns)))


# ------------------------------------------------------------------ the literal prefilter


@functools.lru_cache(maxsize=16)
def _needles(patterns: tuple[str, ...]) -> tuple[str, ...] | None:
    """Case-folded strings one of which any match of any pattern contains, or None when
    some pattern needs no literal (then every answer is searched)."""
    if _fold_tables() is None:
        return None
    found: set[str] = set()
    for pattern in patterns:
        try:
            literals = required_literals(pattern)
        except (re.error, RecursionError):
            return None
        if not literals:
            return None
        found |= {_fold(lit) for lit in literals}
    return tuple(sorted(found))


def required_literals(pattern: str) -> frozenset[str] | None:
    """Literal strings one of which every match of `pattern` contains (as `re` matches it:
    case-insensitively, through `_fold`), the most selective such set: its shortest member
    as long as possible, then the fewest members. None when no literal is required."""
    from re import _parser

    return _best(_required_sets(_parser.parse(pattern, re.IGNORECASE)))


def _best(sets: list[frozenset[str]]) -> frozenset[str] | None:
    return max(sets, key=lambda s: (min(map(len, s)), -len(s)), default=None)


def _required_sets(items) -> list[frozenset[str]]:
    """Sets of alternative literals that the sequence `items` (a parsed pattern) must match
    one of: each run of consecutive literal characters, and what mandatory groups,
    alternations and repeats require. Anything else (classes, assertions, optional parts)
    ends a run and adds nothing: the sets stay necessary, only less selective."""
    from re import _constants as c

    sets, run = [], ""
    for op, av in items:
        if op is c.LITERAL:
            run += chr(av)
            continue
        if run:
            sets.append(frozenset([run]))
            run = ""
        if op is c.SUBPATTERN:
            sets += _required_sets(av[-1])
        elif op is c.ATOMIC_GROUP:
            sets += _required_sets(av)
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT) and av[0] >= 1:
            sets += _required_sets(av[2])
        elif op is c.BRANCH:
            branches = [_best(_required_sets(branch)) for branch in av[1]]
            if all(branches):
                sets.append(frozenset().union(*branches))
    if run:
        sets.append(frozenset([run]))
    return sets


def _fold(text: str) -> str:
    """`text` folded so that two characters `re.IGNORECASE` matches fold alike: simple
    lower case (str.lower's full mapping differs only for "İ"), and the extra equivalences
    `re` adds (ı/i, ſ/s, σ/ς, ...) mapped to one member."""
    before, after = _fold_tables()
    if text.isascii():  # no ASCII character is mapped by either table
        return text.lower()
    return text.translate(before).lower().translate(after)


@functools.lru_cache(maxsize=1)
def _fold_tables() -> tuple[dict[int, str], dict[int, str]] | None:
    try:
        from re._casefix import _EXTRA_CASES
    except ImportError:  # a Python whose re keeps its case fixes elsewhere: no prefilter
        return None
    canon = {c: c for c in _EXTRA_CASES}
    changed = True
    while changed:  # each character to the smallest of its class (classes are small)
        changed = False
        for c, others in _EXTRA_CASES.items():
            low = min(canon.get(o, o) for o in (c, *others))
            for member in (c, *others):
                if canon.get(member, member) != low:
                    canon[member], changed = low, True
    return {0x130: "i"}, {c: chr(low) for c, low in canon.items() if c != low}
