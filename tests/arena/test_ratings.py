"""Ratings: pair counts, Bradley–Terry against FastChat's own code, bootstrap CIs that cover
the truth, online Elo, matrices, and the edge cases that must not crash (style control:
test_style_control.py)."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit

from arena import _solver
from arena.battles import Battle, read_battles
from arena.counts import PairCount, PairCounts, battle_count_matrix, win_rate_matrix
from arena.ratings import (
    bootstrap_ci,
    bradley_terry,
    elo_update,
    leaderboard,
    online_elo,
    predicted_win_matrix,
    rank_upper_bounds,
)

SAMPLE = Path("/work/shared/data/battles_fastchat.json")
POINTS = 400 / math.log(10)  # Elo points per logit


# --- FastChat's compute_bt, re-implemented from fastchat/serve/monitor/rating_systems.py ----
# (get_matchups_models, preprocess_for_bt, bt_loss_and_grad, fit_bt, scale_and_offset; pandas'
# factorize replaced by a first-seen dict, which is what it does; the mixtral anchor is absent.)


def _fastchat_compute_bt(
    battles: list[Battle], base: float = 10.0, scale: float = 400.0, init_rating: float = 1000.0, tol: float = 1e-6, converge: bool = False
) -> dict[str, float]:
    """FastChat's compute_bt. `converge=True` runs the same objective until L-BFGS truly
    converges (FastChat's maxiter=100 and scipy's default ftol stop it early, typically
    0.001–0.015 points short of the optimum)."""
    n_rows = len(battles)
    index: dict[str, int] = {}
    codes = [index.setdefault(name, len(index)) for name in [b.model_a for b in battles] + [b.model_b for b in battles]]
    models = list(index)
    schedule = np.full((n_rows, 3), fill_value=1, dtype=np.int32)
    schedule[:, 0] = codes[:n_rows]
    schedule[:, 1] = codes[n_rows:]
    winner = np.array([b.winner for b in battles])
    schedule[winner == "model_a", 2] = 2
    schedule[winner == "model_b", 2] = 0
    matchups_outcomes, weights = np.unique(schedule, return_counts=True, axis=0)
    matchups = matchups_outcomes[:, [0, 1]]
    outcomes = matchups_outcomes[:, 2].astype(np.float64) / 2.0
    weights = weights.astype(np.float64)

    def bt_loss_and_grad(ratings, matchups, outcomes, weights, alpha=1.0):
        matchup_ratings = ratings[matchups]
        logits = alpha * (matchup_ratings[:, 0] - matchup_ratings[:, 1])
        probs = expit(logits)
        loss = -((np.log(probs) * outcomes + np.log(1.0 - probs) * (1.0 - outcomes)) * weights).sum()
        matchups_grads = -alpha * (outcomes - probs) * weights
        model_grad = np.zeros_like(ratings)
        np.add.at(model_grad, matchups[:, [0, 1]], matchups_grads[:, None] * np.array([1.0, -1.0]))
        return loss, model_grad

    result = minimize(
        fun=bt_loss_and_grad,
        x0=np.zeros(len(models)),
        args=(matchups, outcomes, weights, math.log(base)),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 10_000, "gtol": 1e-10, "ftol": 0.0} if converge else {"maxiter": 100, "gtol": tol},
    )
    return dict(zip(models, result["x"] * scale + init_rating))


def _fastchat_compute_elo(battles: list[Battle], k: float = 4, scale: float = 400, base: float = 10, init: float = 1000) -> dict[str, float]:
    rating: dict[str, float] = {}
    for b in battles:
        ra, rb = rating.get(b.model_a, init), rating.get(b.model_b, init)
        ea = 1 / (1 + base ** ((rb - ra) / scale))
        eb = 1 / (1 + base ** ((ra - rb) / scale))
        sa = {"model_a": 1.0, "model_b": 0.0}.get(b.winner, 0.5)
        rating[b.model_a] = ra + k * (sa - ea)
        rating[b.model_b] = rb + k * (1 - sa - eb)
    return rating


def _synthetic(strengths: np.ndarray, n: int, seed: int, tie_rate: float = 0.15, names: list[str] | None = None) -> list[Battle]:
    """Battles between random pairs from the model the fit assumes: A's expected score (ties
    half) is σ(θ_A − θ_B). Ties (a third of them both-bad) have probability `tie_rate`, and
    A wins with probability σ − tie_rate/2."""
    rng = np.random.default_rng(seed)
    m = len(strengths)
    names = names or [f"m{i}" for i in range(m)]
    a = rng.integers(0, m, n)
    b = (a + rng.integers(1, m, n)) % m
    p_a = np.clip(expit(strengths[a] - strengths[b]) - tie_rate / 2, 0, 1 - tie_rate)
    u = rng.random(n)
    winner = np.where(
        u < p_a, "model_a", np.where(u < p_a + tie_rate / 3, "tie (bothbad)", np.where(u < p_a + tie_rate, "tie", "model_b"))
    )
    return [Battle(model_a=names[i], model_b=names[j], winner=w, tstamp=float(t)) for t, (i, j, w) in enumerate(zip(a, b, winner))]


def _true_points(strengths: np.ndarray, models: list[str]) -> np.ndarray:
    """True ratings (mean 1000) of `m0`, `m1`, ... in the order of `models`."""
    points = (strengths - strengths.mean()) * POINTS + 1000
    return np.array([points[int(m[1:])] for m in models])


# --- pair counts -----------------------------------------------------------------------------


def test_counts_the_same_whichever_way_they_are_built() -> None:
    battles = _synthetic(np.array([0.0, 0.5, 1.0, -0.5]), 400, seed=1)
    vectorised = PairCounts.from_battles(battles)
    incremental = PairCounts()
    for battle in battles:
        incremental.add_battle(battle)
    assert vectorised == incremental
    assert vectorised == PairCounts.from_pairs(vectorised.pairs())
    as_dict = {(p.model_b, p.model_a): (p.wins_b, p.wins_a, p.ties, p.bothbad) for p in vectorised.pairs()}  # flipped
    assert PairCounts.from_pairs(as_dict) == vectorised
    a = vectorised.arrays()
    assert PairCounts.from_arrays(a.models, a.first, a.second, a.wins_first, a.wins_second, a.ties, a.bothbad) == vectorised
    assert vectorised.n_battles == 400 and int(vectorised.votes().sum()) == 800


def test_pair_reads_back_in_the_order_asked_and_ties_are_kept_apart() -> None:
    counts = PairCounts()
    counts.add("x", "y", "model_a")
    counts.add("y", "x", "model_a")
    counts.add("y", "x", "model_a")
    counts.add("x", "y", "tie")
    counts.add("y", "x", "tie (bothbad)", count=2)
    assert counts.pair("x", "y") == PairCount("x", "y", wins_a=1, wins_b=2, ties=1, bothbad=2)
    assert counts.pair("y", "x") == PairCount("y", "x", wins_a=2, wins_b=1, ties=1, bothbad=2)
    assert counts.pair("x", "z").battles == 0
    # ties of both kinds score half: x has 1 + 1.5 of 6
    assert counts.win_rates()[counts.models.index("x")] == pytest.approx(2.5 / 6)


def test_counts_reject_nonsense() -> None:
    counts = PairCounts()
    with pytest.raises(ValueError, match="winner 'A'"):
        counts.add("x", "y", "A")
    with pytest.raises(ValueError, match="cannot battle itself"):
        counts.add("x", "x", "tie")
    with pytest.raises(ValueError, match="negative count"):
        PairCounts.from_pairs({("x", "y"): (1, -1, 0, 0)})


# --- Bradley–Terry ---------------------------------------------------------------------------


@pytest.mark.parametrize(("n_models", "n_battles", "seed"), [(8, 3000, 1), (12, 10000, 4), (20, 20000, 5)])
def test_agrees_with_fastchat_compute_bt_on_random_battles(n_models: int, n_battles: int, seed: int) -> None:
    strengths = np.random.default_rng(seed).normal(0, 1, n_models)
    battles = _synthetic(strengths, n_battles, seed)
    ours = bradley_terry(PairCounts.from_battles(battles)).as_dict()
    theirs = _fastchat_compute_bt(battles)
    assert ours.keys() == theirs.keys()
    assert max(abs(ours[m] - theirs[m]) for m in ours) < 0.01


@pytest.mark.parametrize(("n_models", "n_battles", "seed"), [(20, 20000, 2), (50, 50000, 3)])
def test_is_the_exact_optimum_of_fastchats_objective(n_models: int, n_battles: int, seed: int) -> None:
    """Where FastChat's early stop leaves it >0.01 points out, its objective run to
    convergence lands on our numbers."""
    battles = _synthetic(np.random.default_rng(seed).normal(0, 1, n_models), n_battles, seed)
    ours = bradley_terry(PairCounts.from_battles(battles)).as_dict()
    theirs = _fastchat_compute_bt(battles, converge=True)
    assert max(abs(ours[m] - theirs[m]) for m in ours) < 1e-3


def test_agrees_with_fastchat_on_the_sample_file_plus_random_battles() -> None:
    sample = read_battles(SAMPLE).battles
    names = ["lora-r8", "lora-r16", "base"]
    battles = sample + _synthetic(np.array([0.0, 0.4, -0.3]), 600, seed=7, names=names)
    ours = bradley_terry(PairCounts.from_battles(battles))
    theirs = _fastchat_compute_bt(battles)
    assert ours.prior_ties == 0.0 and ours.notes == []
    assert max(abs(ours.as_dict()[m] - theirs[m]) for m in names) < 0.01


def test_sample_file_alone_has_no_finite_mle_and_gets_finite_ratings() -> None:
    """lora-r16 never lost: FastChat's L-BFGS wanders off to wherever it stops; we add the
    weak prior, keep the order, and say so."""
    battles = read_battles(SAMPLE).battles
    theirs = _fastchat_compute_bt(battles)
    assert theirs["lora-r16"] - theirs["base"] > 2000  # the divergence, for the record
    ours = bradley_terry(PairCounts.from_battles(battles))
    r = ours.as_dict()
    assert all(math.isfinite(v) for v in r.values())
    assert r["lora-r16"] > r["lora-r8"] == pytest.approx(r["base"])
    assert 150 < r["lora-r16"] - r["base"] < 500
    assert ours.prior_ties > 0
    assert "never lost: lora-r16" in ours.notes[0]


def test_fit_recovers_known_strengths() -> None:
    strengths = np.array([-1.0, -0.3, 0.0, 0.4, 1.2])
    fit = bradley_terry(PairCounts.from_battles(_synthetic(strengths, 20000, seed=3)))
    assert np.abs(fit.ratings - _true_points(strengths, fit.models)).max() < 25
    assert fit.ratings.mean() == pytest.approx(1000)


def test_anchor_pins_one_model_and_keeps_the_gaps() -> None:
    counts = PairCounts.from_battles(_synthetic(np.array([0.0, 0.5, 1.0]), 2000, seed=4))
    plain = bradley_terry(counts)
    anchored = bradley_terry(counts, anchor=("m1", 1250.0))
    assert anchored.as_dict()["m1"] == pytest.approx(1250.0)
    assert np.allclose(np.diff(anchored.ratings), np.diff(plain.ratings))
    with pytest.raises(ValueError, match="anchor model 'nope' has no battles"):
        bradley_terry(counts, anchor=("nope", 1000.0))


def test_scale_and_base_are_configurable() -> None:
    counts = PairCounts.from_battles(_synthetic(np.array([0.0, 0.7]), 3000, seed=5))
    elo = bradley_terry(counts)
    natural = bradley_terry(counts, scale=1.0, base=math.e, init_rating=0.0)
    assert np.allclose((elo.ratings - 1000) / POINTS, natural.ratings)
    p = elo.win_probability("m1", "m0")
    assert p == pytest.approx(expit(natural.as_dict()["m1"] - natural.as_dict()["m0"]))


def test_never_won_and_never_lost_get_finite_ordered_ratings() -> None:
    counts = PairCounts()
    for _ in range(5):
        counts.add("champ", "mid", "model_a")
        counts.add("mid", "dud", "model_a")
        counts.add("champ", "dud", "model_a")
    counts.add("mid", "other", "model_a")
    counts.add("other", "mid", "model_a")
    fit = bradley_terry(counts)
    r = fit.as_dict()
    assert all(math.isfinite(v) for v in r.values())
    assert r["champ"] > r["mid"] > r["dud"]
    assert "never lost: champ" in fit.notes[0] and "never won: dud" in fit.notes[0]


def test_zero_battles_one_model_and_idle_models_say_so() -> None:
    empty = bradley_terry(PairCounts())
    assert empty.models == [] and "no battles" in empty.notes[0]
    board = leaderboard(PairCounts())
    assert board.rows == [] and board.notes == ["no battles yet: nothing to rate"]

    alone = bradley_terry(PairCounts.from_arrays(["solo"], [], [], [], [], [], []))
    assert alone.as_dict() == {"solo": 1000.0}
    assert any("only one model" in note for note in alone.notes)

    idle = PairCounts.from_arrays(["a", "b", "new"], [0], [1], [3], [2], [1], [0])
    fit = bradley_terry(idle)
    assert fit.as_dict()["new"] == 1000.0
    assert any("no battles for new" in note for note in fit.notes)


def test_disconnected_graph_is_fitted_per_component_and_named() -> None:
    left = _synthetic(np.array([0.0, 1.0]), 500, seed=8, names=["a", "b"])
    right = _synthetic(np.array([0.0, 2.0]), 500, seed=9, names=["c", "d"])
    counts = PairCounts.from_battles(left + right)
    fit = bradley_terry(counts)
    r = fit.as_dict()
    assert r["a"] + r["b"] == pytest.approx(2000) and r["c"] + r["d"] == pytest.approx(2000)
    assert [sorted(c) for c in counts.components()] == [["a", "b"], ["c", "d"]]
    assert any("2 components: [" in note and "only comparable within one" in note for note in fit.notes)
    # Each component alone gives the same numbers.
    assert bradley_terry(counts.subset(["a", "b"])).as_dict() == pytest.approx({k: r[k] for k in "ab"})
    board = leaderboard(counts, bootstrap=50)
    assert [row.model for row in board.rows] == ["b", "a", "d", "c"]
    assert [row.rank_ub for row in board.rows][::2] == [1, 1]  # ranks count within a component


# --- bootstrap -------------------------------------------------------------------------------


def test_bootstrap_is_seeded_and_thread_independent() -> None:
    counts = PairCounts.from_battles(_synthetic(np.random.default_rng(0).normal(0, 1, 6), 3000, seed=10))
    one = bootstrap_ci(counts, rounds=300, seed=3, workers=1)
    two = bootstrap_ci(counts, rounds=300, seed=3, workers=2)
    assert np.array_equal(one.samples, two.samples)
    other = bootstrap_ci(counts, rounds=300, seed=4)
    assert not np.array_equal(one.samples, other.samples)
    point = bradley_terry(counts).ratings
    assert np.all((one.low < point) & (point < one.high))
    assert one.samples.shape == (300, 6)


def test_bootstrap_rounds_are_the_exact_fits_of_their_resamples() -> None:
    """The batched Newton–chord fit must give what a one-at-a-time fit gives."""
    counts = PairCounts.from_battles(_synthetic(np.array([-0.5, 0.0, 0.3, 0.9]), 800, seed=11))
    setup_counts = counts.arrays()
    data = _solver.PairData(4, setup_counts.first, setup_counts.second)
    rng = np.random.default_rng(0)
    p = len(setup_counts.first)
    cells = np.concatenate([setup_counts.wins_first, setup_counts.wins_second, setup_counts.ties + setup_counts.bothbad])
    draws = _solver.draw_multinomial(rng, cells, 20).T
    score = draws[:p] + 0.5 * draws[2 * p :]
    total = (draws[:p] + draws[p : 2 * p] + draws[2 * p :]).astype(float)
    labels = np.zeros(4, dtype=int)
    theta_hat = _solver.fit_one(data, setup_counts.score_first.astype(float), setup_counts.totals.astype(float), labels, 0.0)
    hess = data.hessian(expit(theta_hat[data.first] - theta_hat[data.second]), setup_counts.totals.astype(float)) + _solver.gauge(labels, 100.0)
    batched = _solver.fit_rounds(data, score, total, np.zeros(20), labels, theta_hat, np.linalg.inv(hess))
    for r in range(20):
        single = _solver.fit_one(data, score[:, r], total[:, r], labels, 0.0)
        assert np.abs(batched[:, r] - single).max() * POINTS < 0.01  # _solver.ROUND_TOL's promise


def test_95_percent_intervals_cover_the_truth_90_to_98_percent_of_the_time() -> None:
    strengths = np.array([-0.8, -0.4, 0.0, 0.2, 0.5, 0.9])
    covered = []
    for rep in range(150):
        counts = PairCounts.from_battles(_synthetic(strengths, 1200, seed=1000 + rep))
        ci = bootstrap_ci(counts, rounds=200, seed=rep, workers=1)
        truth = _true_points(strengths, ci.models)
        covered.extend((ci.low <= truth) & (truth <= ci.high))
    coverage = float(np.mean(covered))
    assert 0.90 <= coverage <= 0.98, coverage


def test_rank_upper_bound_counts_models_clearly_better() -> None:
    low = np.array([1100, 1050, 990, 900])
    high = np.array([1200, 1120, 1060, 980])
    assert rank_upper_bounds(low, high).tolist() == [1, 1, 2, 4]
    assert rank_upper_bounds(low, high, groups=np.array([0, 0, 1, 1])).tolist() == [1, 1, 1, 2]


# --- online Elo ------------------------------------------------------------------------------


def test_online_elo_matches_fastchat_and_follows_time_order() -> None:
    battles = _synthetic(np.array([0.0, 0.5, 1.0, -0.5]), 500, seed=12)
    assert online_elo(battles) == pytest.approx(_fastchat_compute_elo(battles))
    shuffled = list(reversed(battles))  # tstamps put them back in order
    assert online_elo(shuffled) == pytest.approx(online_elo(battles))
    a, b = elo_update(1000, 1000, 1.0)
    assert (a, b) == (1002.0, 998.0)


# --- matrices and the leaderboard ------------------------------------------------------------


def test_matrices() -> None:
    counts = PairCounts()
    counts.add("x", "y", "model_a", count=3)
    counts.add("x", "y", "model_b", count=1)
    counts.add("x", "y", "tie", count=2)
    counts.add("y", "z", "tie (bothbad)")
    counts_matrix = battle_count_matrix(counts)
    assert counts_matrix.tolist() == [[0, 6, 0], [6, 0, 1], [0, 1, 0]]
    decisive = win_rate_matrix(counts)
    assert decisive[0, 1] == pytest.approx(0.75) and decisive[1, 0] == pytest.approx(0.25)
    assert np.isnan(decisive[1, 2]) and np.isnan(decisive[0, 2]) and np.isnan(decisive[0, 0])
    with_ties = win_rate_matrix(counts, include_ties=True)
    assert with_ties[0, 1] == pytest.approx(4 / 6) and with_ties[2, 1] == pytest.approx(0.5)
    fit = bradley_terry(PairCounts.from_battles(_synthetic(np.array([0.0, 1.0]), 1000, seed=13)))
    predicted = predicted_win_matrix(fit)
    i, j = fit.models.index("m1"), fit.models.index("m0")
    assert predicted[i, i] == 0.5 and predicted[i, j] + predicted[j, i] == pytest.approx(1)
    assert predicted[i, j] == pytest.approx(fit.win_probability("m1", "m0")) and predicted[i, j] > 0.5


def test_leaderboard_rows() -> None:
    battles = _synthetic(np.array([-0.5, 0.0, 0.6, 1.5]), 3000, seed=14)
    counts = PairCounts.from_battles(battles)
    board = leaderboard(counts, elo=online_elo(battles), bootstrap=200, seed=0)
    assert [row.model for row in board.rows] == ["m3", "m2", "m1", "m0"]
    assert [row.rank_ub for row in board.rows] == [1, 2, 3, 4]
    top = board.rows[0]
    assert top.ci_low < top.rating < top.ci_high
    assert top.votes == counts.votes()[counts.models.index("m3")]
    assert 0.5 < top.win_rate < 1 and top.elo is not None
    assert board.n_battles == 3000 and board.bootstrap_rounds == 200 and board.anchor == "mean=1000"
    keys = set(msgspec.json.decode(msgspec.json.encode(board))["rows"][0])
    assert keys == {"model", "rating", "ci_low", "ci_high", "rank_ub", "votes", "win_rate", "elo", "flip_votes"}
    flat = leaderboard(counts, bootstrap=0)
    assert all(row.ci_low == row.rating == row.ci_high for row in flat.rows)


def _consistent_judge(n: int = 400, seed: int = 0):
    """A judge that gives the same verdict in both orders: (units, counts)."""
    rng = np.random.default_rng(seed)
    strength = {"a": 0.0, "b": 60.0, "c": 120.0, "d": 180.0}
    names = list(strength)
    units, counts = [], PairCounts()
    for _ in range(n):
        x, y = (names[i] for i in rng.choice(4, 2, replace=False))
        won = rng.random() < 1 / (1 + 10 ** ((strength[y] - strength[x]) / 400))
        first = (x, y, "model_a" if won else "model_b")
        second = (y, x, "model_b" if won else "model_a")
        units.append([first, second])
        for a, b, w in (first, second):
            counts.add(a, b, w)
    return units, counts


def test_a_judges_two_orders_are_one_observation_in_the_bootstrap():
    units, counts = _consistent_judge()
    independent = leaderboard(counts, bootstrap=1000, seed=0)
    paired = leaderboard(counts, bootstrap=1000, seed=0, units=units)
    # The ratings are the same fit; only the intervals widen, by about sqrt(2).
    assert [(r.model, r.rating) for r in paired.rows] == [(r.model, r.rating) for r in independent.rows]
    ratios = [(p.ci_high - p.ci_low) / (i.ci_high - i.ci_low) for p, i in zip(paired.rows, independent.rows)]
    assert 1.25 < float(np.mean(ratios)) < 1.6, ratios
    # Units that are single votes give the independent bootstrap back (the same resampling).
    singles = [[vote] for unit in units for vote in unit]
    again = leaderboard(counts, bootstrap=1000, seed=0, units=singles)
    widths = [(r.ci_high - r.ci_low) for r in again.rows]
    assert np.allclose(widths, [(r.ci_high - r.ci_low) for r in independent.rows], rtol=0.25)
    with pytest.raises(ValueError, match="exactly the votes"):
        leaderboard(counts, bootstrap=10, units=units[:-1])
