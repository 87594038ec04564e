"""Matchmaking: which two models meet in the next battle.

What it knows: every model's rating `r` and 95% CI from the board (Elo points), and —
when the caller has them — the battles fought so far per pair. From those it builds the
covariance `C` of the ratings: the inverse of the Bradley–Terry Fisher information
`F = Σ n_ij·p_ij(1 − p_ij)·k²·(e_i − e_j)(e_i − e_j)ᵀ + I/prior_sigma²` (`k = ln 10 / 400`,
`p_ij` the predicted win probability, the ridge keeps unrated models finite), scaled so
that the rated models' centred variances match their CIs on average (the board's
bootstrap sees ties and noisy votes that `F` does not). Without pair counts `C` is
diagonal, `σ_i²` from each CI (at least `prior_sigma / √(1 + votes)`).

What it wants: the board's order and its leader settled.
- **Order**: every neighbouring pair of the current ranking, contrast `c = e_(k) − e_(k+1)`,
  gap `d`, variance `V = cᵀCc`; it is open while `z = d/√V` is small, weight
  `erfc(z/(1.5·√2))` (twice the chance the two are in the wrong order were their variance
  1.5² times larger: 0.27 at the 95% line, 0.05 at z = 3 — see `ORDER_MARGIN`).
- **The race for first place**: the leader's and the runner-up's intervals (of centred
  ratings, as the board shows them) separate once `d ≥ 1.96·(σ₁ + σ₂)`; weight
  `top_weight·erfc(z/√2)` with `z = 1.645·d / (1.96·(σ₁ + σ₂))`, the same 0.1 at its line.

How it plans: one more battle on pair `u = e_i − e_j` (information `w = p(1 − p)·k²`)
shrinks the variance of a contrast `c` by `w·(cᵀCu)²/(1 + w·uᵀCu)` (Sherman–Morrison),
for every pair at once. `VIRTUAL_VOTES` imagined battles are placed one at a time, each
on the pair that most reduces `Σ weight·ΔV/V` over the targets (for the race: of
`σ₁ + σ₂`), `C` and the weights updated after each: a settled neighbour stops drawing
battles, and an open one or the race gets them. The share of imagined battles per pair is
the plan `π`; the battle is drawn with probability `(1 − exploration)·π +
exploration/#pairs`, so every pair keeps some chance and concurrent battles between two
refits spread over the plan rather than all landing on one pair. A model never meets
itself; which side is "A" is a coin flip. With no rated model yet the plan is uniform.
Plans are cached per input, so the draws between two refits cost a lookup.

Pure: no I/O. Pass a seeded `random.Random` for reproducible draws.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import erfc

#: Uncertainty (Elo points, one standard deviation) of a model nobody has voted on yet.
PRIOR_SIGMA = 200.0
#: Share of the draw spread uniformly over all pairs.
EXPLORATION = 0.1
#: Weight of the race for first place against one neighbouring pair of the order.
TOP_WEIGHT = 6.0
#: A neighbouring pair counts as open until its gap is this many times past the line:
#: its weight is `erfc(z / (ORDER_MARGIN·√2))`. A pair only just past the 95% line drifts
#: back and forth across it from one refit to the next; aiming a little past it ordered the
#: board sooner and the top too (bench/matchmaking.py, 8 models, 80 seeds: 1.0 gave 1.46×
#: and 1.59×, 1.5 gives 1.59× and 1.72× for order and top; 2.0 lost the top on seeds 0–39).
ORDER_MARGIN = 1.5
#: Imagined battles a plan places.
VIRTUAL_VOTES = 100

_K = math.log(10) / 400.0
_Z95 = 1.959964
_Z90 = 1.644854


@dataclass(frozen=True)
class ModelState:
    """What matchmaking knows of one model. `rating` None: not rated yet (treated as the
    average of the rated ones); `ci_low`/`ci_high`: its 95% interval, if any."""

    name: str
    rating: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    votes: int = 0


@dataclass(frozen=True)
class PairShare:
    """One unordered pair and its chance of being the next battle."""

    first: str
    second: str
    probability: float


@dataclass(frozen=True)
class Matchup:
    """The drawn battle: `model_a` is shown on the left. `probability` is the chance this
    unordered pair had of being drawn."""

    model_a: str
    model_b: str
    probability: float


def sigma(model: ModelState, prior_sigma: float = PRIOR_SIGMA) -> float:
    """The model's rating uncertainty (one SD, Elo points) as its CI gives it."""
    floor = prior_sigma / math.sqrt(1 + max(model.votes, 0))
    if model.votes <= 0 or model.ci_low is None or model.ci_high is None:
        return prior_sigma
    from_ci = (model.ci_high - model.ci_low) / (2 * _Z95)
    return max(from_ci, floor)


def _unique(models: Sequence[ModelState]) -> tuple[ModelState, ...]:
    unique: dict[str, ModelState] = {}
    for model in models:
        unique.setdefault(model.name, model)
    return tuple(unique.values())


def _rated(m: ModelState) -> bool:
    return m.rating is not None and m.votes > 0


def _covariance(states: tuple[ModelState, ...], r: np.ndarray, n: np.ndarray | None, prior_sigma: float) -> tuple[np.ndarray, float]:
    """(C, scale): the ratings' covariance in Elo points², and the factor by which F's
    information was divided to match the CIs (1 without counts)."""
    sig = np.array([sigma(s, prior_sigma) for s in states])
    if n is None:
        return np.diag(sig**2), 1.0
    m = len(states)
    p = 1.0 / (1.0 + 10 ** ((r[None, :] - r[:, None]) / 400.0))
    a = n * p * (1 - p) * _K**2
    fisher = np.diag(a.sum(axis=1)) - a + np.eye(m) / prior_sigma**2
    cov = np.linalg.inv(fisher)
    rated = np.array([_rated(s) and s.ci_low is not None for s in states])
    if not rated.any():
        return cov, 1.0
    centred = cov - cov.mean(axis=0)[None, :] - cov.mean(axis=1)[:, None] + cov.mean()
    scale = float((sig[rated] ** 2).sum() / max(np.diag(centred)[rated].sum(), 1e-12))
    return cov * scale, scale


@lru_cache(maxsize=16)
def _plan(states: tuple[ModelState, ...], battles: tuple[float, ...] | None, exploration: float,
          top_weight: float, prior_sigma: float, virtual_votes: int) -> tuple[np.ndarray, np.ndarray]:
    """(probability per pair in `np.triu_indices(m, 1)` order, their cumulative sums)."""
    m = len(states)
    first, second = np.triu_indices(m, 1)
    known = [s.rating for s in states if _rated(s)]
    if not known:  # no ranking yet, nothing to aim at
        uniform = np.full(len(first), 1 / len(first))
        return uniform, np.cumsum(uniform)
    centre = sum(known) / len(known)
    r = np.array([s.rating if _rated(s) else centre for s in states], dtype=float)
    n = None
    if battles is not None:
        n = np.zeros((m, m))
        n[first, second] = battles
        n += n.T
    cov, scale = _covariance(states, r, n, prior_sigma)
    p = 1.0 / (1.0 + 10 ** ((r[second] - r[first]) / 400.0))
    w = p * (1 - p) * _K**2 / scale  # one battle's information, in the units of `cov`

    # Targets: the neighbouring pairs of the ranking, then the leader's and the runner-up's centred ratings.
    rank = np.argsort(-r, kind="stable")
    targets = np.zeros((m + 1, m))
    targets[np.arange(m - 1), rank[:-1]] = 1.0
    targets[np.arange(m - 1), rank[1:]] = -1.0
    targets[m - 1] = -1.0 / m
    targets[m - 1, rank[0]] += 1.0
    targets[m] = -1.0 / m
    targets[m, rank[1]] += 1.0
    gap = r[rank[:-1]] - r[rank[1:]]

    cov_u = cov[:, first] - cov[:, second]  # C·u for every pair (m × P)
    tcu = targets @ cov_u  # cᵀCu (T × P)
    pairs = np.arange(len(first))
    q = cov_u[first, pairs] - cov_u[second, pairs]  # uᵀCu
    v = np.einsum("tm,mk,tk->t", targets, cov, targets)  # cᵀCc
    placed = np.zeros(len(first))
    coef = np.empty(m + 1)
    for _ in range(virtual_votes):
        coef[: m - 1] = erfc(gap / (ORDER_MARGIN * np.sqrt(2 * v[: m - 1]))) / v[: m - 1]
        s1, s2 = math.sqrt(v[m - 1]), math.sqrt(v[m])
        race = top_weight * float(erfc(_Z90 * gap[0] / (_Z95 * (s1 + s2) * math.sqrt(2))))
        # ΔV/V of σ₁ + σ₂, as twice its relative shrinkage: Σ ΔV_i/(σ_i·(σ₁ + σ₂)).
        coef[m - 1] = race / (s1 * (s1 + s2))
        coef[m] = race / (s2 * (s1 + s2))
        gain = w / (1 + w * q) * (coef @ np.square(tcu))
        best = int(np.argmax(gain))
        placed[best] += 1
        wb = w[best]
        g = cov[:, first[best]] - cov[:, second[best]]  # C·u of the chosen pair
        denom = 1 + wb * q[best]
        gu = g[first] - g[second]  # uᵀCu' for every pair u'
        tg = targets @ g
        cov -= (wb / denom) * np.outer(g, g)
        tcu -= np.outer((wb / denom) * tg, gu)
        q -= (wb / denom) * np.square(gu)
        v -= (wb / denom) * np.square(tg)
    share = placed / placed.sum() if placed.sum() > 0 else np.full(len(first), 1 / len(first))
    probability = (1 - exploration) * share + exploration / len(first)
    return probability, np.cumsum(probability)


def _battles_key(states: tuple[ModelState, ...], pair_battles: Mapping[tuple[str, str], float] | None) -> tuple[float, ...] | None:
    if pair_battles is None:
        return None
    names = [s.name for s in states]
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            out.append(float(pair_battles.get((a, b), 0) or pair_battles.get((b, a), 0)))
    return tuple(out)


def _check(models: Sequence[ModelState], exploration: float, top_weight: float, prior_sigma: float,
           virtual_votes: int) -> tuple[ModelState, ...]:
    if not 0 <= exploration <= 1 or top_weight < 0 or prior_sigma <= 0 or virtual_votes < 1:
        raise ValueError(f"matchmaking: exploration must be in [0, 1], top_weight ≥ 0, prior_sigma > 0 and "
                         f"virtual_votes ≥ 1, got {exploration}, {top_weight}, {prior_sigma}, {virtual_votes}")
    states = _unique(models)
    if len(states) < 2:
        raise ValueError("matchmaking needs at least two different models")
    return states


def plan(models: Sequence[ModelState], pair_battles: Mapping[tuple[str, str], float] | None = None, *,
         exploration: float = EXPLORATION, top_weight: float = TOP_WEIGHT, prior_sigma: float = PRIOR_SIGMA,
         virtual_votes: int = VIRTUAL_VOTES) -> list[PairShare]:
    """Every unordered pair of distinct models with its chance of being the next battle
    (see the module docstring). `pair_battles` maps (model, model) — either order — to
    the battles fought between them; without it the rule sees each model's CI alone.
    Duplicate names are merged (the first entry wins). Raises `ValueError` with fewer than
    two distinct models or a parameter out of range."""
    states = _check(models, exploration, top_weight, prior_sigma, virtual_votes)
    probability, _ = _plan(states, _battles_key(states, pair_battles), exploration, top_weight, prior_sigma, virtual_votes)
    first, second = np.triu_indices(len(states), 1)
    return [PairShare(states[i].name, states[j].name, float(x)) for i, j, x in zip(first, second, probability)]


def choose_pair(models: Sequence[ModelState], rng: random.Random, *,
                pair_battles: Mapping[tuple[str, str], float] | None = None, exploration: float = EXPLORATION,
                top_weight: float = TOP_WEIGHT, prior_sigma: float = PRIOR_SIGMA,
                virtual_votes: int = VIRTUAL_VOTES) -> Matchup:
    """Draw the next battle's two models (sides randomised) from `plan`. Raises
    `ValueError` as `plan` does."""
    states = _check(models, exploration, top_weight, prior_sigma, virtual_votes)
    probability, cumulative = _plan(states, _battles_key(states, pair_battles), exploration, top_weight,
                                    prior_sigma, virtual_votes)
    pick = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), len(probability) - 1)
    first, second = np.triu_indices(len(states), 1)
    a, b = states[first[pick]].name, states[second[pick]].name
    if rng.random() < 0.5:
        a, b = b, a
    return Matchup(model_a=a, model_b=b, probability=float(probability[pick]))
