"""Matchmaking: battles go where the board is still open — an undecided neighbouring pair,
the race for first place, a new candidate — the pair counts shape the plan, it works
without them, and a model never meets itself."""

import random
from collections import Counter

import pytest

from arena.matchmaking import EXPLORATION, ModelState, choose_pair, plan, sigma


def draws(models, n=3000, seed=0, **kw):
    rng = random.Random(seed)
    return [choose_pair(models, rng, **kw) for _ in range(n)]


def shares(models, pair_battles=None, **kw):
    return {frozenset((p.first, p.second)): p.probability for p in plan(models, pair_battles, **kw)}


def test_never_a_model_against_itself_and_sides_are_random():
    models = [ModelState("a"), ModelState("b"), ModelState("c"), ModelState("a")]
    picks = draws(models)
    assert all(m.model_a != m.model_b for m in picks)
    left = Counter(m.model_a for m in picks if {m.model_a, m.model_b} == {"a", "b"})
    assert 0.4 < left["a"] / (left["a"] + left["b"]) < 0.6
    assert len({frozenset((m.model_a, m.model_b)) for m in picks}) == 3


def test_the_plan_is_a_distribution_that_keeps_every_pair_possible():
    models = [ModelState(f"m{i}", 1000 + 50 * i, 980 + 50 * i, 1020 + 50 * i, votes=500) for i in range(6)]
    battles = {(f"m{i}", f"m{j}"): 30 + i + j for i in range(6) for j in range(i + 1, 6)}
    got = plan(models, battles)
    assert len(got) == 15 and sum(p.probability for p in got) == pytest.approx(1.0)
    assert min(p.probability for p in got) >= EXPLORATION / 15 - 1e-12
    # The drawn pairs follow the plan.
    counts = Counter(frozenset((m.model_a, m.model_b)) for m in draws(models, 6000, pair_battles=battles))
    for pair, share in shares(models, battles).items():
        assert abs(counts[pair] / 6000 - share) < 4 * (share * (1 - share) / 6000) ** 0.5 + 1e-3


def test_an_open_neighbouring_pair_gets_more_than_a_settled_one():
    # b–c: 1,000 battles, 150 points apart (settled); c–d: 12 battles, 10 points apart (open).
    models = [ModelState("a", 1300, 1270, 1330, 900), ModelState("b", 1150, 1130, 1170, 1100),
              ModelState("c", 1000, 980, 1020, 1030), ModelState("d", 990, 900, 1080, 42)]
    battles = {("a", "b"): 800, ("b", "c"): 1000, ("c", "d"): 12, ("a", "d"): 10, ("b", "d"): 20, ("a", "c"): 100}
    got = shares(models, battles, top_weight=0.0)
    assert got[frozenset("cd")] > 0.4
    assert got[frozenset("cd")] > 10 * got[frozenset("bc")]
    # Without counts the CIs alone say the same.
    alone = shares(models, top_weight=0.0)
    assert max(alone, key=alone.get) in (frozenset("cd"), frozenset("bd"))


def test_the_counts_matter_a_pair_that_never_met_is_less_known_than_one_that_met_often():
    # The same states, two histories: the open pair is the one with fewer battles between them.
    models = [ModelState(n, r, r - 40, r + 40, 400) for n, r in (("x", 1100), ("y", 1050), ("z", 1000))]
    first = shares(models, {("x", "y"): 600, ("y", "z"): 15, ("x", "z"): 15}, top_weight=0.0)
    second = shares(models, {("x", "y"): 15, ("y", "z"): 600, ("x", "z"): 15}, top_weight=0.0)
    assert first[frozenset("yz")] > 2 * first[frozenset("xy")]
    assert second[frozenset("xy")] > 2 * second[frozenset("yz")]


def test_the_race_for_first_place_takes_battles_while_open_and_none_once_settled():
    # The top two are likely in order (50 points, z ≈ 2.4) but their intervals still overlap.
    lower = [ModelState("m2", 950, 930, 970, 3000), ModelState("m3", 850, 830, 870, 3000),
             ModelState("m4", 750, 730, 770, 3000), ModelState("m5", 700, 680, 720, 3000)]
    names = ["first", "second", *(m.name for m in lower)]
    battles = {(a, b): 400 for i, a in enumerate(names) for b in names[i + 1 :]}

    def with_leader(models, **kw):
        return sum(p for pair, p in shares(models, battles, **kw).items() if "first" in pair)

    racing = [ModelState("first", 1100, 1071, 1129, 2000), ModelState("second", 1050, 1021, 1079, 2000), *lower]
    assert with_leader(racing) > with_leader(racing, top_weight=0.0) + 0.2
    assert with_leader(racing) > 0.8
    # Decided: the race adds nothing, the leader keeps the exploration's share.
    settled = [ModelState("first", 1300, 1290, 1310, 5000), *racing[1:]]
    assert with_leader(settled) == pytest.approx(with_leader(settled, top_weight=0.0))
    assert with_leader(settled) < 0.1


def test_a_new_candidate_gets_battles_with_or_without_counts():
    settled = [ModelState(f"m{i}", 1000 + 60 * i, 990 + 60 * i, 1010 + 60 * i, votes=3000) for i in range(5)]
    battles = {(f"m{i}", f"m{j}"): 1200 for i in range(5) for j in range(i + 1, 5)}
    for counts in (None, battles):
        got = shares([*settled, ModelState("new")], counts)
        assert sum(p for pair, p in got.items() if "new" in pair) > 0.7  # 5 of 15 pairs hold it
    assert sigma(ModelState("new")) > sigma(settled[0])


def test_seeded_draws_repeat_and_errors():
    models = [ModelState("a"), ModelState("b"), ModelState("c")]
    assert draws(models, 50, seed=7) == draws(models, 50, seed=7)
    with pytest.raises(ValueError, match="at least two"):
        choose_pair([ModelState("a"), ModelState("a")], random.Random(0))
    with pytest.raises(ValueError, match="exploration must be in"):
        choose_pair(models, random.Random(0), exploration=1.5)
