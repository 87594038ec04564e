"""Length-controlled win rates against a baseline, as AlpacaEval 2.0's LC win rate.

For each model M, on its battles against the baseline B, a logistic GLM of M's score
(1 win, ½ tie, 0 loss — AlpacaEval's preference in [0, 1], fitted with soft labels) on
M's identity and tanh of the standardised length difference:

    logit P(M beats B) = θ_M + γ_M · tanh((len_M − len_B) / sd)

(`alpaca_eval.metrics.glm_winrate`'s `length_controlled_v1`, without its instruction
difficulty term: that is a per-AlpacaEval-prompt table we do not have). The LC win rate is
the win rate predicted with the length term zeroed — "what if both answers were equally
long": σ(θ_M). A model that wins only by writing more gets ~50%; one that wins on content
keeps its win rate. A small L2 penalty (`l2`) keeps the fit finite when M always wins;
AlpacaEval's weak L1 does the same. CIs: battles resampled, all rounds fitted at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import numpy as np
from scipy.special import expit

from arena.battles import Battle


class LCWinRate(msgspec.Struct, frozen=True):
    """One model against the baseline: `battles` (weighted count), raw `win_rate` (ties
    half), `lc_win_rate` with its bootstrap `ci`, and `length_coefficient` γ (log-odds at
    tanh = 1: > 0 means the judge favoured M's longer answers)."""

    model: str
    baseline: str
    battles: int
    win_rate: float
    lc_win_rate: float
    ci: tuple[float, float] | None
    length_coefficient: float


def length_controlled_win_rates(
    battles: Sequence[Battle],
    baseline: str,
    *,
    bootstrap: int = 200,
    seed: int | None = 0,
    level: float = 0.95,
    l2: float = 0.01,
) -> list[LCWinRate]:
    """The LC win rate of every model that met `baseline`, highest first (the baseline's
    own is 50% by construction and is not listed). Battle weights (`Battle.weight`) count.
    Raises `ValueError` when `baseline` has no battles or a battle has no lengths."""
    from arena.style import answer_lengths

    against = [b for b in battles if baseline in (b.model_a, b.model_b)]
    if not against:
        raise ValueError(f"baseline {baseline!r} has no battles")
    lengths = answer_lengths(against)
    rows: dict[str, list[int]] = {}
    for k, b in enumerate(against):
        rows.setdefault(b.model_b if b.model_a == baseline else b.model_a, []).append(k)
    rng = np.random.default_rng(seed)
    out = []
    for model, index in rows.items():
        picked = [against[k] for k in index]
        model_is_a = np.array([b.model_a == model for b in picked])
        score_a = np.array([b.score_a for b in picked])
        y = np.where(model_is_a, score_a, 1.0 - score_a)
        weight = np.array([1.0 if b.weight is None else float(b.weight) for b in picked])
        gap = np.where(model_is_a, lengths[index, 0] - lengths[index, 1], lengths[index, 1] - lengths[index, 0])
        sd = gap.std(ddof=1) if len(gap) > 1 else 0.0
        x = np.tanh(gap / sd) if sd > 0 else np.zeros_like(gap)
        theta = _fit(x, y, weight[:, None], l2)[:, 0]
        ci = None
        if bootstrap > 0:
            draws = rng.multinomial(len(y), np.full(len(y), 1.0 / len(y)), size=bootstrap).T * weight[:, None]
            tail = (1.0 - level) / 2.0 * 100.0
            low, high = np.percentile(expit(_fit(x, y, draws, l2)[0]), [tail, 100.0 - tail])
            ci = (float(low), float(high))
        out.append(LCWinRate(model=model, baseline=baseline, battles=int(weight.sum()),
                             win_rate=float((weight * y).sum() / weight.sum()), lc_win_rate=float(expit(theta[0])),
                             ci=ci, length_coefficient=float(theta[1])))
    return sorted(out, key=lambda r: -r.lc_win_rate)


def _fit(x: np.ndarray, y: np.ndarray, weights: np.ndarray, l2: float) -> np.ndarray:
    """(2 × rounds) [θ, γ] of the penalised soft-label logistic fit, one per weights column
    (battles × rounds), by Newton's method on all rounds at once (2 × 2 systems in closed form)."""
    params = np.zeros((2, weights.shape[1]))
    for _ in range(100):
        p = expit(params[0] + params[1] * x[:, None])
        residual = weights * (y[:, None] - p)
        g0 = residual.sum(axis=0) - l2 * params[0]
        g1 = (residual * x[:, None]).sum(axis=0) - l2 * params[1]
        curvature = weights * p * (1.0 - p)
        h00 = curvature.sum(axis=0) + l2
        h01 = (curvature * x[:, None]).sum(axis=0)
        h11 = (curvature * x[:, None] ** 2).sum(axis=0) + l2
        det = h00 * h11 - h01 * h01
        step = np.clip(np.stack([(h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det]), -5.0, 5.0)  # no overshoot
        params += step
        if np.max(np.abs(step)) < 1e-10:
            break
    return params
