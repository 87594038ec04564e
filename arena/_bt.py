"""Bradley–Terry internals of `arena.ratings`: the fitted ratings and bootstrap types, and
the setup that turns pair counts into solver inputs (components, the weak prior, anchors,
the vectorised bootstrap). `arena.ratings` is the public face; this is its engine room."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from arena import _paired, _solver
from arena.counts import PairCounts

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

    def use_units(self, units: Sequence[Sequence[tuple[str, str, str]]] | Mapping[_paired.UnitKind, int]) -> None:
        """Resample `units` (groups of votes, or how many units of each kind) instead of
        single votes; see `leaderboard`."""
        kinds = units if isinstance(units, Mapping) else _paired.unit_kinds(units)
        self.units = _paired.unit_cells(self.models, self.data.first, self.data.second,
                                        (self.wins_first, self.wins_second, self.ties), kinds)

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
