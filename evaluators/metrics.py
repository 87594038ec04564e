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

The text metrics of `generate_until` tasks, and how each tokenises (Chinese too), live in
`evaluators.text_metrics`; importing this module registers them.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


# The generate_until metrics register themselves on import (once the registry above exists).
from evaluators import text_metrics as _text_metrics  # noqa: E402,F401
