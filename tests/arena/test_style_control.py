"""Style control: the length bonus removed, agreement with FastChat's contextual BT, and
the features it uses."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit

from arena.battles import Battle
from arena.counts import PairCounts
from arena.ratings import bradley_terry, leaderboard
from arena.style import style_control, style_features


def _fastchat_fit_contextual_bt(matchups, features, outcomes, n_models, alpha=math.log(10.0), reg=0.5, tol=1e-6, ftol=2.2e-9):
    """FastChat's contextual_bt_loss_and_grad + fit_contextual_bt (rating_systems.py)."""

    def loss_and_grad(params):
        ratings, feature_params = params[:n_models], params[n_models:]
        matchup_ratings = ratings[matchups]
        probs = expit(alpha * (matchup_ratings[:, 0] - matchup_ratings[:, 1]) + features @ feature_params)
        loss = -(np.log(probs) * outcomes + np.log(1.0 - probs) * (1.0 - outcomes)).sum() + reg / 2 * params @ params
        error = outcomes - probs
        grad = reg * params
        np.add.at(grad[:n_models], matchups[:, [0, 1]], (-alpha * error)[:, None] * np.array([1.0, -1.0]))
        grad[n_models:] -= features.T @ error
        return loss, grad

    x0 = np.zeros(n_models + features.shape[1])
    return minimize(loss_and_grad, x0, jac=True, method="L-BFGS-B", options={"maxiter": 100, "gtol": tol, "ftol": ftol})["x"]


def _verbose_battles(n: int, seed: int) -> tuple[list[Battle], np.ndarray]:
    """Voters like long answers; m3 is verbose but no stronger than m2."""
    rng = np.random.default_rng(seed)
    strengths = np.array([0.0, 0.3, 0.6, 0.6])
    verbosity = np.array([1.0, 1.0, 1.0, 3.0])
    a = rng.integers(0, 4, n)
    b = (a + rng.integers(1, 4, n)) % 4
    length_a = rng.poisson(150 * verbosity[a])
    length_b = rng.poisson(150 * verbosity[b])
    logit = strengths[a] - strengths[b] + 3.0 * (length_a - length_b) / (length_a + length_b + 1)
    a_wins = rng.random(n) < expit(logit)
    battles = [
        Battle(model_a=f"m{i}", model_b=f"m{j}", winner="model_a" if w else "model_b", length_a=int(la), length_b=int(lb))
        for i, j, w, la, lb in zip(a, b, a_wins, length_a, length_b)
    ]
    return battles, strengths


def test_style_control_removes_the_length_bonus() -> None:
    battles, _ = _verbose_battles(4000, seed=15)
    plain = bradley_terry(PairCounts.from_battles(battles)).as_dict()
    adjusted = style_control(battles, bootstrap=100, seed=0)
    r = dict(zip(adjusted.models, adjusted.ratings))
    assert plain["m3"] - plain["m2"] > 100  # verbosity looks like skill...
    assert abs(r["m3"] - r["m2"]) < 50  # ...until length is held constant
    low, high = adjusted.coefficient_ci["length"]
    assert adjusted.features == ["length"] and 0 < low < adjusted.coefficients["length"] < high
    assert np.all((adjusted.ci_low <= adjusted.ratings) & (adjusted.ratings <= adjusted.ci_high))
    board = leaderboard(PairCounts.from_battles(battles), bootstrap=0, style=adjusted)
    assert board.style_coefficients == adjusted.coefficients
    assert {row.model: row.rating for row in board.rows} == pytest.approx(r)


def test_style_control_agrees_with_fastchat_contextual_bt() -> None:
    """Same objective as FastChat's; its L-BFGS defaults stop ~0.03 points short here, so
    the reference is run to convergence (gtol 1e-9, no ftol stop)."""
    battles, _ = _verbose_battles(1500, seed=16)
    ours = style_control(battles, bootstrap=0)
    names, raw = style_features(battles)
    features = (raw - raw.mean(axis=0)) / raw.std(axis=0)
    index = {m: i for i, m in enumerate(ours.models)}
    matchups = np.array([[index[b.model_a], index[b.model_b]] for b in battles])
    outcomes = np.array([b.score_a for b in battles])
    params = _fastchat_fit_contextual_bt(matchups, features, outcomes, len(ours.models), tol=1e-9, ftol=0.0)
    theirs = params[: len(ours.models)] * 400
    theirs += 1000 - theirs.mean()
    assert np.abs(theirs - ours.ratings).max() < 0.01
    assert ours.coefficients["length"] == pytest.approx(params[-1], abs=1e-4)


def test_style_features_use_markdown_when_texts_are_given() -> None:
    battles = [
        Battle(model_a="x", model_b="y", winner="model_a", answer_a="# Title\n- one\n- two\n**bold**", answer_b="plain answer"),
        Battle(model_a="y", model_b="x", winner="tie", answer_a="## h\n1. a\n```\n# not a header\n```", answer_b="ok __b__"),
    ]
    names, raw = style_features(battles)
    assert names == ["length", "headers", "lists", "bold"]
    assert raw[0, 1:].tolist() == pytest.approx([1 / 2, 2 / 3, 1 / 2])
    assert raw[1, 1:].tolist() == pytest.approx([1 / 2, 1 / 2, -1 / 2])


def test_style_control_needs_lengths_and_drops_constant_features() -> None:
    with pytest.raises(ValueError, match="battle 0 \\(x vs y\\) has no length_a"):
        style_control([Battle(model_a="x", model_b="y", winner="tie")])
    same_style = [
        Battle(model_a="x", model_b="y", winner=w, answer_a="word " * k, answer_b="four words long here")
        for k, w in [(2, "model_b"), (6, "model_a"), (4, "tie"), (9, "model_a"), (3, "model_b")]
    ]
    result = style_control(same_style, bootstrap=20)
    assert result.features == ["length"]
    assert any("'headers' has no variation" in note for note in result.notes)
