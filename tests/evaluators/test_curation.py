"""Curation: kept and removed records with reasons, a coreset that covers every cluster."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluators.curation import (
    curate,
    drop_flagged,
    drop_top,
    select_coreset,
    write_curation,
)
from evaluators.datachecks import check_dataset
from evaluators.records import Conversation, Message

SIZES = [50, 30, 10, 5, 2]


def conv(prompt: str, answer: str) -> Conversation:
    return Conversation(messages=(Message("user", prompt), Message("assistant", answer)))


def clustered_embeddings(sizes=SIZES, dim=16, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in tight, well-separated clusters; returns (embeddings, true labels)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[: len(sizes)]
    rows, labels = [], []
    for c, size in enumerate(sizes):
        rows.append(centres[c] + 0.05 * rng.normal(size=(size, dim)))
        labels += [c] * size
    order = rng.permutation(sum(sizes))  # clusters interleaved, not in blocks
    x = np.vstack(rows)[order]
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.array(labels)[order]


# ------------------------------------------------------------------------- coreset


def test_coreset_respects_the_budget_and_covers_every_cluster():
    x, truth = clustered_embeddings()
    for budget in (5, 12, 20, 40):
        chosen = select_coreset(x, budget, seed=0)
        assert len(chosen) == budget and len(set(chosen.tolist())) == budget
        assert set(truth[chosen].tolist()) == set(range(len(SIZES))), budget


def test_coreset_samples_clusters_in_proportion_to_their_size():
    x, truth = clustered_embeddings()
    chosen = select_coreset(x, 20, seed=0, n_clusters=5)
    counts = np.bincount(truth[chosen], minlength=5).tolist()
    # One each, then 15 more over the 92 members beyond the first, by largest remainder.
    assert counts == [9, 6, 2, 2, 1]


def test_coreset_picks_the_most_central_member_of_a_singleton_quota():
    x, truth = clustered_embeddings()
    chosen = select_coreset(x, 5, seed=0, n_clusters=5)
    for c in range(5):
        members = np.flatnonzero(truth == c)
        distance = np.linalg.norm(x[members] - x[members].mean(axis=0), axis=1)
        [picked] = [k for k, i in enumerate(members) if i in chosen]
        assert distance[picked] == pytest.approx(distance.min())  # (a 2-member cluster ties)


def test_coreset_is_deterministic_for_a_seed():
    x, _ = clustered_embeddings()
    first = select_coreset(x, 20, seed=3)
    assert np.array_equal(first, select_coreset(x, 20, seed=3))
    assert any(not np.array_equal(first, select_coreset(x, 20, seed=s)) for s in range(4, 10))


def test_coreset_edge_cases():
    x, _ = clustered_embeddings()
    assert np.array_equal(select_coreset(x, 500), np.arange(len(x)))
    duplicates = np.tile(x[:1], (10, 1))  # one distinct point: one cluster, still `budget` rows
    assert len(select_coreset(duplicates, 4)) == 4
    with pytest.raises(ValueError, match="budget must be at least 1"):
        select_coreset(x, 0)
    with pytest.raises(ValueError, match="2-D array"):
        select_coreset(x[0], 1)


# ------------------------------------------------------------------------- curate


def test_curate_drops_with_reasons_and_fits_the_budget():
    x, truth = clustered_embeddings()
    records = [conv(f"question {i}", f"answer {i}") for i in range(len(x))]
    drop = {0: "exact_duplicate: copy of #7", 3: "attribution: top score"}
    result = curate(records, drop=drop, budget=30, seed=1, embeddings=x)
    assert len(result.kept) == len(result.kept_indices) == 30
    assert result.kept == tuple(records[i] for i in result.kept_indices)
    assert list(result.kept_indices) == sorted(result.kept_indices)  # input order kept
    assert not {0, 3} & set(result.kept_indices)
    removed = {r.index: r.reason for r in result.removed}
    assert removed[0] == drop[0] and removed[3] == drop[3]
    assert set(removed) | set(result.kept_indices) == set(range(len(records)))
    assert all(removed[i].startswith("coreset:") for i in set(removed) - {0, 3})
    assert set(truth[list(result.kept_indices)].tolist()) == set(range(len(SIZES)))
    assert curate(records, drop=drop, budget=30, seed=1, embeddings=x) == result


def test_curate_without_a_budget_only_drops():
    records = [conv(f"q{i}", f"a{i}") for i in range(5)]
    result = curate(records, drop={1: "empty_or_garbled: empty answer"}, fix={2: "check the date", 1: "x"})
    assert result.kept_indices == (0, 2, 3, 4)
    assert [(r.index, r.reason) for r in result.removed] == [(1, "empty_or_garbled: empty answer")]
    assert result.to_fix == {2: "check the date"}  # a removed record is not marked for fixing
    assert json.loads(json.dumps(result.to_dict()))["n_input"] == 5


def test_curate_embeds_records_itself_when_given_no_embeddings():
    topics = ["How do I bake bread at home?", "How do I bake a sourdough loaf?", "How do I knead dough?",
              "What is the best way to learn Python?", "How do I write a Python function?",
              "How do I install a Python package?"]
    records = [conv(t, "Here is how.") for t in topics]
    result = curate(records, drop={}, budget=2, seed=0)
    # Two clusters (baking, Python), one record from each.
    assert len(result.kept_indices) == 2
    assert {i // 3 for i in result.kept_indices} == {0, 1}


def test_curate_rejects_bad_input():
    records = [conv("q", "a")] * 3
    with pytest.raises(ValueError, match=r"drop names record\(s\) \[7\] outside the 3 records"):
        curate(records, drop={7: "?"})
    with pytest.raises(ValueError, match="embeddings has 2 rows for 3 records"):
        curate(records, drop={}, budget=1, embeddings=np.zeros((2, 4)))


def test_write_curation_writes_kept_and_removed_files(tmp_path):
    records = [conv("q0", "a0"), conv("q1", "a1"), conv("q2", "a2")]
    result = curate(records, drop={1: "near_duplicate: of #0"})
    paths = write_curation(result, tmp_path / "round2")
    kept = [json.loads(line) for line in paths["kept"].read_text().splitlines()]
    removed = [json.loads(line) for line in paths["removed"].read_text().splitlines()]
    assert kept == [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
                    for i in (0, 2)]
    assert removed == [{"index": 1, "reason": "near_duplicate: of #0",
                        "messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]}]


# ----------------------------------------------------------------- what to drop


def test_drop_top_picks_the_highest_scores():
    scores = np.array([0.1, 0.9, np.nan, 0.5, 0.9, -1.0])
    drop = drop_top(scores, 3)
    assert list(drop) == [1, 4, 3]  # ties go to the lower index; NaN never picked
    assert drop[1].startswith("attribution: score 0.9 is #1 of 6")
    assert drop_top(scores, 0) == {}
    assert len(drop_top(scores, 10)) == 5


def test_drop_flagged_keeps_one_of_each_duplicate_group():
    records = [conv("How do I boil an egg?", "Boil it for six minutes."),
               conv("What is the capital of Peru?", "Lima is the capital of Peru."),
               conv("how do I boil an egg", "Boil it for six minutes!"),
               conv("Why is the sky blue?", ""),
               conv("What is the capital of Peru?", "Cusco is the capital of Peru.")]
    report = check_dataset(records)
    drop = drop_flagged(report)
    assert sorted(drop) == [2, 3]
    assert drop[2].startswith("exact_duplicate:") and drop[3].startswith("empty_or_garbled:")
    # Conflicts are opt-in: both sides are named, a human decides which is right.
    assert sorted(drop_flagged(report, checks=["conflicting_answers"])) == [1, 4]
    with pytest.raises(ValueError, match="unknown check"):
        drop_flagged(report, checks=["dupes"])
    result = curate(records, drop=drop)
    assert result.kept_indices == (0, 1, 4)
