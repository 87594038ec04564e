"""The faster forms of the checks' text features give exactly what the plain forms gave:
punctuation left out by the token pattern instead of a category per token, a possessive word-run
pattern, refusal patterns joined into one alternation."""

from __future__ import annotations

import re
import sys
import unicodedata

import pytest

from evaluators import _text
from evaluators.refusals import DEFAULT_REFUSAL_PATTERNS, _compiled, is_refusal

TEXTS = [
    "Hello, world! It's 3.5 km (about 2 mi) — isn't it? 1,000 × 2 = 2,000; a+b=c.",
    "snake_case and __dunder__ and _ alone; «quoted» ¿qué? ¡sí! 100% #tag @user ~tilde `tick`",
    "中文的句子，有标点。还有「引号」和《书名》！数字３．５和全角ＡＢＣ",
    "Aegean word separator \U00010100 and \U00010101, musical symbol \U0001D11E, emoji 😀 and ideograph \U00020000",
    "the the the the the the the the the end",
    "The THE the The tHe the the the end, then then then",
    "word-word-word-word-word-word-word-word, a—a—a—a—a—a—a—a",
    "aaaaaaaaaaaaaaaaaaaaaaaaa and ==================== and ---------------------",
    "",
    "I'm sorry, but I cannot help with that.",
    "作为一个人工智能，我无法回答这个问题。",
    "I can't make Thursday, but Friday works.",
    "  I cannot say for sure.",
]


def test_punctuation_set_is_every_punctuation_character():
    assert _text._punctuation() == {c for c in map(chr, range(sys.maxunicode + 1))
                                    if unicodedata.category(c)[0] == "P"}


@pytest.mark.parametrize("text", TEXTS)
def test_normalise_tokens_drops_exactly_the_punctuation(text):
    from evaluators import lang

    folded = lang.normalize(text).casefold()
    plain = [t for t in _text._TOKEN.findall(folded) if len(t) > 1 or t.isalnum() or unicodedata.category(t)[0] != "P"]
    assert _text.normalise_tokens(text) == (lang.split_cjk(plain) if lang.has_cjk(folded) else plain)


def test_token_pattern_keeps_what_filtering_kept_for_every_character():
    """Each character of planes 0-1 alone, inside a word and between spaces: the pattern
    that never matches punctuation gives the tokens that filtering `_TOKEN`'s gave."""
    punctuation = _text._punctuation()
    chars = "".join(map(chr, range(0x20000)))
    for text in (chars, " ".join(chars), "a".join(chars), "_".join(chars), "1".join(chars)):
        assert _text._kept_token().findall(text) == [t for t in _text._TOKEN.findall(text) if t not in punctuation]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("word_run", [2, 3, 8])
def test_possessive_word_run_finds_what_the_backtracking_pattern_found(text, word_run):
    plain = re.search(r"\b(\w+)(?:\W+\1\b){%d,}" % (word_run - 1), text, re.IGNORECASE)
    fast = _text._run_patterns(20, word_run)[1].search(text)
    assert (fast and (fast.span(), fast.group(1))) == (plain and (plain.span(), plain.group(1)))


@pytest.mark.parametrize("text", TEXTS)
def test_joined_refusal_patterns_match_what_each_pattern_matched(text):
    assert len(_compiled(DEFAULT_REFUSAL_PATTERNS)) == 1
    each = any(re.search(p, text[:200].replace("\u2019", "'"), re.IGNORECASE) for p in DEFAULT_REFUSAL_PATTERNS)
    assert is_refusal(text) == each


def test_refusal_patterns_with_groups_are_kept_apart():
    patterns = (r"(no)\1", r"(yes)\1")  # joined, the second \1 would refer to the first group
    assert len(_compiled(patterns)) == 2
    assert is_refusal("yesyes", patterns) and not is_refusal("yesno", patterns)


@pytest.mark.parametrize("text", TEXTS + ["One. Two.", "One.", " . . Two", "3.5 and 4.5", "a\n\nb", "?!", "x"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_has_sentences_counts_as_sentences_does(text, n):
    assert _text.has_sentences(text, n) == (len(_text.sentences(text)) >= n)


@pytest.mark.parametrize("text", TEXTS + ["x" * 19, "x" * 20 + "-" * 30, "-" * 30, "ab" * 30, "\u00a0" * 25 + "y" * 20])
@pytest.mark.parametrize("char_run", [3, 20])
def test_character_runs_are_found_as_the_plain_pattern_found_them(text, char_run):
    runs = re.finditer(r"(\S)\1{%d,}" % (char_run - 1), text)
    plain = next((r for r in runs if r.group(1) not in _text._RULE_CHARS), None)
    found = [p for p in _text.garbling(text, char_run=char_run, word_run=99, max_nonprintable=1.0) if "repeated" in p]
    assert found == ([f"{plain.group(1)!r} repeated {len(plain.group())} times"] if plain else [])


@pytest.mark.parametrize("char_run", [2, 3, 20])
def test_char_run_texts_marks_every_text_with_a_run_and_no_run_across_texts(char_run):
    """Marked wherever `garbling` could report a run (a necessary condition, exact at the
    block's text boundaries): "x" * 10 twice in a row is two texts without a run of 20."""
    texts = TEXTS + ["", "x" * 19, "x" * 10, "x" * 10, "", "", "y" * 20, "z" * 20 + "-" * 30, "-" * 30, " " * 40,
                     "\ud800" * 25, "ab" * 30, "\u00a0" * 25 + "q" * 20, "", "w" * char_run, "w" * (char_run - 1)]
    marked = _text.char_run_texts(texts, char_run)
    for text, mark in zip(texts, marked.tolist()):
        plain = any(r.group(1) not in _text._RULE_CHARS for r in re.finditer(r"(\S)\1{%d,}" % (char_run - 1), text))
        assert mark or not plain, text
        assert mark == any(c * char_run in text for c in set(text) - _text._RULE_CHARS - set(" \t\n\r")), text
    assert not _text.char_run_texts(["x" * 10, "x" * 10], 20).any()
    assert _text.char_run_texts([], 20).tolist() == []


def test_ascii_text_is_its_own_normal_form():
    from evaluators import lang

    ascii_text = "".join(map(chr, range(128))) * 2
    assert lang.normalize(ascii_text) == unicodedata.normalize("NFKC", ascii_text).translate(lang._PUNCT) == ascii_text
    assert not lang.has_cjk(ascii_text) and lang.has_cjk("abc中")


USER_PATTERNS = (r"(\w+) \1 refuse", r"(?-i:NO WAY)", r"\bnope\b", r"de(?:cline|ny)d?", r"x{2,}y", r"[abc]+q")


def _plain_refusal(text, patterns):
    head = text[:200].replace("\u2019", "'")
    return any(re.search(p, head, re.IGNORECASE) for p in patterns)


def test_refusal_prefilter_never_hides_a_match():
    """The literal prefilter is a necessary condition: on texts mixing the patterns' own
    words with the characters `re.IGNORECASE` equates (İ/i/ı, ſ/s, K/k, σ/ς/Σ, µ/μ, ß),
    is_refusal answers exactly what searching with each pattern answers."""
    import random

    from evaluators.refusals import _needles, required_literals

    assert required_literals(r"\bI(?:'m| am) sorry,? but\b") == {" sorry"}
    assert required_literals(r"[abc]+") is None and _needles(("sorry", "[abc]+")) is None
    pieces = ["I'm sorry, but", "İ'M ſORRY, BUT", "I AM SORRY but", "as an AI", "AS AN Aİ", "as a large language model",
              "I can't help", "I CANNOT", "  I cannot", "I must decline", "i mUSt refuse", "对不起，我无法", "作为一个AI",
              "我无法回答", "我拒绝", "I won’t assist", "ok", "Sure!", "Σ", "ς", "ſ", "K", "µ", "ß", "ı", "\u0130", " ",
              "word word refuse", "WORD word refuse", "no way", "NO WAY", "nope", "denied", "xxxy", "XXy", "abcq", "\n"]
    rng = random.Random(0)
    for patterns in (DEFAULT_REFUSAL_PATTERNS, USER_PATTERNS):
        for _ in range(3000):
            text = "".join(rng.choice(pieces) + rng.choice(["", " ", ", "]) for _ in range(rng.randint(0, 6)))
            assert is_refusal(text, patterns) == _plain_refusal(text, patterns), (text, patterns)
    for text in TEXTS:
        assert is_refusal(text) == _plain_refusal(text, DEFAULT_REFUSAL_PATTERNS)
