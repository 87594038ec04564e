"""Matchmaking: close, uncertain pairs and new candidates are favoured; the race for first
place gets its share while it is open; never a self-match."""

import random
from collections import Counter

import pytest

from arena.matchmaking import ModelState, choose_pair, pair_weights, sigma, top_race


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


def test_the_race_for_first_place_takes_its_share_while_open_and_stops_once_settled():
    # The top two overlap a little; lower down, two new-ish models are still wide open.
    board = [ModelState(f"m{i}", 1000 - 60 * i, 990 - 60 * i, 1010 - 60 * i, votes=3000) for i in (2, 3, 6, 7)]
    board += [ModelState("m4", 770, 650, 890, votes=200), ModelState("m5", 760, 640, 880, votes=200)]
    open_top = [ModelState("first", 1100, 1070, 1130, votes=2000), ModelState("second", 1080, 1050, 1110, votes=2000), *board]
    assert top_race(open_top) == ("first", "second")

    def share(models, **kw):
        picks = draws(models, **kw)
        with_top = sum(bool({"first", "second"} & {m.model_a, m.model_b}) for m in picks) / len(picks)
        far = sum({m.model_a, m.model_b} == {"first", "m7"} for m in picks) / len(picks)
        return with_top, far

    racing, far = share(open_top)
    without, far_without = share(open_top, top_share=0.0)
    assert racing > 0.45 and racing > without + 0.3  # (1 − exploration)·top_share at least
    # The race plays the top two against the whole board, far models too, not only neighbours.
    assert far > 2 * far_without and far > 0.02
    settled = [ModelState("first", 1300, 1290, 1310, votes=5000), ModelState("second", 1080, 1070, 1090, votes=5000), *board]
    assert top_race(settled) is None
    assert draws(settled, 200, seed=3) == draws(settled, 200, seed=3, top_share=0.0)


def test_a_new_candidate_can_be_the_challenger():
    settled = [ModelState(f"m{i}", 1000 + 60 * i, 990 + 60 * i, 1010 + 60 * i, votes=3000) for i in range(5)]
    assert top_race([*settled, ModelState("new")]) == ("m4", "new")
    assert top_race(settled) is None
