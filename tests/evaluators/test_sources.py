"""Blame by source: a bad annotator's records crowd the top of the trace, and only it is suspect."""

from __future__ import annotations

import random

import pytest

from evaluators.records import Conversation, Message
from evaluators.sources import by_source, wilson
from evaluators.synthetic import BAD_SOURCE, make_synthetic_dataset


def test_the_bad_source_of_the_synthetic_set_is_the_one_suspect():
    ds = make_synthetic_dataset("demo-fast", 0)
    assert {ds.records[i].metadata["source"] for i in ds.planted_wrong} == {BAD_SOURCE}
    # A trace that scores half of the planted records highest (the debug split's), noise elsewhere.
    rng = random.Random(0)
    scores = [rng.random() for _ in ds.records]
    seen = ds.planted_wrong[: len(ds.planted_wrong) // 2]
    for i in seen:
        scores[i] += 2
    findings = by_source(ds.records, scores, set(seen))
    [suspect] = [f for f in findings if f.suspect]
    assert (suspect.field, suspect.value, suspect.in_top, suspect.top_k) == ("source", BAD_SOURCE, 10, 10)
    assert suspect.p_value < 1e-3 and suspect.flagged == len(seen) and suspect.expected_in_top < 5
    assert "source vendor-b: 10 of the top 10 records" in suspect.message


def test_a_bad_annotator_among_many_is_found_and_a_random_one_is_not():
    rng = random.Random(1)
    records, scores, flagged = [], [], set()
    for i in range(300):
        annotator = f"ann-{i % 10}"
        records.append(Conversation(messages=(Message("user", f"q{i}"), Message("assistant", "a")),
                                    meta=(("annotator", annotator), ("id", str(i)))))
        bad = annotator == "ann-3" and rng.random() < 0.6
        scores.append(rng.random() + (1.5 if bad else 0))
        if bad:
            flagged.add(i)
    findings = by_source(records, scores, flagged, top_k=20)
    assert [f.value for f in findings if f.suspect] == ["ann-3"]
    assert all(f.field == "annotator" for f in findings)  # "id" is distinct per record: skipped
    assert by_source(records, [0.0] * 300, set(), top_k=20)[0].suspect is False
    assert by_source([Conversation(messages=())], [1.0], set()) == []  # no metadata, nothing to say


def test_wilson_interval():
    assert wilson(0, 0) == (0.0, 0.0)
    from scipy.stats import binomtest

    for k, n in ((31, 100), (3, 7), (0, 5)):
        reference = binomtest(k, n).proportion_ci(method="wilson")
        assert wilson(k, n) == pytest.approx((reference.low, reference.high), abs=1e-9)
    assert wilson(10, 10)[1] == 1.0 and wilson(0, 10)[0] == 0.0
