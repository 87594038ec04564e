"""The text metrics of `generate_until` tasks: exact match, token F1, ROUGE-L, BLEU and
chrF, registered in `evaluators.metrics` by name; each scores one sample against its
best reference.

Tokenisation, per metric (text in CJK scripts is segmented by `evaluators.lang`):
- `exact_match`: the strings as lm-eval compares them; `ignore_punctuation` drops every
  Unicode punctuation character, CJK punctuation (`。，！？“”`) included.
- `token_f1`: SQuAD's normalisation and whitespace tokens; a pair with CJK text is compared
  as CMRC 2018 / DuReader do, each CJK character a token (other scripts by word).
- `rouge_l`: `rouge-score`'s tokenizer ([a-z0-9] words); a pair with CJK text is
  tokenised into jieba words, as OpenCompass scores Chinese ROUGE.
- `bleu`: sacrebleu's sentence BLEU with its `13a` tokenizer, or its `zh` tokenizer for CJK.
- `chrf`: characters, any script (sacrebleu).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache

from evaluators import safe_regex
from evaluators.metrics import GenerationOutcome, register_metric


def _best(outcome: GenerationOutcome, fn: Callable[[str, str], float]) -> float:
    # Several acceptable references: the best-matching one counts (lm-eval, SQuAD).
    if not outcome.references:
        return 0.0
    return max(fn(outcome.response, ref) for ref in outcome.references)


_PUNCT_TABLE = str.maketrans("", "", string.punctuation)
_DIGIT_TABLE = str.maketrans("", "", string.digits)


@lru_cache(maxsize=1)
def _ignored_punctuation() -> str:
    """What `ignore_punctuation` drops: ASCII punctuation (lm-eval's `string.punctuation`,
    symbols such as `$+<=>` included) and every Unicode punctuation character (CJK
    `。，！？“”` included), sorted."""
    from evaluators._text import _punctuation

    return "".join(sorted(set(string.punctuation) | _punctuation()))


@lru_cache(maxsize=1)
def _all_punct_table() -> dict[int, None]:
    return str.maketrans("", "", _ignored_punctuation())


def _drop_punctuation(text: str) -> str:
    """Every punctuation character removed (ASCII and CJK: `.,!?` and `。，！？“”`)."""
    return text.translate(_all_punct_table())


def _char_class(chars: str) -> str:
    """A regex character class of `chars`, as ranges of code points written `\\uXXXX`."""
    points = sorted(map(ord, chars))
    ranges: list[list[int]] = []
    for p in points:
        if ranges and p == ranges[-1][1] + 1:
            ranges[-1][1] = p
        else:
            ranges.append([p, p])
    esc = lambda p: f"\\u{p:04x}" if p <= 0xFFFF else f"\\U{p:08x}"  # noqa: E731
    return "[" + "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges) + "]+"


def exact_match_in_lm_eval(options: dict) -> dict:
    """lm-eval's `exact_match` options that score what ours score with `options`.

    lm-eval has no `strip`, and its `ignore_punctuation` drops ASCII punctuation only
    ("北京。" against "北京": 0 there, 1 here). With either, the steps after the task's
    regexes (punctuation, digits, surrounding whitespace) become regexes too, in our
    order; lm-eval runs its regexes first, then lower-cases, which neither creates nor
    removes those characters, so the result is the same text. Two exceptions, both in
    lower-casing (`ignore_case`): a capital sigma next to removed punctuation (Python picks
    σ or ς by the letters around it: "a?Σ" against "aΣ" is 0 here, 1 there), and "İ", which
    numpy's lower-casing in lm-eval cuts to one character."""
    if not (options.get("strip") or options.get("ignore_punctuation")):
        # `strip: false` said outright is still no lm-eval option (its TypeError).
        return {k: v for k, v in options.items() if k != "strip"}
    out = {k: v for k, v in options.items() if k not in ("strip", "ignore_punctuation", "ignore_numbers")}
    regexes = list(options.get("regexes_to_ignore") or ())
    if options.get("ignore_punctuation"):
        regexes.append(_char_class(_ignored_punctuation()))
    if options.get("ignore_numbers"):
        regexes.append("[0-9]+")
    if options.get("strip"):
        regexes += [r"^\s+", r"\s+$"]
    out["regexes_to_ignore"] = regexes
    return out


@register_metric("exact_match", output_type="generate_until")
def exact_match(
    outcome: GenerationOutcome,
    *,
    ignore_case: bool = False,
    ignore_punctuation: bool = False,
    ignore_numbers: bool = False,
    regexes_to_ignore: Sequence[str] = (),
    strip: bool = False,
) -> float:
    """1.0 when the response equals a reference after the same normalisation steps, in
    the same order, as lm-eval's `exact_match` (regexes, case, punctuation, digits);
    `strip` also trims surrounding whitespace."""

    def norm(text: str) -> str:
        for pattern in regexes_to_ignore:  # untrusted (a task's): under a time limit
            text = safe_regex.sub(pattern, "", text)
        if ignore_case:
            text = text.lower()
        if ignore_punctuation:
            text = _drop_punctuation(text)
        if ignore_numbers:
            text = text.translate(_DIGIT_TABLE)
        return text.strip() if strip else text

    return _best(outcome, lambda pred, ref: float(norm(pred) == norm(ref)))


def _squad_normalize(text: str) -> str:
    # SQuAD v1.1 answer normalisation: lower, drop punctuation and articles, squash spaces.
    text = text.lower().translate(_PUNCT_TABLE)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(pred: str, ref: str) -> float:
    from evaluators.lang import has_cjk, mixed_chars

    if has_cjk(pred) or has_cjk(ref):  # CMRC 2018 / DuReader: characters are the tokens
        pred_tokens, ref_tokens = mixed_chars(pred), mixed_chars(ref)
    else:
        pred_tokens = _squad_normalize(pred).split()
        ref_tokens = _squad_normalize(ref).split()
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    overlap = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


@register_metric("token_f1", output_type="generate_until", in_lm_eval=False)
def token_f1(outcome: GenerationOutcome) -> float:
    """SQuAD-style bag-of-tokens F1 after SQuAD normalisation (0–1); CJK text by character
    (CMRC 2018's convention)."""
    return _best(outcome, _token_f1)


class _CJKWords:
    """rouge-score's tokenizer interface over `evaluators.lang.words` (jieba for Han)."""

    def tokenize(self, text: str) -> list[str]:
        from evaluators.lang import words

        return words(text)


@lru_cache(maxsize=4)
def _rouge_scorer(use_stemmer: bool, cjk: bool = False):
    from rouge_score import rouge_scorer

    if cjk:
        return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_CJKWords())
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)


@register_metric("rouge_l", output_type="generate_until", in_lm_eval=False)
def rouge_l(outcome: GenerationOutcome, *, use_stemmer: bool = False) -> float:
    """ROUGE-L F-measure from `rouge-score` (0–1), over its [a-z0-9] tokens; a pair with CJK
    text over jieba words (as OpenCompass), so Chinese answers are scored, not zeroed."""
    from evaluators.lang import has_cjk

    def score(pred: str, ref: str) -> float:
        scorer = _rouge_scorer(bool(use_stemmer), has_cjk(pred) or has_cjk(ref))
        return scorer.score(ref, pred)["rougeL"].fmeasure

    return _best(outcome, score)


@lru_cache(maxsize=2)
def _bleu(tokenize: str):
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=tokenize, effective_order=True)


@register_metric("bleu", output_type="generate_until", in_lm_eval=False)
def bleu(outcome: GenerationOutcome) -> float:
    """Sentence-level BLEU from `sacrebleu` (0–100, effective order for short answers),
    against all references at once; its `zh` tokenizer when the text has CJK."""
    from evaluators.lang import has_cjk

    if not outcome.references:
        return 0.0
    cjk = has_cjk(outcome.response) or any(has_cjk(r) for r in outcome.references)
    return float(_bleu("zh" if cjk else "13a").sentence_score(outcome.response, list(outcome.references)).score)


@lru_cache(maxsize=4)
def _chrf(word_order: int):
    from sacrebleu.metrics import CHRF

    return CHRF(word_order=word_order)


@register_metric("chrf", output_type="generate_until", in_lm_eval=False)
def chrf(outcome: GenerationOutcome, *, word_order: int = 0) -> float:
    """Sentence-level chrF from `sacrebleu` on its 0–100 scale (`word_order=2` gives
    chrF++), against all references at once."""
    if not outcome.references:
        return 0.0
    return float(_chrf(int(word_order)).sentence_score(outcome.response, list(outcome.references)).score)
