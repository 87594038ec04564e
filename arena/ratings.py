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
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from arena import _paired, _solver
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
    "battle_count_matrix",
    "bootstrap_ci",
    "bradley_terry",
    "elo_update",
    "leaderboard",
    "online_elo",
    "predicted_win_matrix",
    "rank_upper_bounds",
    "win_rate_matrix",
]

#: Weight of the weak prior used only when the MLE is infinite (a model that never lost or
#: never won, or any group that never lost to the rest): each model gets this many virtual
#: ties against a model of average rating. Between two models, a 1–0 record then gives
#: +263 points (instead of +∞), 3–0 gives +407 and 10–0 gives +581.
DEFAULT_PRIOR_TIES = 1.0

_CHUNK = 128  # bootstrap rounds per batch: bounds memory at ~P x 128 floats per array


@dataclass(frozen=True)
class Ratings:
    """Bradley–Terry ratings on the Elo scale, in `models` order.

    `prior_ties` is 0 when these are the exact maximum-likelihood ratings, else the weight
    of the weak prior that kept them finite. `components` lists the groups of models whose
    ratings are comparable; `notes` says, in words, anything a reader must know."""

    models: list[str]
    ratings: np.ndarray
    components: list[list[str]]
    prior_ties: float
    anchor: str
    scale: float = 400.0
    base: float = 10.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        """`{model: rating}`, highest first."""
        order = np.argsort(-self.ratings, kind="stable")
        return {self.models[i]: float(self.ratings[i]) for i in order}

    def win_probability(self, model_a: str, model_b: str) -> float:
        """P(model_a beats model_b) under the fit (a tie counted as half)."""
        ra = self.ratings[self.models.index(model_a)]
        rb = self.ratings[self.models.index(model_b)]
        return float(1.0 / (1.0 + self.base ** ((rb - ra) / self.scale)))


@dataclass(frozen=True)
class BootstrapCI:
    """Bootstrap distribution of the ratings: `samples` is rounds × models (Elo points),
    `low`/`high` the equal-tailed `level` interval per model, in `models` order.
    `prior_rounds` counts the resamples that had no finite MLE and used the weak prior."""

    models: list[str]
    low: np.ndarray
    high: np.ndarray
    samples: np.ndarray
    level: float
    rounds: int
    seed: int | None
    prior_rounds: int = 0


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
    units: Sequence[Sequence[tuple[str, str, str]]] | None = None,
) -> Leaderboard:
    """The leaderboard from pair counts: BT rating, 95% bootstrap CI, rank upper bound,
    votes, win rate and (if given) online Elo per model.

    `units` (the judge board's) groups votes that are one observation: each unit lists its
    votes as `(model_a, model_b, winner)` — an LLM judge's verdicts on one (prompt, pair)
    in both orders. The bootstrap then redraws units, not votes, so two verdicts that always
    agree are not counted as two independent votes (their CI would be ~√2 too narrow).
    The units must hold exactly the votes of `counts`; the ratings do not change.

    With `style` (from `arena.style.style_control` on the same battles) the ratings, CIs and
    ranks are the style-adjusted ones and the style coefficients are attached. Zero battles
    give an empty board with a note; `bootstrap=0` gives zero-width intervals."""
    if counts.n_battles == 0:
        return Leaderboard(rows=[], n_battles=0, bootstrap_rounds=0, anchor=_anchor_text(anchor, init_rating), components=[], notes=["no battles yet: nothing to rate"])
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
            ci = setup.bootstrap_ci(theta_hat, bootstrap, seed, 0.95, None, init_rating, scale, base)
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


def _default_workers() -> int:
    return max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _anchor_text(anchor: tuple[str, float] | None, init_rating: float) -> str:
    return f"mean={init_rating:g}" if anchor is None else f"{anchor[0]}={anchor[1]:g}"


class _Setup:
    """Counts turned into solver inputs, plus what the notes need to say about them."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    @classmethod
    def build(cls, counts: PairCounts, anchor: tuple[str, float] | None, prior_ties: float) -> _Setup:
        if not prior_ties > 0:
            raise ValueError(f"prior_ties must be positive (it is only used when the MLE is infinite), got {prior_ties}")
        self = cls()
        arrays = counts.arrays()
        self.models = arrays.models
        m = len(self.models)
        self.data = _solver.PairData(m, arrays.first, arrays.second)
        self.wins_first = arrays.wins_first
        self.wins_second = arrays.wins_second
        self.ties = arrays.ties + arrays.bothbad
        self.score = arrays.score_first.astype(float)
        self.total = arrays.totals.astype(float)
        self.n_components, self.labels = _solver.component_labels(m, arrays.first, arrays.second)
        self.components = counts.components()
        self.anchor_index = None
        if anchor is not None:
            if anchor[0] not in self.models:
                raise ValueError(f"anchor model {anchor[0]!r} has no battles")
            self.anchor_index = self.models.index(anchor[0])
            self.anchor_rating = float(anchor[1])
        exists = _solver.mle_exists(m, arrays.first, arrays.second, self.score, self.total, self.n_components)
        self.prior = 0.0 if exists else float(prior_ties)
        self.prior_weight = float(prior_ties)
        self._describe(counts, exists)
        return self

    def _describe(self, counts: PairCounts, exists: bool) -> None:
        m = len(self.models)
        if m == 0:
            self.notes.append("no battles: nothing to rate")
        elif m == 1:
            self.notes.append("only one model: its rating is the anchor by definition")
        votes = counts.votes()
        idle = [self.models[i] for i in range(m) if votes[i] == 0]
        if idle:
            self.notes.append(f"no battles for {', '.join(idle)}: rating is the anchor and means nothing")
        if len(self.components) > 1:
            groups = "; ".join("[" + ", ".join(c) + "]" for c in self.components)
            self.notes.append(f"the comparison graph is disconnected ({len(self.components)} components: {groups}); ratings are only comparable within one")
        if not exists:
            scores, totals = counts.scores(), votes
            never_lost = [self.models[i] for i in range(m) if totals[i] and scores[i] == totals[i]]
            never_won = [self.models[i] for i in range(m) if totals[i] and scores[i] == 0]
            parts = []
            if never_lost:
                parts.append(f"never lost: {', '.join(never_lost)}")
            if never_won:
                parts.append(f"never won: {', '.join(never_won)}")
            why = "; ".join(parts) if parts else "a group of models never lost to the rest of its component"
            self.notes.append(
                f"no finite maximum-likelihood ratings ({why}); a weak prior of {self.prior_weight:g} virtual tie(s) "
                "per model against an average model keeps them finite"
            )

    def use_units(self, units: Sequence[Sequence[tuple[str, str, str]]]) -> None:
        """Resample `units` (groups of votes) instead of single votes; see `leaderboard`."""
        self.units = _paired.unit_cells(self.models, self.data.first, self.data.second,
                                        (self.wins_first, self.wins_second, self.ties), units)

    def _draw_units(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _paired.draw_units(self.units, len(self.score), rng, size)

    units: tuple[np.ndarray, np.ndarray] | None = None

    def fit_point(self) -> np.ndarray:
        if not self.models:
            return np.zeros(0)
        return _solver.fit_one(self.data, self.score, self.total, self.labels, self.prior)

    def ratings(self, theta: np.ndarray, anchor: tuple[str, float] | None, init_rating: float, scale: float, base: float) -> Ratings:
        return Ratings(
            models=self.models,
            ratings=self.to_points(theta[:, None], init_rating, scale, base)[:, 0],
            components=self.components,
            prior_ties=self.prior,
            anchor=_anchor_text(anchor, init_rating),
            scale=scale,
            base=base,
            notes=self.notes,
        )

    def bootstrap_ci(
        self, theta_hat: np.ndarray, rounds: int, seed: int | None, level: float, workers: int | None, init_rating: float, scale: float, base: float
    ) -> BootstrapCI:
        m = len(self.models)
        if m == 0 or rounds <= 0:
            return BootstrapCI(self.models, np.zeros(m), np.zeros(m), np.zeros((max(rounds, 0), m)), level, max(rounds, 0), seed)
        samples, prior_rounds = self.bootstrap(theta_hat, rounds, seed, workers if workers is not None else _default_workers())
        points = self.to_points(samples, init_rating, scale, base).T
        tail = (1.0 - level) / 2.0 * 100.0
        low, high = np.percentile(points, [tail, 100.0 - tail], axis=0)
        return BootstrapCI(self.models, low, high, points, level, rounds, seed, prior_rounds)

    def bootstrap(self, theta_hat: np.ndarray, rounds: int, seed: int | None, workers: int | None) -> tuple[np.ndarray, int]:
        """Logit samples (models × rounds) and how many rounds needed the prior."""
        m = len(self.models)
        p = len(self.score)
        sampler = _solver.MultinomialSampler(np.concatenate([self.wins_first, self.wins_second, self.ties]))
        prob = _solver.expit(theta_hat[self.data.first] - theta_hat[self.data.second])
        hess = self.data.hessian(prob, self.total)
        if self.prior:
            s = _solver.expit(theta_hat)
            hess[np.diag_indices(m)] += self.prior * s * (1.0 - s)
        else:
            hess += _solver.gauge(self.labels, max(1.0, float(self.total.sum()) / m))
        chord_inverse = np.linalg.inv(hess)
        starts = list(range(0, rounds, _CHUNK))
        # One generator per chunk, spawned from the seed: results do not depend on threads.
        generators = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(starts))]
        out = np.empty((m, rounds))
        prior_flags = np.zeros(rounds, dtype=bool)

        def run_chunk(k: int) -> None:
            start = starts[k]
            size = min(_CHUNK, rounds - start)
            if self.units is not None:
                wins_first, wins_second, ties = self._draw_units(generators[k], size)
            else:
                draws = sampler.draw(generators[k], size)  # 3P × size
                wins_first, wins_second, ties = draws[:p], draws[p : 2 * p], draws[2 * p :]
            score = ties.astype(np.float32)
            score *= 0.5
            score += wins_first
            total = wins_first + wins_second
            total += ties
            total = total.astype(np.float32)
            if self.prior:
                priors = np.full(size, self.prior)
            else:
                flags = _solver.needs_prior(self.data, score, total, self.n_components, self.score, self.total)
                priors = np.where(flags, self.prior_weight, 0.0)
            prior_flags[start : start + size] = priors > 0
            out[:, start : start + size] = _solver.fit_rounds(self.data, score, total, priors, self.labels, theta_hat, chord_inverse)

        # numpy's samplers and array kernels release the GIL, so chunks overlap on two cores.
        workers = min(len(starts), workers or 1)
        if workers > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(run_chunk, range(len(starts))))
        else:
            for k in range(len(starts)):
                run_chunk(k)
        return out, int(prior_flags.sum())

    def to_points(self, theta: np.ndarray, init_rating: float, scale: float, base: float) -> np.ndarray:
        """Logits (models × rounds) to Elo points: each component centred on `init_rating`,
        except the anchor's, which is shifted so the anchor model has its rating."""
        factor = scale / math.log(base)
        points = np.empty_like(theta, dtype=float)
        for label in np.unique(self.labels):
            members = self.labels == label
            block = theta[members]
            if self.anchor_index is not None and self.labels[self.anchor_index] == label:
                points[members] = (block - theta[self.anchor_index]) * factor + self.anchor_rating
            else:
                points[members] = (block - block.mean(axis=0)) * factor + init_rating
        return points
