"""Text features shared by the dataset checks: normalised tokens, shingles, facts.

A few regular expressions tuned to what the checks need (e.g. "3.5" must stay one token
so that "3.5" and "35" never normalise alike), over `evaluators.lang`'s normalisation:
CJK text is compared by character (so a one-character edit such as 很 → 非常 changes
few shingles) and its negations are read from jieba words ("非常" is not "非").
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Set

import numpy as np

from evaluators import lang

# A number keeps its inner separators ("3.5", "1,000", "12:30"); otherwise words, or any
# other single non-space character (kept when it is a symbol such as "×" or "+").
_TOKEN = re.compile(r"\d+(?:[.,:/]\d+)*|\w+|[^\w\s]")
_NUMBER = re.compile(r"(?<![^\W\d])\d+(?:[.,]\d+)*")  # not the "2" of "H2O" or "mp3"
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+")
_WORD = re.compile(r"[^\W\d_]+")
# What may precede a sentence-initial word: the start, end punctuation, a colon, an
# opening quote or bracket, a bullet.
_SENTENCE_OPENERS = set(".!?:;\n\"'“‘(*-•#>|")
# A period between two digits ("3.5") does not end a sentence; one without a following
# space ("Mira.How") does.
_SENTENCE_END = re.compile(r"\n+|[!?。！？]+|(?<!\d)\.+|\.+(?!\d)")

#: Words too common to carry an answer's content (answers are compared on the rest).
#: Negations are deliberately absent: "is red" and "is not red" must differ.
STOPWORDS = frozenset(
    "a an the is are was were be been being of to in on at by for with from as and or "
    "it its this that these those there their they he she his her i you your we our "
    "do does did has have had will would can could should may might must so than then "
    "which who whom what when where why how s me my mine us him them into onto about over under "
    "up down out off if but just also very some any all more most other such only own same too "
    "please tell give let get make".split()
)
NEGATIONS = frozenset({"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "t", "cannot"})
#: Chinese negators, matched against jieba words (so 非常 "very" is not the negator 非).
NEGATIONS_ZH = frozenset({"不", "没", "没有", "无", "未", "别", "非", "不是", "不能", "不会", "不要", "并非", "从未",
                          "从不", "无法", "不可", "否"})
_POLARITY = {"yes": "yes", "true": "yes", "correct": "yes", "no": "no", "false": "no", "incorrect": "no"}


def normalise_tokens(text: str) -> list[str]:
    """Case-folded tokens of `text` normalised by `lang.normalize` (full-width forms, CJK
    punctuation, Traditional Chinese as Simplified), punctuation dropped, symbols and
    numbers kept, CJK by character."""
    text = lang.normalize(text, t2s=True).casefold()
    tokens = _kept_token().findall(text)
    return lang.split_cjk(tokens) if lang.has_cjk(text) else tokens


@functools.lru_cache(maxsize=1)
def _kept_token() -> re.Pattern:
    r"""`_TOKEN` less its punctuation tokens, which are all one character: "_" alone (the
    one punctuation character `\w` matches; a longer word run keeps it) and any single
    `[^\w\s]` of category P. Matching them not at all costs less than a look-up per token."""
    others = "".join(sorted(_punctuation() - {"_"}))
    return re.compile(r"\d+(?:[.,:/]\d+)*|\w\w+|[^\W_]|[^\w\s%s]" % re.escape(others))


@functools.lru_cache(maxsize=1)
def _punctuation() -> frozenset[str]:
    """Every character of Unicode category P (punctuation). All lie in planes 0 and 1
    (the supplementary planes above hold ideographs, tags and private use), which
    tests/evaluators/test_text_rewrites.py checks against the whole range."""
    return frozenset(c for c in map(chr, range(0x20000)) if unicodedata.category(c)[0] == "P")


def negated(text: str, tokens: list[str]) -> bool:
    """Whether `text` (with its `normalise_tokens`) holds a negation, in English or Chinese."""
    if set(tokens) & NEGATIONS:
        return True
    return lang.has_cjk(text) and bool(set(lang.words(text)) & NEGATIONS_ZH)


def shingles(tokens: list[str], size: int) -> set[str]:
    """Word `size`-grams of `tokens`; a text shorter than `size` is one shingle (none if empty)."""
    if not tokens:
        return set()
    if len(tokens) <= size:
        return {" ".join(tokens)}
    return {" ".join(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """|a ∩ b| / |a ∪ b|, 1.0 for two empty sets."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def numbers(text: str) -> set[str]:
    """Numbers written in digits, with thousands separators removed ("1,000" → "1000")."""
    found = set()
    for match in _NUMBER.finditer(text):
        value = match.group()
        if _THOUSANDS.fullmatch(value):
            value = value.replace(",", "")
        found.add(value)
    return found


def words(text: str) -> set[str]:
    """Case-folded letter runs of `text` (possessive "'s" and hyphens split off); for CJK
    text also its jieba words."""
    found = {w.casefold() for w in _WORD.findall(unicodedata.normalize("NFKC", text))}
    return found | set(lang.words(text)) if lang.has_cjk(text) else found


def capitalised_words(text: str) -> set[str]:
    """Capitalised words that do not open a sentence: a cheap named-entity detector.

    Sentence-initial words are skipped because capitals there say nothing; "I" too.
    """
    text = unicodedata.normalize("NFKC", text)
    found = set()
    for match in _WORD.finditer(text):
        word = match.group()
        if not word[0].isupper() or word == "I":
            continue
        at = match.start()  # the character before the word, spaces and tabs skipped
        while at and text[at - 1] in " \t":
            at -= 1
        if not at or text[at - 1] in _SENTENCE_OPENERS:
            continue
        found.add(word)
    return found


def key_facts(text: str) -> set[str]:
    """Numbers and named entities of `text`: what must not change between two answers
    (in Chinese, which has no capitals: its nouns, by jieba's tagger)."""
    return set().union(*_key_fact_kinds(text))


def has_key_fact_outside(text: str, known: set[str]) -> bool:
    """`bool(key_facts(text) - known)`, stopping at the first kind with one: jieba's
    part-of-speech tagger (the slow part) runs only when every number and name is known."""
    return any(kind - known for kind in _key_fact_kinds(text))


def _key_fact_kinds(text: str) -> Iterator[Set[str]]:
    yield numbers(text)
    yield {w.casefold() for w in capitalised_words(text)}
    yield lang.cjk_nouns(text)


def content_tokens(tokens: Iterable[str]) -> set[str]:
    """Tokens that are not stopwords (negations kept)."""
    return {t for t in tokens if t not in STOPWORDS}


def polarity(tokens: list[str]) -> str | None:
    """'yes' or 'no' when an answer opens with yes/no/true/false, else None."""
    return _POLARITY.get(tokens[0]) if tokens else None


def sentences(text: str) -> list[str]:
    """Non-empty sentence-like pieces of `text`, split at . ! ? and newlines."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def has_sentences(text: str, n: int) -> bool:
    """`len(sentences(text)) >= n`, stopping at the `n`th sentence."""
    found, at = 0, 0
    for end in _SENTENCE_END.finditer(text):
        if text[at : end.start()].strip():
            found += 1
            if found >= n:
                return True
        at = end.end()
    return found + bool(text[at:].strip()) >= n


def last_sentence(text: str) -> str:
    """The last sentence-like piece of `text`: the question, in a context-then-question prompt."""
    pieces = sentences(text)
    return pieces[-1] if pieces else ""


# --------------------------------------------------------------------------- format

_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+\S")
_CLOSERS = "\"'”’)]»"


def answer_structure(answer: str) -> str | None:
    """json | code_block | markdown_list | prose (None for an empty answer)."""
    text = answer.strip()
    if not text:
        return None
    if text[0] in "{[":
        try:
            json.loads(text)
            return "json"
        except ValueError:
            pass
    if text.startswith("```"):
        return "code_block"
    lines = [line for line in text.splitlines() if line.strip()]
    items = sum(1 for line in lines if _LIST_ITEM.match(line))
    if items >= 2 and items * 2 >= len(lines):
        return "markdown_list"
    return "prose"


def _has_words(text: str, n: int) -> bool:
    """Whether `text` has at least `n` words (`lang.words` for CJK text, else by spaces)."""
    return lang.has_words(text, n) if lang.has_cjk(text) else len(text.split()) >= n


def answer_ending(answer: str, min_words: int) -> str | None:
    """How a prose answer of at least `min_words` words ends: with . ! ? … or without.

    None for shorter or non-prose answers: "Paris" has no punctuation style.
    """
    text = answer.strip().rstrip(_CLOSERS + "”’」』》）")
    if not _has_words(text, min_words) or answer_structure(answer) != "prose":
        return None
    return "ends with . ! ?" if text[-1] in lang.SENTENCE_END else "no final punctuation"


# -------------------------------------------------------------------------- garbling

# UTF-8 read as Latin-1/cp1252: "é" → "Ã©", "’" → "â€™", a no-break space → "Â ".
_CP1252_SPECIALS = "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ"
_MOJIBAKE = re.compile(f"[ÃÂ][\u0080-\u00bf{_CP1252_SPECIALS}]|â€[\u0080-\u00bf{_CP1252_SPECIALS}]?")
_RULE_CHARS = set("-=_*#~.")  # long runs of these are markdown rules and separators
_NEVER_RUNS = np.array(sorted(map(ord, _RULE_CHARS | set(" \t\n\r"))), dtype=np.uint32)


def garbling(text: str, *, char_run: int, word_run: int, max_nonprintable: float, may_run: bool = True) -> list[str]:
    """What looks broken in `text`, one phrase per problem (empty when it looks fine):
    U+FFFD, mojibake, a share of non-printable characters above `max_nonprintable`, a
    character repeated `char_run`+ times, a word repeated `word_run`+ times in a row.
    `may_run=False`: the caller knows no character repeats `char_run` times in a row
    (`char_run_texts`), so that search is skipped."""
    problems = []
    if bad := text.count("\ufffd"):
        problems.append(f"{bad} U+FFFD replacement character(s)")
    if not text.isascii() and (mojibake := _MOJIBAKE.findall(text)):
        problems.append(f"mojibake {', '.join(repr(m) for m in sorted(set(mojibake))[:3])}")
    if text:
        # str.isprintable is False for every category-C character (and spaces other than
        # " "): when it holds, the per-character count (slow in Python) would find none.
        printable = text.replace("\n", "").replace("\t", "").replace("\r", "").isprintable()
        hidden = 0 if printable else sum(1 for c in text if unicodedata.category(c)[0] == "C" and c not in "\n\t\r")
        if hidden / len(text) > max_nonprintable:
            problems.append(f"{hidden / len(text):.0%} non-printable characters")
    char_loop, word_loop = _run_patterns(char_run, word_run)
    # The pattern only where some character repeated `char_run` times is there at all: a
    # substring search per distinct character is far cheaper than a backreference per position.
    if (may_run and any(c * char_run in text for c in set(text).difference(_RULE_CHARS))
            and (run := next((r for r in char_loop.finditer(text) if r.group(1) not in _RULE_CHARS), None))):
        problems.append(f"{run.group(1)!r} repeated {len(run.group())} times")
    if loop := word_loop.search(text):
        problems.append(f"the word {loop.group(1)!r} repeated {word_run}+ times in a row")
    return problems


def char_run_texts(texts: list[str], char_run: int) -> np.ndarray:
    """Which of `texts` may hold a character repeated `char_run`+ times in a row (one bool
    each): every such text is marked, and a text not marked has no run `garbling` would
    report. One vectorised pass over a block of texts (code points compared with their
    neighbours; whitespace and rule characters, which `garbling` never reports, skipped)
    instead of a substring search per distinct character of each text."""
    marked = np.zeros(len(texts), dtype=bool)
    if char_run <= 1:
        return marked | np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)).astype(bool)
    codes = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)))
    same = codes[1:] == codes[:-1]
    cut = ends[(ends >= 1) & (ends <= len(same))] - 1
    same[cut] = False  # the last character of a text and the first of the next
    at = np.flatnonzero(same)  # at[j]: codes[at[j]] == codes[at[j] + 1]
    at = at[~np.isin(codes[at], _NEVER_RUNS)]
    k = char_run - 2  # a run of char_run characters is k + 1 consecutive positions of `at`
    if len(at) > k:
        starts = at[: len(at) - k][at[k:] - at[: len(at) - k] == k]
        marked[np.searchsorted(ends, starts, side="right")] = True
    return marked


@functools.lru_cache(maxsize=8)
def _run_patterns(char_run: int, word_run: int) -> tuple[re.Pattern, re.Pattern]:
    """A character repeated `char_run`+ times; a word repeated `word_run`+ times in a row.
    The word is captured possessively (`\\w++`): a shorter capture could never be followed
    by `\\W`, so backtracking into it only cost time."""
    return (re.compile(r"(\S)\1{%d,}" % (char_run - 1)),
            re.compile(r"\b(\w++)(?:\W+\1\b){%d,}" % (word_run - 1), re.IGNORECASE))
