"""Matchmaking: close, uncertain pairs and new candidates are favoured; never a self-match."""

import random
from collections import Counter

import pytest

from arena.matchmaking import ModelState, choose_pair, pair_weights, sigma


def draws(models, n=3000, seed=0, **kw):
    rng = random.Random(seed)
    return [choose_pair(models, rng, **kw) for _ in range(n)]


def test_never_a_model_against_itself_and_sides_are_random():
    models = [ModelState("a"), ModelState("b"), ModelState("c"), ModelState("a")]
    picks = draws(models)
    assert all(m.model_a != m.model_b for m in picks)
    left = Counter(m.model_a for m in picks if {m.model_a, m.model_b} == {"a", "b"})
    assert 0.4 < left["a"] / (left["a"] + left["b"]) < 0.6


def test_close_uncertain_pair_beats_a_settled_mismatch():
    models = [
        ModelState("top", 1300, 1290, 1310, votes=5000),
        ModelState("bottom", 700, 690, 710, votes=5000),
        ModelState("mid1", 1000, 950, 1050, votes=200),
        ModelState("mid2", 1010, 960, 1060, votes=200),
    ]
    weights = {frozenset((w.first, w.second)): w.weight for w in pair_weights(models)}
    assert weights[frozenset(("mid1", "mid2"))] > 10 * weights[frozenset(("top", "bottom"))]
    counts = Counter(frozenset((m.model_a, m.model_b)) for m in draws(models))
    assert counts.most_common(1)[0][0] == frozenset(("mid1", "mid2"))
    # Exploration keeps every pair possible.
    assert len(counts) == 6


def test_new_candidate_gets_battles():
    settled = [ModelState(f"m{i}", 1000 + 10 * i, 990 + 10 * i, 1010 + 10 * i, votes=3000) for i in range(5)]
    picks = draws([*settled, ModelState("new")])
    share = sum("new" in (m.model_a, m.model_b) for m in picks) / len(picks)
    assert share > 0.7  # 5 of 15 pairs involve it; it gets far more than a third
    assert sigma(ModelState("new")) > sigma(settled[0])


def test_seeded_draws_repeat_and_errors():
    models = [ModelState("a"), ModelState("b"), ModelState("c")]
    assert draws(models, 50, seed=7) == draws(models, 50, seed=7)
    with pytest.raises(ValueError, match="at least two"):
        choose_pair([ModelState("a"), ModelState("a")], random.Random(0))
