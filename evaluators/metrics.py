"""Benchmark metrics, looked up by name, and their aggregates with standard errors.

Every metric scores ONE sample and returns a float; the per-sample values are kept
(the regression gate pairs them across runs). A metric whose corpus value is a ratio
(`word_perplexity`, `bits_per_byte`, ...) also gives each sample a weight (words, bytes),
and its aggregation turns `sum(values) / sum(weights)` into the reported number — the
same items lm-evaluation-harness logs as `[loglikelihood, n_words]` pairs.

Names and semantics follow lm-evaluation-harness where it has the metric (`exact_match`,
`acc`, `acc_norm`, `acc_bytes`, `word_perplexity`, `byte_perplexity`, `bits_per_byte`,
`perplexity`); `token_f1`, `rouge_l`, `bleu` and `chrf` are sentence-level scores averaged
over samples (lm-eval's `chrf` is corpus-level, so ours is not exported under that name).

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

import inspect
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Union

import msgspec
import numpy as np

OutputType = Literal["generate_until", "multiple_choice", "loglikelihood_rolling"]
OUTPUT_TYPES: tuple[OutputType, ...] = ("generate_until", "multiple_choice", "loglikelihood_rolling")


# --- what a metric sees of one sample --------------------------------------------------


class GenerationOutcome(msgspec.Struct, frozen=True):
    """A generated answer and its reference answer(s) (the best-matching one counts)."""

    response: str
    references: tuple[str, ...]


class ChoiceOutcome(msgspec.Struct, frozen=True):
    """Log-likelihood of each choice given the prompt; `gold` holds the correct indices."""

    loglikelihoods: tuple[float, ...]
    is_greedy: tuple[bool, ...]
    choices: tuple[str, ...]
    gold: tuple[int, ...]


class RollingOutcome(msgspec.Struct, frozen=True):
    """Total log-likelihood (natural log) of a whole text."""

    loglikelihood: float
    text: str


Outcome = Union[GenerationOutcome, ChoiceOutcome, RollingOutcome]


# --- aggregations ------------------------------------------------------------------------


@dataclass(frozen=True)
class Aggregation:
    """How per-sample values become one number.

    `from_ratio` maps r = sum(values) / sum(weights) (vectorised over bootstrap rounds)
    to the reported value. `closed_form_stderr` is None when the aggregate has no simple
    standard error (a nonlinear function of a ratio): those get a bootstrap one.
    """

    name: str
    from_ratio: Callable[[np.ndarray], np.ndarray]
    closed_form_stderr: Callable[[np.ndarray], float] | None = None


def _mean_stderr(values: np.ndarray) -> float:
    # Sample standard deviation over sqrt(n), as lm-eval's `mean_stderr`.
    if len(values) < 2:
        return math.nan
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


AGGREGATIONS: dict[str, Aggregation] = {
    a.name: a
    for a in (
        Aggregation("mean", lambda r: r, _mean_stderr),
        # lm-eval's `perplexity`: exp(-mean loglikelihood), one item per document.
        Aggregation("perplexity", lambda r: np.exp(-r)),
        # lm-eval's `weighted_perplexity`: exp(-sum ll / sum words-or-bytes).
        Aggregation("weighted_perplexity", lambda r: np.exp(-r)),
        Aggregation("bits_per_byte", lambda r: -r / math.log(2)),
    )
}


# --- the registry ------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A registered metric: what it scores, how it aggregates, which way is better."""

    name: str
    output_type: OutputType
    higher_is_better: bool
    aggregation: str
    score: Callable[..., float]
    weight: Callable[[Outcome], float] | None = None
    options: frozenset[str] = frozenset()
    #: Same name and per-sample semantics in lm-evaluation-harness, so an exported task keeps it.
    in_lm_eval: bool = True


METRICS: dict[str, Metric] = {}


def register_metric(
    name: str,
    *,
    output_type: OutputType,
    higher_is_better: bool = True,
    aggregation: str = "mean",
    weight: Callable[[Outcome], float] | None = None,
    in_lm_eval: bool = True,
) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Register `fn(outcome, **options) -> float` under `name`; keyword-only parameters
    of `fn` become the options a task may set in its `metric_list` entry."""

    def decorate(fn: Callable[..., float]) -> Callable[..., float]:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"metric {name!r}: unknown aggregation {aggregation!r}")
        options = frozenset(
            p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY
        )
        METRICS[name] = Metric(name, output_type, higher_is_better, aggregation, fn, weight, options, in_lm_eval)
        return fn

    return decorate


def get_metric(name: str) -> Metric:
    """The registered metric called `name`; a KeyError lists the known names."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}") from None


def metrics_for(output_type: OutputType) -> list[str]:
    """Names of the metrics that apply to `output_type`, sorted."""
    return sorted(n for n, m in METRICS.items() if m.output_type == output_type)


#: What lm-eval computes when a task names no metrics.
DEFAULT_METRICS: dict[OutputType, tuple[str, ...]] = {
    "generate_until": ("exact_match",),
    "multiple_choice": ("acc", "acc_norm"),
    "loglikelihood_rolling": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
}


# --- generate_until ----------------------------------------------------------------------


def _best(outcome: GenerationOutcome, fn: Callable[[str, str], float]) -> float:
    # Several acceptable references: the best-matching one counts (lm-eval, SQuAD).
    if not outcome.references:
        return 0.0
    return max(fn(outcome.response, ref) for ref in outcome.references)


_PUNCT_TABLE = str.maketrans("", "", string.punctuation)
_DIGIT_TABLE = str.maketrans("", "", string.digits)


def _drop_punctuation(text: str) -> str:
    """Every Unicode punctuation character removed (ASCII and CJK: `.,!?` and `。，！？“”`)."""
    import unicodedata

    return "".join(c for c in text.translate(_PUNCT_TABLE) if unicodedata.category(c)[0] != "P")


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
        for pattern in regexes_to_ignore:
            text = re.sub(pattern, "", text)
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


# --- multiple_choice ---------------------------------------------------------------------


def _argmax_in_gold(outcome: ChoiceOutcome, lengths: Sequence[float]) -> float:
    lls = np.asarray(outcome.loglikelihoods, dtype=float) / np.maximum(np.asarray(lengths, dtype=float), 1.0)
    return float(int(np.argmax(lls)) in outcome.gold)


@register_metric("acc", output_type="multiple_choice")
def acc(outcome: ChoiceOutcome) -> float:
    """1.0 when the most likely choice is a gold one."""
    return _argmax_in_gold(outcome, [1.0] * len(outcome.choices))


@register_metric("acc_norm", output_type="multiple_choice")
def acc_norm(outcome: ChoiceOutcome) -> float:
    """Like `acc`, with each choice's log-likelihood divided by its length in characters
    (lm-eval's `acc_norm`)."""
    return _argmax_in_gold(outcome, [len(c) for c in outcome.choices])


@register_metric("acc_bytes", output_type="multiple_choice")
def acc_bytes(outcome: ChoiceOutcome) -> float:
    """Like `acc`, normalised by each choice's length in UTF-8 bytes (lm-eval's `acc_bytes`)."""
    return _argmax_in_gold(outcome, [len(c.encode("utf-8")) for c in outcome.choices])


# --- loglikelihood_rolling ---------------------------------------------------------------


def count_words(text: str) -> int:
    """Words as lm-eval counts them for `word_perplexity`."""
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    """UTF-8 bytes, the unit of `byte_perplexity` and `bits_per_byte`."""
    return len(text.encode("utf-8"))


def _loglikelihood(outcome: RollingOutcome) -> float:
    return float(outcome.loglikelihood)


register_metric("perplexity", output_type="loglikelihood_rolling", higher_is_better=False,
                aggregation="perplexity", in_lm_eval=False)(_loglikelihood)
register_metric("word_perplexity", output_type="loglikelihood_rolling", higher_is_better=False,
                aggregation="weighted_perplexity", weight=lambda o: count_words(o.text))(_loglikelihood)
register_metric("byte_perplexity", output_type="loglikelihood_rolling", higher_is_better=False,
                aggregation="weighted_perplexity", weight=lambda o: count_bytes(o.text))(_loglikelihood)
register_metric("bits_per_byte", output_type="loglikelihood_rolling", higher_is_better=False,
                aggregation="bits_per_byte", weight=lambda o: count_bytes(o.text))(_loglikelihood)


# --- scoring and aggregating -------------------------------------------------------------


def score_sample(name: str, outcome: Outcome, options: dict | None = None) -> tuple[float, float]:
    """(value, weight) of one sample under metric `name` with its task options.

    The weight is 1.0 except for ratio metrics (words or bytes of the scored text)."""
    metric = get_metric(name)
    value = metric.score(outcome, **(options or {}))
    weight = float(metric.weight(outcome)) if metric.weight is not None else 1.0
    return float(value), weight


class Aggregate(msgspec.Struct, frozen=True):
    """One metric over a set of samples. `stderr` is NaN when it cannot be estimated
    (fewer than two samples); `stderr_method` says how it was estimated."""

    value: float
    stderr: float
    n: int
    stderr_method: Literal["closed_form", "bootstrap", "none"]


def aggregate_value(aggregation: str, values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The aggregate of per-sample `values` (and `weights`, default 1)."""
    values = np.asarray(values, dtype=float)
    weights = np.ones_like(values) if weights is None else np.asarray(weights, dtype=float)
    if len(values) == 0 or weights.sum() == 0:
        return math.nan
    ratio = np.asarray(values.sum() / weights.sum())
    return float(AGGREGATIONS[aggregation].from_ratio(ratio))


def bootstrap_counts(n: int, rounds: int, rng: np.random.Generator):
    """Yield (k, n) matrices of resampling counts, `rounds` rows in all: row i says how
    often each of the n items is drawn in bootstrap round i. Counts, not index lists, so
    any ratio aggregate of a round is one matrix product; chunks stay near 2M cells."""
    chunk = max(1, min(256, 2_000_000 // max(n, 1)))
    done = 0
    while done < rounds:
        k = min(chunk, rounds - done)
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=k)
        done += k


def aggregate(
    aggregation: str,
    values: Sequence[float] | np.ndarray,
    weights: Sequence[float] | np.ndarray | None = None,
    *,
    bootstrap_rounds: int = 1000,
    seed: int = 1234,
) -> Aggregate:
    """Aggregate per-sample values with a standard error: closed form (sample std /
    sqrt(n)) for means, a seeded bootstrap for the rest (perplexities, bits per byte)."""
    if aggregation not in AGGREGATIONS:
        raise KeyError(f"unknown aggregation {aggregation!r}; known: {', '.join(sorted(AGGREGATIONS))}")
    spec = AGGREGATIONS[aggregation]
    v = np.asarray(values, dtype=float)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=float)
    value = aggregate_value(aggregation, v, w)
    n = len(v)
    if n < 2:
        return Aggregate(value, math.nan, n, "none")
    if spec.closed_form_stderr is not None and np.all(w == 1.0):
        return Aggregate(value, spec.closed_form_stderr(v), n, "closed_form")
    rng = np.random.default_rng(seed)
    replicates = []
    for counts in bootstrap_counts(n, bootstrap_rounds, rng):
        with np.errstate(divide="ignore", invalid="ignore"):
            replicates.append(spec.from_ratio((counts @ v) / (counts @ w)))
    reps = np.concatenate(replicates)
    reps = reps[np.isfinite(reps)]
    stderr = float(np.std(reps, ddof=1)) if len(reps) > 1 else math.nan
    return Aggregate(value, stderr, n, "bootstrap")
