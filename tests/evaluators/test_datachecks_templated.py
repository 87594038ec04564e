"""Templated data: thousands of records sharing one long instruction wrapper fall into the
same LSH buckets. The duplicate checks must still find the planted near-copies, group
nothing else, and do work that grows linearly with the records (counted, not timed)."""

from __future__ import annotations

import numpy as np
import pytest

from evaluators.datachecks import CheckConfig, check_dataset
from evaluators.records import Conversation, Message

TEMPLATE = ("below is an instruction that describes a task paired with an input that provides further context "
            "write a response that appropriately completes the request and keep it short instruction")


def templated(n: int, seed: int = 0) -> tuple[list[Conversation], list[tuple[int, ...]]]:
    """`n` records: the template, a 10-word slot and a 12-word answer of random pseudo-words
    (word-bigram Jaccard between two records ≈ 0.4: below the 0.7 threshold, yet every LSH
    band made of template shingles only is shared by a large share of the file). Every
    tenth record is followed by a near-copy (one answer word substituted: Jaccard ≈ 0.9).
    Returns the records and the planted (original, copy) groups."""
    rng = np.random.default_rng(seed)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    vocab = sorted({"".join(syllables[s] for s in triple) for triple in rng.integers(0, len(syllables), (30_000, 3))})

    def words(k: int) -> str:
        return " ".join(vocab[w] for w in rng.integers(0, len(vocab), k))

    records: list[Conversation] = []
    planted = []
    while len(records) < n:
        prompt, answer = f"{TEMPLATE}: {words(10)}", words(12)
        records.append(Conversation(messages=(Message("user", prompt), Message("assistant", answer))))
        if len(records) % 10 == 1 and len(records) < n:
            tokens = answer.split()
            tokens[5] = words(1)
            records.append(Conversation(messages=(Message("user", prompt), Message("assistant", " ".join(tokens)))))
            planted.append((len(records) - 2, len(records) - 1))
    return records, planted


CONFIG = CheckConfig(checks=("near_duplicate", "conflicting_answers"))


@pytest.fixture(scope="module")
def reports():
    out = {}
    for n in (1500, 3000):
        records, planted = templated(n)
        out[n] = (check_dataset(records, config=CONFIG), planted)
    return out


def test_templated_records_group_only_the_planted_near_copies(reports):
    for report, planted in reports.values():
        assert [f.record_indices for f in report.by_check("near_duplicate")] == planted
        assert report.by_check("conflicting_answers") == []


@pytest.mark.parametrize("check", ["near_duplicate", "conflicting_answers"])
def test_templated_records_cost_linear_work(reports, check):
    """Before the bucket cap, 1,000 such records made ~500k candidate pairs, each compared
    exactly in Python; the count grew with the square of the file."""
    small, large = (reports[n][0].summary[check].stats for n in (1500, 3000))
    for stats, n in ((small, 1500), (large, 3000)):
        assert stats["compared"] <= stats["candidate_pairs"] <= 20 * n, stats
    # Twice the records, about twice the work (a quadratic search would be ~4×).
    for work in ("candidate_pairs", "compared"):
        assert large[work] <= 2.6 * max(small[work], 100), (small, large)


@pytest.fixture(scope="module")
def overlap_reports():
    """Training and held-out records from one template; 10 held-out prompts nearly copy a
    training prompt (one slot word substituted)."""
    out = {}
    for n in (1500, 3000):
        records, _ = templated(n)
        held, _ = templated(n // 10, seed=1)
        planted = []
        for k, i in enumerate(range(5, n, n // 10)[:10]):  # not a planted near-copy pair (0, 1 mod 10)
            prompt = records[i].messages[0].content.split()
            prompt[-3] = "zuzuzu"
            held[k] = Conversation(messages=(Message("user", " ".join(prompt)), Message("assistant", "fine")))
            planted.append((i, k))
        report = check_dataset(records, eval_records=held, config=CheckConfig(checks=("train_eval_overlap",)))
        out[n] = (report, planted)
    return out


def test_templated_train_eval_overlap_finds_the_copies_with_linear_work(overlap_reports):
    """Every training prompt shares the template's LSH buckets with every held-out prompt:
    pairing them all was n_train × n_eval exact comparisons. Eval prompts first, under the
    bucket cap, the work grows linearly and the planted copies are still found."""
    for report, planted in overlap_reports.values():
        found = sorted((f.record_indices[0], f.details["eval_indices"][0]) for f in report.by_check("train_eval_overlap"))
        assert found == planted
    small, large = (overlap_reports[n][0].summary["train_eval_overlap"].stats for n in (1500, 3000))
    for stats, n in ((small, 1500), (large, 3000)):
        # Template-only pairs sit near the threshold (Jaccard ~0.55), where the signatures
        # cannot rule them out: each training prompt is compared with a few dozen held-out
        # prompts (the first of each large bucket), not with all n / 10 of them.
        assert stats["compared"] <= stats["candidate_pairs"] <= 64 * n, stats
        assert stats["compared"] <= 0.4 * n * (n // 10), stats  # and the share falls as n grows
    for work in ("candidate_pairs", "compared"):
        assert large[work] <= 2.6 * max(small[work], 100), (small, large)
