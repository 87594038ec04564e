"""Matchmaking: which two models meet in the next battle.

The rule, in two parts (the README repeats it). Every model has a rating `r` and an
uncertainty `σ` (Elo points; `σ` from its 95% CI, at least `prior_sigma / √(1 + votes)`,
and `prior_sigma` with no votes).

**The order of the board.** For a pair, one battle's outcome is worth
`I = p(1 − p)·(ln 10 / 400)²` in Fisher information about the rating difference, where
`p` is the predicted win probability; the variance of the difference `V = σ_a² + σ_b²`
would shrink by `V²·I / (1 + V·I)`. That expected reduction, times how open the pair's
order still is, `erfc(|r_a − r_b| / √(2V))` (twice the chance that the two are in the
wrong order: 1 for models whose ratings coincide, 0.1 once they are 1.64 standard errors
apart — the board's 95% — and near 0 for models two places apart on a settled board), is
the pair's weight: largest for neighbours on the board whose order is still open, and for
new candidates (large σ).

**The race for first place.** While the leader (highest rating) and the challenger (the
highest upper bound `r + 1.96σ` among the others) are less than `top_margin·(σ_l + σ_c)`
apart, a `top_share` of the draw goes to their games: the leader–challenger pair with
weight `LEADER_PAIR_WEIGHT`, every other pair holding one of them with weight 1. The top
model's interval separates from the second's when both are narrow, and an interval
(ratings are centred on the board's mean) narrows fastest from games against the whole
board, near and far, not only against neighbours (bench/matchmaking.py: giving the race
to the neighbours instead separated the top no sooner than uniform pairing).

The pair is drawn with probability `(1 − exploration)·((1 − share)·order weight / Σ +
share·race weight / Σ) + exploration / #pairs`, so every pair keeps some chance; a model
never meets itself; which side is "A" is a coin flip.

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
#: Share of the draw given to the race for first place while it is open.
TOP_SHARE = 0.5
#: The race is open while leader and challenger are less than this many `σ_l + σ_c` apart.
TOP_MARGIN = 2.0
#: Weight of the leader–challenger pair in the race (every other pair of theirs: 1).
LEADER_PAIR_WEIGHT = 4.0

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
    (expected reduction of the variance of their rating difference, in Elo points², times
    how open their order is)."""

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


def _unique(models: Sequence[ModelState]) -> list[ModelState]:
    unique: dict[str, ModelState] = {}
    for model in models:
        unique.setdefault(model.name, model)
    return list(unique.values())


def pair_weights(models: Sequence[ModelState], prior_sigma: float = PRIOR_SIGMA) -> list[PairWeight]:
    """Every unordered pair of distinct models with its order weight (see the module
    docstring). Duplicate names are merged (the first entry wins)."""
    states = _unique(models)
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
            undecided = math.erfc(abs(rx - ry) / math.sqrt(2 * variance))  # is their order still open?
            out.append(PairWeight(x.name, y.name, p, reduction * undecided))
    return out


def top_race(models: Sequence[ModelState], prior_sigma: float = PRIOR_SIGMA, *,
             margin: float = TOP_MARGIN) -> tuple[str, str] | None:
    """(leader, challenger) while the race for first place is open (see the module
    docstring), else None; None too with fewer than two rated models. The challenger may be
    a model with no votes yet (rated at the board's mean, `prior_sigma`): it could be first."""
    states = _unique(models)
    rated = [m for m in states if m.rating is not None and m.votes > 0]
    if len(rated) < 2:
        return None
    centre = sum(m.rating for m in rated) / len(rated)  # type: ignore[misc]

    def rating(m: ModelState) -> float:
        return centre if m.rating is None or m.votes <= 0 else m.rating

    leader = max(rated, key=rating)
    # A new candidate (at the board's mean, σ = prior) may well be the challenger: it could be best.
    challenger = max((m for m in states if m is not leader), key=lambda m: rating(m) + _Z95 * sigma(m, prior_sigma))
    if rating(leader) - rating(challenger) >= margin * (sigma(leader, prior_sigma) + sigma(challenger, prior_sigma)):
        return None
    return leader.name, challenger.name


def choose_pair(
    models: Sequence[ModelState],
    rng: random.Random,
    *,
    exploration: float = EXPLORATION,
    top_share: float = TOP_SHARE,
    prior_sigma: float = PRIOR_SIGMA,
) -> Matchup:
    """Draw the next battle's two models (sides randomised). Raises `ValueError` when
    fewer than two distinct models are given."""
    if not 0 <= exploration <= 1 or not 0 <= top_share <= 1:
        raise ValueError(f"exploration and top_share must be in [0, 1], got {exploration}, {top_share}")
    pairs = pair_weights(models, prior_sigma)
    if not pairs:
        raise ValueError("matchmaking needs at least two different models")
    n = len(pairs)
    total = sum(p.weight for p in pairs)
    order = [p.weight / total if total > 0 else 1 / n for p in pairs]
    race = top_race(models, prior_sigma) if top_share > 0 else None
    share = top_share if race else 0.0
    if race:
        top = set(race)
        weights = [LEADER_PAIR_WEIGHT if {p.first, p.second} == top else 1.0 if top & {p.first, p.second} else 0.0
                   for p in pairs]
        race_total = sum(weights)
        race_part = [w / race_total for w in weights]
    else:
        race_part = [0.0] * n
    probabilities = [(1 - exploration) * ((1 - share) * o + share * r) + exploration / n
                     for o, r in zip(order, race_part)]
    pick = rng.choices(range(n), weights=probabilities, k=1)[0]
    pair = pairs[pick]
    a, b = (pair.first, pair.second) if rng.random() < 0.5 else (pair.second, pair.first)
    return Matchup(model_a=a, model_b=b, probability=probabilities[pick])
