"""The numbers behind the leaderboard: Bradley–Terry ratings with bootstrap CIs, online Elo,
rank upper bounds, and the leaderboard that puts them side by side.

All fits take `PairCounts` (see `arena.counts`) and report on the Elo scale: a rating gap
of `scale` points means odds of `base` : 1 (400 and 10, as FastChat). By default every
component's mean rating is `init_rating` (1000); `anchor=(model, rating)` pins one model
instead. Ties of both kinds count as half a win for each side.

Typical use::

    counts = PairCounts.from_battles(read_battles("battles.json").battles)
    board = leaderboard(counts, elo=online_elo(battles), bootstrap=1000, seed=0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from arena._bt import DEFAULT_PRIOR_TIES, BootstrapCI, Ratings, _anchor_text, _Setup
from arena._paired import UnitKind, unit_kinds
from arena.counts import PairCounts, battle_count_matrix, win_rate_matrix
from arena.elo import elo_update, online_elo

if TYPE_CHECKING:
    from arena.style import StyleControlled

__all__ = [
    "DEFAULT_PRIOR_TIES",
    "BootstrapCI",
    "Leaderboard",
    "LeaderboardRow",
    "PairCounts",
    "Ratings",
    "UnitKind",
    "battle_count_matrix",
    "bootstrap_ci",
    "bradley_terry",
    "elo_update",
    "leaderboard",
    "online_elo",
    "predicted_win_matrix",
    "rank_upper_bounds",
    "unit_kinds",
    "win_rate_matrix",
]

class LeaderboardRow(msgspec.Struct, frozen=True):
    """One leaderboard line. `rank_ub` = 1 + models (in the same component) whose lower CI
    bound is above this model's upper bound. `win_rate` counts ties as half; `elo` is the
    provisional online Elo, when given."""

    model: str
    rating: float
    ci_low: float
    ci_high: float
    rank_ub: int
    votes: int
    win_rate: float | None
    elo: float | None
    #: Votes to remove so that the model ranked just below rates above this one
    #: (`arena.fragility`); None on a component's last row, or when no removal swaps them.
    flip_votes: int | None = None


class Leaderboard(msgspec.Struct, frozen=True):
    """Rows best first (grouped by comparison-graph component, largest first), with what a
    reader needs to trust them: battle count, bootstrap rounds, anchor and notes."""

    rows: list[LeaderboardRow]
    n_battles: int
    bootstrap_rounds: int
    anchor: str
    components: list[list[str]]
    notes: list[str] = []
    style_coefficients: dict[str, float] | None = None
    style_coefficient_ci: dict[str, tuple[float, float]] | None = None


def bradley_terry(
    counts: PairCounts,
    *,
    anchor: tuple[str, float] | None = None,
    init_rating: float = 1000.0,
    scale: float = 400.0,
    base: float = 10.0,
    prior_ties: float = DEFAULT_PRIOR_TIES,
) -> Ratings:
    """Bradley–Terry maximum-likelihood ratings from pair counts, ties as half a win.

    Agrees with FastChat's `compute_bt` (to well under 0.01 points) whenever the MLE is
    finite. When it is not — a model never lost or never won, or a group never lost to the
    rest — every model gets `prior_ties` virtual ties against an average model, which keeps
    the ratings finite and ordered; `prior_ties` on the result and a note say so. Zero
    battles give an empty result with a note; disconnected comparison graphs are fitted per
    component, each centred on `init_rating` (or on the anchor, in the anchor's component)."""
    setup = _Setup.build(counts, anchor, prior_ties)
    return setup.ratings(setup.fit_point(), anchor, init_rating, scale, base)


def bootstrap_ci(
    counts: PairCounts,
    *,
    rounds: int = 1000,
    seed: int | None = 0,
    level: float = 0.95,
    anchor: tuple[str, float] | None = None,
    init_rating: float = 1000.0,
    scale: float = 400.0,
    base: float = 10.0,
    prior_ties: float = DEFAULT_PRIOR_TIES,
    workers: int | None = None,
) -> BootstrapCI:
    """Confidence intervals by multinomial bootstrap of the pair counts.

    Each round redraws all battles at once as one multinomial over the (pair, outcome)
    cells — the same resampling as FastChat's `compute_bootstrap_bt` — and all rounds are
    fitted together as a (models × rounds) array (Newton–chord iterations from the full
    fit, a few matrix products per batch), so the cost is mostly drawing the resamples.
    A round whose resample has no finite MLE uses the weak prior (see `bradley_terry`).
    Same `seed`, same intervals, whatever `workers` (threads; default: up to 2 per the CPUs
    here)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    setup = _Setup.build(counts, anchor, prior_ties)
    theta_hat = setup.fit_point()
    return setup.bootstrap_ci(theta_hat, rounds, seed, level, workers, init_rating, scale, base)


def rank_upper_bounds(low: np.ndarray, high: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """1 + the number of models whose lower bound exceeds this model's upper bound (only
    models with the same `groups` label count, when given): the best rank the data allow."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    beats = low[None, :] > high[:, None]
    if groups is not None:
        groups = np.asarray(groups)
        beats &= groups[None, :] == groups[:, None]
    return 1 + beats.sum(axis=1)


def predicted_win_matrix(ratings: Ratings) -> np.ndarray:
    """P(row model beats column model) under the BT fit, in `ratings.models` order (0.5 on the diagonal)."""
    r = ratings.ratings
    return 1.0 / (1.0 + ratings.base ** ((r[None, :] - r[:, None]) / ratings.scale))


def leaderboard(
    counts: PairCounts,
    *,
    elo: Mapping[str, float] | None = None,
    bootstrap: int = 1000,
    seed: int | None = 0,
    anchor: tuple[str, float] | None = None,
    style: StyleControlled | None = None,
    init_rating: float = 1000.0,
    scale: float = 400.0,
    base: float = 10.0,
    units: Sequence[Sequence[tuple[str, str, str]]] | Mapping[UnitKind, int] | None = None,
    fragility: bool = True,
) -> Leaderboard:
    """The leaderboard from pair counts: BT rating, 95% bootstrap CI, rank upper bound,
    votes, win rate and (if given) online Elo per model.

    `units` (the judge board's) groups votes that are one observation: each unit lists its
    votes as `(model_a, model_b, winner)` — an LLM judge's verdicts on one (prompt, pair)
    in both orders. The bootstrap then redraws units, not votes, so two verdicts that always
    agree are not counted as two independent votes (their CI would be ~√2 too narrow).
    The units must hold exactly the votes of `counts`; the ratings do not change. Instead
    of the units, `units` may give how many units there are of each `UnitKind` (what a
    store keeps): same kinds, same counts, same intervals.

    With `style` (from `arena.style.style_control` on the same battles) the ratings, CIs and
    ranks are the style-adjusted ones and the style coefficients are attached. Zero battles
    give an empty board with a note; `bootstrap=0` gives zero-width intervals. With
    `fragility`, each row's `flip_votes` is the number of votes whose removal swaps it with
    the row below (`arena.fragility`; not for style-controlled ratings)."""
    if counts.n_battles == 0:
        return Leaderboard(rows=[], n_battles=0, bootstrap_rounds=0, anchor=_anchor_text(anchor, init_rating), components=[], notes=["no battles yet: nothing to rate"])
    flip_votes: dict[str, int | None] | None = None
    if style is not None:
        models, rating, low, high = style.models, style.ratings, style.ci_low, style.ci_high
        notes, components, rounds = list(style.notes), style.components, style.rounds
    else:
        setup = _Setup.build(counts, anchor, DEFAULT_PRIOR_TIES)
        if units is not None:
            setup.use_units(units)
        theta_hat = setup.fit_point()
        fit = setup.ratings(theta_hat, anchor, init_rating, scale, base)
        models, rating, notes, components = fit.models, fit.ratings, list(fit.notes), fit.components
        if bootstrap > 0:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(1) as pool:  # the flips need the point ratings only: computed beside the bootstrap
                flips = pool.submit(_flips, counts, models, rating, components) if fragility else None
                ci = setup.bootstrap_ci(theta_hat, bootstrap, seed, 0.95, None, init_rating, scale, base)
                flip_votes = flips.result() if flips is not None else None
            low, high, rounds = ci.low, ci.high, bootstrap
            if ci.prior_rounds and not fit.prior_ties:
                notes.append(f"{ci.prior_rounds} of {bootstrap} bootstrap resamples had no finite MLE and used the weak prior")
        else:
            low, high, rounds = rating.copy(), rating.copy(), 0
            notes.append("no bootstrap: intervals have zero width and rank bounds use the point ratings")
    component_of = {model: c for c, group in enumerate(components) for model in group}
    groups = np.array([component_of[m] for m in models])
    rank_ub = rank_upper_bounds(low, high, groups)
    index = {m: i for i, m in enumerate(counts.models)}
    votes, win_rates = counts.votes(), counts.win_rates()
    rows = []
    for i in sorted(range(len(models)), key=lambda i: (groups[i], -rating[i])):
        c = index[models[i]]
        rows.append(
            LeaderboardRow(
                model=models[i],
                rating=float(rating[i]),
                ci_low=float(low[i]),
                ci_high=float(high[i]),
                rank_ub=int(rank_ub[i]),
                votes=int(votes[c]),
                win_rate=None if math.isnan(win_rates[c]) else float(win_rates[c]),
                elo=None if elo is None or models[i] not in elo else float(elo[models[i]]),
            )
        )
    if fragility and style is None:
        if flip_votes is None:
            flip_votes = _flips(counts, models, rating, components)
        rows = [msgspec.structs.replace(r, flip_votes=flip_votes.get(r.model)) for r in rows]
    return Leaderboard(
        rows=rows,
        n_battles=counts.n_battles,
        bootstrap_rounds=rounds,
        anchor=_anchor_text(anchor, init_rating),
        components=components,
        notes=notes,
        style_coefficients=None if style is None else dict(style.coefficients),
        style_coefficient_ci=None if style is None else dict(style.coefficient_ci),
    )


# --- internals ----------------------------------------------------------------------------


def _flips(counts: PairCounts, models: list[str], rating: np.ndarray, components: list[list[str]]) -> dict[str, int | None]:
    """Each model's `flip_votes`: the votes whose removal swaps it with the model ranked just
    below it in its comparison-graph component (by the point ratings)."""
    from arena.fragility import adjacent_flips

    key = {m: (-r, i) for i, (m, r) in enumerate(zip(models, rating.tolist()))}  # the rows' order
    flips: dict[str, int | None] = {}
    for group in components:
        order = sorted(group, key=key.__getitem__)
        flips.update({upper: f.votes for upper, f in adjacent_flips(counts, order).items()})
    return flips


