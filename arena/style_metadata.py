"""FastChat's `conv_metadata`: per side, the answer's token count and markdown counts.

Style control (ours in `arena.style`, FastChat's `compute_style_control`) reads, for each
side, `sum_assistant_{a,b}_tokens`, `header_count_{a,b}` (`h1`…`h6`),
`list_count_{a,b}` (`ordered`, `unordered`) and `bold_count_{a,b}` (`**`, `__`). The public
dumps carry them; for battles that do not (ours, the Kaggle 55k CSV) they are computed
here from the answers, by FastChat's rules (`add_markdown_info.py`): a side's answer is
its assistant turns joined by newlines; code blocks are removed first, as FastChat does
(each ```` ```…``` ```` block's inner text is deleted wherever it occurs, fences stay);
then its regexes count headers, list items and bold spans.

Token counts: FastChat counts with OpenAI's tiktoken BPE, whose vocabulary is a download
this offline service cannot make. Ours come from the project's language-aware segmenter
(`evaluators.lang.mixed_chars`: a word per Latin-script word, a token per CJK character,
punctuation not counted). Style control only uses the ratio (a − b) / (a + b + 1), which a
proportional unit barely moves, but the numbers are not tiktoken's.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from arena.battles import Battle

#: FastChat's style elements, side A then side B (`STYLE_CONTROL_ELEMENTS_V1`).
STYLE_KEYS: tuple[str, ...] = (
    "sum_assistant_a_tokens", "header_count_a", "list_count_a", "bold_count_a",
    "sum_assistant_b_tokens", "header_count_b", "list_count_b", "bold_count_b",
)

_CODE_BLOCK = re.compile("```([^`]*)```")
_HEADERS = [re.compile(rf"^#{{{level}}}\s", re.MULTILINE) for level in range(1, 7)]
_ORDERED = re.compile(r"^\s*\d+\.\s", re.MULTILINE)
_UNORDERED = re.compile(r"^\s*[-*+]\s", re.MULTILINE)
_BOLD_STARS = re.compile(r"\*\*[^*\n]+\*\*")
_BOLD_UNDERSCORES = re.compile(r"__[^_\n]+__")


def count_tokens(text: str) -> int:
    """Tokens of `text` as this project counts them (see the module docstring)."""
    from evaluators.lang import mixed_chars

    return len(mixed_chars(text))


def markdown_counts(text: str, suffix: str) -> dict[str, dict[str, int]]:
    """FastChat's `count_markdown_elements` of `text` after its code-block removal:
    `{"header_count<suffix>": {"h1": …}, "list_count<suffix>": {…}, "bold_count<suffix>": {…}}`."""
    for block in _CODE_BLOCK.findall(text):  # FastChat's remove_pattern, quirks included
        text = text.replace(block, "")
    return {
        f"header_count{suffix}": {f"h{k + 1}": len(p.findall(text)) for k, p in enumerate(_HEADERS)},
        f"list_count{suffix}": {"ordered": len(_ORDERED.findall(text)), "unordered": len(_UNORDERED.findall(text))},
        f"bold_count{suffix}": {"**": len(_BOLD_STARS.findall(text)), "__": len(_BOLD_UNDERSCORES.findall(text))},
    }


def has_style_counts(meta: dict[str, Any] | None) -> bool:
    """Whether `meta` holds every style element FastChat's style control reads."""
    return meta is not None and all(_count_value(meta.get(k)) is not None for k in STYLE_KEYS)


def compute_conv_metadata(battle: Battle) -> dict[str, Any] | None:
    """`conv_metadata` computed from the battle's answers (`answer_a/b` or the assistant
    turns), with `sum_user_tokens` and `turns` when it has a conversation; None when a
    side has no answer text."""
    texts = battle.answer_text("a"), battle.answer_text("b")
    if texts[0] is None or texts[1] is None:
        return None
    meta: dict[str, Any] = {}
    for side, text in zip("ab", texts):
        meta[f"sum_assistant_{side}_tokens"] = count_tokens(text)
        meta.update(markdown_counts(text, f"_{side}"))
    if battle.conversation_a:
        user = [t.content for t in battle.conversation_a if t.role == "user"]
        meta["sum_user_tokens"] = sum(count_tokens(c) for c in map(_text_of, user) if c)
        meta["turns"] = len(user)
    return meta


def with_conv_metadata(battle: Battle) -> dict[str, Any] | None:
    """The battle's `conv_metadata` with FastChat's style elements filled in from its
    answers where they are missing (the given ones win); unchanged when it has no texts."""
    given = battle.conv_metadata
    if has_style_counts(given):
        return given
    computed = compute_conv_metadata(battle)
    if computed is None:
        return given
    return {**computed, **{k: v for k, v in (given or {}).items() if _keep(k, v)}}


def style_counts(battle: Battle) -> tuple[float, ...] | None:
    """The eight style elements (`STYLE_KEYS` order, dict counts summed, as FastChat's
    `extract_style_feature`) from `conv_metadata`, else computed from the answers; None
    when neither is there."""
    meta = with_conv_metadata(battle)
    if not has_style_counts(meta):
        return None
    return tuple(float(_count_value(meta[k])) for k in STYLE_KEYS)  # type: ignore[index, arg-type]


def _keep(key: str, value: Any) -> bool:
    """A given entry overrides a computed one unless it is a style element without a usable count."""
    return key not in STYLE_KEYS or _count_value(value) is not None


def _count_value(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()):
        return float(sum(value.values()))
    return None


def _text_of(content: Any) -> str | None:
    from arena.battles import turn_text

    return turn_text(content)
