"""Metrics on hand-checked values, and their aggregates with standard errors."""

import math

import numpy as np
import pytest
from sacrebleu.metrics import CHRF

from evaluators.metrics import (
    METRICS,
    ChoiceOutcome,
    GenerationOutcome,
    RollingOutcome,
    aggregate,
    get_metric,
    metrics_for,
    register_metric,
    score_sample,
)


def gen(response, *refs):
    return GenerationOutcome(response, tuple(refs))


def value(name, outcome, **options):
    return score_sample(name, outcome, options)[0]


def test_exact_match_is_strict_by_default_and_normalises_like_lm_eval():
    assert value("exact_match", gen("Paris", "Paris")) == 1.0
    assert value("exact_match", gen(" Paris", "Paris")) == 0.0
    assert value("exact_match", gen(" Paris", "Paris"), strip=True) == 1.0
    assert value("exact_match", gen("PARIS", "Paris"), ignore_case=True) == 1.0
    assert value("exact_match", gen("Paris!", "Paris"), ignore_punctuation=True) == 1.0
    assert value("exact_match", gen("The answer is 42", "42"), regexes_to_ignore=["The answer is "]) == 1.0
    assert value("exact_match", gen("x1", "x2"), ignore_numbers=True) == 1.0


def test_a_backtracking_pattern_fails_in_a_second_instead_of_holding_the_worker():
    """`regexes_to_ignore` comes from an untrusted task file: `(a+)+$` on 40 a's and a b ran
    for an hour under `re` (the worker ignored SIGTERM meanwhile). The `regex` engine reads
    that one in linear time; a pattern that backtracks there too fails with its name."""
    import time

    from evaluators.safe_regex import RegexTooSlow

    assert value("exact_match", gen("a" * 40 + "b", "b"), regexes_to_ignore=["(a+)+$"]) == 0.0
    started = time.monotonic()
    with pytest.raises(RegexTooSlow, match=r"pattern '\(a\|aa\)\+\$' ran over 1 s"):
        value("exact_match", gen("a" * 40 + "!", "x"), regexes_to_ignore=["(a|aa)+$"])
    assert time.monotonic() - started < 30


def test_generation_metrics_take_the_best_reference():
    assert value("exact_match", gen("4", "four", "4")) == 1.0
    assert value("token_f1", gen("the cat sat", "dog", "a cat sat down")) == pytest.approx(0.8)


def test_token_f1_is_squad_f1():
    # normalised: pred [cat, sat], ref [cat, sat, down]: P = 1, R = 2/3 -> F1 = 0.8
    assert value("token_f1", gen("The cat, sat.", "a cat sat down")) == pytest.approx(0.8)
    assert value("token_f1", gen("", "")) == 1.0
    assert value("token_f1", gen("x", "")) == 0.0
    assert value("token_f1", gen("dog", "cat")) == 0.0


def test_rouge_l_is_lcs_f_measure():
    # LCS("the cat sat on the mat", "the cat on mat") = 4 tokens: P = 4/6, R = 4/4 -> F = 0.8
    assert value("rouge_l", gen("the cat sat on the mat", "the cat on mat")) == pytest.approx(0.8)
    assert value("rouge_l", gen("cats running", "cat run"), use_stemmer=True) == pytest.approx(1.0)
    assert value("rouge_l", gen("cats running", "cat run")) == 0.0


def test_chrf_matches_sacrebleu_sentence_score():
    assert value("chrf", gen("the cat sat", "the cat sat")) == pytest.approx(100.0)
    expected = CHRF().sentence_score("the cat", ["the cat sat on the mat"]).score
    assert value("chrf", gen("the cat", "the cat sat on the mat")) == pytest.approx(expected)
    assert 0 < expected < 100


def test_acc_and_acc_norm_from_loglikelihoods():
    outcome = ChoiceOutcome((-2.0, -4.0), (False, False), ("a", "bbbb"), (1,))
    assert value("acc", outcome) == 0.0  # raw: choice 0 is likelier
    assert value("acc_norm", outcome) == 1.0  # per char: -2/1 < -4/4
    # One char, two bytes: character and byte normalisation disagree.
    outcome = ChoiceOutcome((-2.0, -3.0), (False, False), ("é", "ab"), (0,))
    assert value("acc_norm", outcome) == 0.0  # -2/1 < -3/2
    assert value("acc_bytes", outcome) == 1.0  # -2/2 > -3/2


def test_rolling_metrics_are_ratios_of_summed_loglikelihoods():
    docs = [RollingOutcome(-10.0, "a b c d e"), RollingOutcome(-6.0, "f g h")]
    for name, unit in (("word_perplexity", [5, 3]), ("byte_perplexity", [9, 5]), ("bits_per_byte", [9, 5])):
        pairs = [score_sample(name, d) for d in docs]
        assert [w for _, w in pairs] == unit
    values = [-10.0, -6.0]
    assert aggregate("weighted_perplexity", values, [5, 3]).value == pytest.approx(math.exp(16 / 8))
    assert aggregate("bits_per_byte", values, [9, 5]).value == pytest.approx(16 / 14 / math.log(2))
    assert aggregate("perplexity", values).value == pytest.approx(math.exp(8.0))


def test_mean_stderr_is_sample_std_over_sqrt_n():
    agg = aggregate("mean", [1, 0, 1, 1])
    assert agg.value == 0.75
    assert agg.stderr == pytest.approx(0.5 / 2)  # std (ddof=1) = 0.5, sqrt(4) = 2
    assert agg.stderr_method == "closed_form"
    assert math.isnan(aggregate("mean", [1.0]).stderr)


def test_bootstrap_stderr_is_seeded_and_near_the_delta_method():
    rng = np.random.default_rng(0)
    lls = rng.normal(-30, 5, size=300)
    words = rng.integers(8, 12, size=300).astype(float)
    a = aggregate("weighted_perplexity", lls, words, bootstrap_rounds=500, seed=7)
    b = aggregate("weighted_perplexity", lls, words, bootstrap_rounds=500, seed=7)
    assert a.stderr == b.stderr and a.stderr_method == "bootstrap"
    # delta method for exp(-sum ll / sum w): ppl * se(ratio)
    ratio_residuals = (lls - (lls.sum() / words.sum()) * words) / words.mean()
    delta = a.value * np.std(ratio_residuals, ddof=1) / math.sqrt(len(lls))
    assert a.stderr == pytest.approx(delta, rel=0.2)


def test_registry_by_name():
    assert set(metrics_for("multiple_choice")) >= {"acc", "acc_norm", "acc_bytes"}
    assert get_metric("bits_per_byte").higher_is_better is False
    assert "ignore_case" in METRICS["exact_match"].options
    with pytest.raises(KeyError, match="known metrics"):
        get_metric("bleu4")
    with pytest.raises(ValueError, match="already registered"):
        register_metric("acc", output_type="multiple_choice")(lambda o: 0.0)
