"""Matchmaking: which two models meet in the next battle.

The rule, in one paragraph (the README repeats it): every model has a rating `r` and an
uncertainty `σ` (Elo points; `σ` from its 95% CI, at least `prior_sigma / √(1 + votes)`,
and `prior_sigma` with no votes). For a pair, one battle's outcome is worth
`I = p(1 − p)·(ln 10 / 400)²` in Fisher information about the rating difference, where
`p` is the predicted win probability; the variance of the difference `V = σ_a² + σ_b²`
would shrink by `V²·I / (1 + V·I)`. That expected reduction, times how open the pair's
order still is, `erfc(|r_a − r_b| / (2·√(2V)))` (1 for models whose intervals coincide,
about 0.17 when their 95% intervals just separate, near 0 for models two places apart on a
settled board), is the pair's weight: it is largest for neighbours on the board whose
ratings are still uncertain, and for new candidates (large σ). Without the second factor a
pair two places apart (p = 0.64 at 100 points) weighs almost as much as a neighbouring
pair, and uniform pairing put an 8-model board in order sooner (bench/matchmaking.py).
The pair is drawn with probability `(1 − exploration)·weight / Σ weights + exploration /
#pairs`, so every pair keeps some chance; a model never meets itself; which side is "A"
is a coin flip.

Pure: no I/O. Pass a seeded `random.Random` for reproducible draws.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

#: Uncertainty (Elo points, one standard deviation) of a model nobody has voted on yet.
PRIOR_SIGMA = 200.0
#: Share of the draw spread uniformly over all pairs.
EXPLORATION = 0.1

_LOGIT_PER_POINT = math.log(10) / 400.0
_Z95 = 1.959964


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
class PairWeight:
    """One unordered pair, its predicted win probability for `first` and its weight
    (expected reduction of the variance of their rating difference, in Elo points²)."""

    first: str
    second: str
    p_first: float
    weight: float


@dataclass(frozen=True)
class Matchup:
    """The drawn battle: `model_a` is shown on the left. `probability` is the chance this
    unordered pair had of being drawn."""

    model_a: str
    model_b: str
    probability: float


def sigma(model: ModelState, prior_sigma: float = PRIOR_SIGMA) -> float:
    """The model's rating uncertainty (one SD, Elo points) as matchmaking sees it."""
    floor = prior_sigma / math.sqrt(1 + max(model.votes, 0))
    if model.votes <= 0 or model.ci_low is None or model.ci_high is None:
        return prior_sigma
    from_ci = (model.ci_high - model.ci_low) / (2 * _Z95)
    return max(from_ci, floor)


def pair_weights(models: Sequence[ModelState], prior_sigma: float = PRIOR_SIGMA) -> list[PairWeight]:
    """Every unordered pair of distinct models with its weight (see the module docstring).
    Duplicate names are merged (the first entry wins)."""
    unique: dict[str, ModelState] = {}
    for model in models:
        unique.setdefault(model.name, model)
    states = list(unique.values())
    rated = [m.rating for m in states if m.rating is not None]
    centre = sum(rated) / len(rated) if rated else 1000.0
    out = []
    for i, x in enumerate(states):
        for y in states[i + 1 :]:
            rx = centre if x.rating is None else x.rating
            ry = centre if y.rating is None else y.rating
            p = 1.0 / (1.0 + 10 ** ((ry - rx) / 400.0))
            info = p * (1 - p) * _LOGIT_PER_POINT**2
            variance = sigma(x, prior_sigma) ** 2 + sigma(y, prior_sigma) ** 2
            reduction = variance**2 * info / (1 + variance * info)
            undecided = math.erfc(abs(rx - ry) / (2 * math.sqrt(2 * variance)))  # is their order still open?
            out.append(PairWeight(x.name, y.name, p, reduction * undecided))
    return out


def choose_pair(
    models: Sequence[ModelState],
    rng: random.Random,
    *,
    exploration: float = EXPLORATION,
    prior_sigma: float = PRIOR_SIGMA,
) -> Matchup:
    """Draw the next battle's two models (sides randomised). Raises `ValueError` when
    fewer than two distinct models are given."""
    if not 0 <= exploration <= 1:
        raise ValueError(f"exploration must be in [0, 1], got {exploration}")
    pairs = pair_weights(models, prior_sigma)
    if not pairs:
        raise ValueError("matchmaking needs at least two different models")
    total = sum(p.weight for p in pairs)
    n = len(pairs)
    probabilities = [
        (1 - exploration) * (p.weight / total if total > 0 else 1 / n) + exploration / n for p in pairs
    ]
    pick = rng.choices(range(n), weights=probabilities, k=1)[0]
    pair = pairs[pick]
    a, b = (pair.first, pair.second) if rng.random() < 0.5 else (pair.second, pair.first)
    return Matchup(model_a=a, model_b=b, probability=probabilities[pick])
