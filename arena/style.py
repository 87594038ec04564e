"""Style control: Bradley–Terry ratings with answer style held constant.

A contextual BT model (as FastChat's `compute_style_control`): the log-odds that A beats B
are ln(base)·(r_A − r_B) + Σ_f β_f·x_f, where x_f are per-battle style differences —
always the answers' length, plus header, list and bold counts: FastChat's `conv_metadata`
when the battle has it, else computed from the answer texts by FastChat's rules
(`arena.style_metadata`). Each difference is normalised as
(a − b) / (a + b + 1) and then standardised over the battles, so β_f is the log-odds
change per standard deviation of that style gap. Ratings and coefficients are fitted
together with an L2 penalty (`l2`/2 · ‖params‖², FastChat's default 0.5); the ratings are
what each model would score if both answers looked alike.

Unlike plain BT this needs the battles, not just pair counts: the covariates are per
battle. The bootstrap resamples battles (one multinomial per round, all rounds fitted
together), so it costs O(battles × rounds); fine for arena-sized data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix
from scipy.special import expit, log_expit

from arena import _solver
from arena.battles import Battle
from arena.counts import PairCounts
from arena.style_metadata import count_tokens, style_counts

#: Style features, in the order they are reported.
STYLE_FEATURES = ("length", "headers", "lists", "bold")

_TOL = 1e-9
_CELLS_PER_CHUNK = 2_000_000  # battles × rounds per batch


@dataclass(frozen=True)
class StyleControlled:
    """Style-adjusted ratings (Elo points, `models` order) with bootstrap CIs, and the style
    coefficients (log-odds per standard deviation of the normalised A−B gap; positive means
    voters favour the answer with more of it) with their CIs."""

    models: list[str]
    ratings: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    coefficients: dict[str, float]
    coefficient_ci: dict[str, tuple[float, float]]
    features: list[str]
    components: list[list[str]]
    rounds: int
    notes: list[str] = field(default_factory=list)


def answer_lengths(battles: Sequence[Battle]) -> np.ndarray:
    """(n_battles × 2) answer lengths of sides A and B, as style control measures them:
    `length_a/b`, else the `conv_metadata` token counts (the battle's own, else computed
    from its texts). Raises `ValueError` naming the first battle with neither."""
    lengths = np.empty((len(battles), 2))
    for index, battle in enumerate(battles):
        counts = style_counts(battle)
        for side, key in enumerate("ab"):
            lengths[index, side] = _answer_length(battle, index, side, counts)
    return lengths


def style_features(battles: Sequence[Battle]) -> tuple[list[str], np.ndarray]:
    """Normalised style differences per battle, (a − b) / (a + b + 1), before standardising:
    returns the feature names and an (n_battles × features) array.

    The counts are FastChat's `conv_metadata` (`arena.style_metadata`): the battle's own,
    else computed from its answer texts. Length is `length_a/b` when given, else the token
    counts (`answer_lengths`); raises `ValueError` naming the first battle with neither.
    Markdown counts are included only when every battle has them."""
    lengths = np.empty((len(battles), 2))
    markdown: list[tuple[float, ...]] | None = []
    for index, battle in enumerate(battles):
        counts = style_counts(battle)
        for side in (0, 1):
            lengths[index, side] = _answer_length(battle, index, side, counts)
        if markdown is not None:
            markdown = None if counts is None else markdown + [counts[1:4] + counts[5:8]]
    names = ["length"]
    columns = [_normalised(lengths[:, 0], lengths[:, 1])]
    if markdown is not None and battles:
        md = np.asarray(markdown, dtype=float)
        for k, name in enumerate(STYLE_FEATURES[1:]):
            names.append(name)
            columns.append(_normalised(md[:, k], md[:, k + 3]))
    return names, np.column_stack(columns) if battles else np.zeros((0, len(names)))


def style_control(
    battles: Sequence[Battle],
    *,
    bootstrap: int = 1000,
    seed: int | None = 0,
    level: float = 0.95,
    l2: float = 0.5,
    anchor: tuple[str, float] | None = None,
    init_rating: float = 1000.0,
    scale: float = 400.0,
    base: float = 10.0,
) -> StyleControlled:
    """Fit the style-controlled BT model on battles and bootstrap its CIs (see the module
    docstring). Features with no variation are dropped with a note. Raises `ValueError`
    on zero battles or battles without lengths."""
    battles = list(battles)
    if not battles:
        raise ValueError("style control needs at least one battle")
    counts = PairCounts.from_battles(battles)
    models = counts.models
    index = {m: i for i, m in enumerate(models)}
    a = np.array([index[b.model_a] for b in battles])
    b = np.array([index[b.model_b] for b in battles])
    y = np.array([bt.score_a for bt in battles])
    names, raw = style_features(battles)
    notes: list[str] = []
    keep = raw.std(axis=0) > 0
    for name, kept in zip(names, keep):
        if not kept:
            notes.append(f"style feature {name!r} has no variation in these battles and was left out")
    names = [n for n, k in zip(names, keep) if k]
    x = (raw[:, keep] - raw[:, keep].mean(axis=0)) / raw[:, keep].std(axis=0)
    model = _ContextualBT(len(models), a, b, x, y, l2, math.log(base))
    weights = np.array([1.0 if bt.weight is None else float(bt.weight) for bt in battles])  # Arena-Hard's strong verdicts
    params = model.fit(weights)
    m = len(models)
    n_comp, labels = _solver.component_labels(m, *_pair_index(a, b))
    if n_comp > 1:
        notes.append("the comparison graph is disconnected; ratings are only comparable within one component")
    if m == 1:
        notes.append("only one model: its rating is the anchor by definition")
    anchor_index = None
    if anchor is not None:
        if anchor[0] not in index:
            raise ValueError(f"anchor model {anchor[0]!r} has no battles")
        anchor_index = index[anchor[0]]

    def to_points(r: np.ndarray) -> np.ndarray:
        out = np.empty_like(r)
        for label in np.unique(labels):
            members = labels == label
            if anchor_index is not None and labels[anchor_index] == label:
                out[members] = (r[members] - r[anchor_index]) * scale + anchor[1]
            else:
                out[members] = (r[members] - r[members].mean(axis=0)) * scale + init_rating
        return out

    ratings = to_points(params[:m, None])[:, 0]
    coefficients = {n: float(v) for n, v in zip(names, params[m:])}
    if bootstrap > 0:
        samples = model.bootstrap(params, bootstrap, seed, weights)
        points = to_points(samples[:m])
        tail = (1.0 - level) / 2.0 * 100.0
        low, high = np.percentile(points, [tail, 100.0 - tail], axis=1)
        beta_low, beta_high = np.percentile(samples[m:], [tail, 100.0 - tail], axis=1)
        coefficient_ci = {n: (float(lo), float(hi)) for n, lo, hi in zip(names, beta_low, beta_high)}
    else:
        low, high = ratings.copy(), ratings.copy()
        coefficient_ci = {n: (v, v) for n, v in coefficients.items()}
    return StyleControlled(
        models=models,
        ratings=ratings,
        ci_low=low,
        ci_high=high,
        coefficients=coefficients,
        coefficient_ci=coefficient_ci,
        features=names,
        components=counts.components(),
        rounds=max(bootstrap, 0),
        notes=notes,
    )


# --- internals ----------------------------------------------------------------------------


def _pair_index(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.minimum(a, b), np.maximum(a, b)


def _normalised(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a - b) / (a + b + 1.0)


def _answer_length(battle: Battle, index: int, side: int, counts: tuple[float, ...] | None) -> float:
    key = "ab"[side]
    explicit = battle.length_a if key == "a" else battle.length_b
    value = float(explicit) if explicit is not None else None if counts is None else counts[4 * side]
    if value is None:
        value = _token_length(battle, key)
    if value is None:
        raise ValueError(
            f"style control needs answer lengths or texts: battle {index} ({battle.model_a} vs {battle.model_b}) has no "
            f"length_{key}, conv_metadata token count or answer text"
        )
    return value


def _token_length(battle: Battle, side: str) -> float | None:
    """One side's length when the other side has no text: its metadata token count, else
    its text's tokens."""
    tokens = (battle.conv_metadata or {}).get(f"sum_assistant_{side}_tokens")
    if isinstance(tokens, (int, float)) and not isinstance(tokens, bool):
        return float(tokens)
    text = battle.answer_text(side)  # type: ignore[arg-type]
    return None if text is None else float(count_tokens(text))


class _ContextualBT:
    """Penalised logistic model over battles: params = (ratings r, coefficients β).

    logit_n = α (r_a − r_b) + x_n·β, loss = −Σ c_n [y log p + (1−y) log(1−p)] + l2/2 ‖params‖²
    (c_n: battle weights, 1 or bootstrap counts) — FastChat's parametrisation, so its
    `fit_contextual_bt` and this agree on the same inputs."""

    def __init__(self, n_models: int, a: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, l2: float, alpha: float) -> None:
        self.m, self.x, self.y, self.l2, self.alpha = n_models, x, y, l2, alpha
        self.a, self.b = a, b
        n = len(a)
        rows = np.concatenate([a, b])
        cols = np.concatenate([np.arange(n), np.arange(n)])
        vals = np.concatenate([np.full(n, alpha), np.full(n, -alpha)])
        self.incidence = csr_matrix((vals, (rows, cols)), shape=(n_models, n))  # models × battles, α folded in

    def logits(self, params: np.ndarray) -> np.ndarray:
        r, beta = params[: self.m], params[self.m :]
        return self.incidence.T @ r + self.x @ beta

    def loss(self, params: np.ndarray, weights: np.ndarray) -> float:
        z = self.logits(params)
        ll = (weights * (self.y * log_expit(z) + (1 - self.y) * log_expit(-z))).sum()
        return float(-ll + 0.5 * self.l2 * params @ params)

    def gradient(self, params: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gradient of the penalised log-likelihood (ascent direction) and p per battle.
        Works for one params vector or a (params × rounds) array with matching weights."""
        prob = expit(self.logits(params))
        residual = weights * (self.y if params.ndim == 1 else self.y[:, None]) - weights * prob
        grad = np.concatenate([self.incidence @ residual, self.x.T @ residual]) - self.l2 * params
        return grad, prob

    def hessian(self, prob: np.ndarray, weights: np.ndarray) -> np.ndarray:
        w = weights * prob * (1.0 - prob)
        weighted = self.incidence.multiply(w[None, :]).tocsr()
        h_rr = (weighted @ self.incidence.T).toarray()
        h_rb = weighted @ self.x
        h_bb = self.x.T @ (w[:, None] * self.x)
        full = np.block([[h_rr, h_rb], [h_rb.T, h_bb]])
        return full + self.l2 * np.eye(len(full))

    def fit(self, weights: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
        """Damped Newton; the L2 penalty makes the problem strictly convex."""
        params = np.zeros(self.m + self.x.shape[1]) if start is None else start.copy()
        loss = self.loss(params, weights)
        for _ in range(100):
            grad, prob = self.gradient(params, weights)
            step = np.linalg.solve(self.hessian(prob, weights), grad)
            t = 1.0
            while True:
                candidate = params + t * step
                new_loss = self.loss(candidate, weights)
                if new_loss <= loss - 1e-4 * t * float(grad @ step) or t < 1e-8:
                    break
                t *= 0.5
            params, loss = candidate, new_loss
            if np.max(np.abs(t * step)) < _TOL:
                break
        return params

    def bootstrap(self, params_hat: np.ndarray, rounds: int, seed: int | None, battle_weights: np.ndarray) -> np.ndarray:
        """(params × rounds) refits on battle resamples (a drawn battle keeps its weight),
        Newton–chord from the full fit."""
        n = len(self.y)
        prob = expit(self.logits(params_hat))
        inverse = np.linalg.inv(self.hessian(prob, battle_weights))
        rng = np.random.default_rng(seed)
        chunk = max(1, min(128, _CELLS_PER_CHUNK // max(n, 1)))
        out = np.empty((len(params_hat), rounds))
        sampler = _solver.MultinomialSampler(np.ones(n, dtype=np.int64))  # its tables, built once
        for start in range(0, rounds, chunk):
            size = min(chunk, rounds - start)
            weights = sampler.draw(rng, size).astype(float) * battle_weights[:, None]
            params = np.repeat(params_hat[:, None], size, axis=1)
            for _ in range(30):
                grad, _ = self.gradient(params, weights)
                step = inverse @ grad
                params += step
                if np.max(np.abs(step)) < _solver.ROUND_TOL:
                    break
            else:  # chord did not settle: finish each round with the line-searched fit
                for r in range(size):
                    params[:, r] = self.fit(weights[:, r], params_hat)
            out[:, start : start + size] = params
        return out
