"""Numerics behind `arena.ratings`: Bradley–Terry Newton fits, one at a time or many
bootstrap rounds at once, and an exact multinomial sampler fast enough for the bootstrap.

Everything here works in natural logits θ: P(i beats j) = σ(θ_i − θ_j). Pair data are
arrays over P pairs: `first`, `second` (model indices), `score` (first's wins + half its
ties) and `total` (battles). Batched arrays are laid out pairs × rounds (and models ×
rounds) so that gathering a model's column for every pair is a contiguous row copy.

Written by hand because no library fits the bootstrap of a BT model over counts: scipy's
L-BFGS refits one round at a time (the FastChat way, ~100x slower per round), and
logistic-regression packages take one row per battle.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import expit, log_expit, pdtr

#: Newton stops when no rating moves by more than this many logits (≈2e-7 Elo points).
STEP_TOL = 1e-9
#: Bootstrap rounds stop once a step is this small (≈0.017 Elo points). The chord iteration
#: contracts ~30x per step on arena-sized data (rounds contracting less than 2x per step go
#: to full Newton), so what remains is ≤ 0.01 points and usually ~5e-4: noise far below the
#: Monte Carlo error of a 1000-round percentile (~0.5 points).
ROUND_TOL = 1e-4
_MAX_NEWTON = 200
_MAX_CHORD = 12
_POISSON_MIN_N = 1000  # below this, numpy's multinomial is cheap enough and 2/√n too coarse
_LOOKUP_MAX_N = 20_000_000  # item → cell table up to 80 MB; above, binary search
_TABLE_ENTRIES = 1 << 20  # inverse-CDF lookup entries per Poisson table (4 MB of int32)


class PairData:
    """Pair arrays plus the sparse model-by-pair incidence matrix used to sum gradients."""

    def __init__(self, n_models: int, first: np.ndarray, second: np.ndarray) -> None:
        self.n_models = n_models
        self.first = np.asarray(first, dtype=np.int64)
        self.second = np.asarray(second, dtype=np.int64)
        p = len(self.first)
        rows = np.concatenate([self.first, self.second])
        cols = np.concatenate([np.arange(p), np.arange(p)])
        vals = np.concatenate([np.ones(p), -np.ones(p)])
        #: (models × pairs): `incidence @ residual` adds +r to the first model, −r to the second.
        self.incidence = csr_matrix((vals, (rows, cols)), shape=(n_models, p))
        self.incidence32 = self.incidence.astype(np.float32)

    def gradient(self, theta: np.ndarray, score: np.ndarray, total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Log-likelihood gradient (models × rounds, or models) and the win probabilities."""
        prob = np.subtract(theta[self.first], theta[self.second])
        expit(prob, out=prob)
        residual = np.multiply(total, prob)
        np.subtract(score, residual, out=residual)
        return self.incidence @ residual, prob

    def batch_gradient(self, theta: np.ndarray, score: np.ndarray, total: np.ndarray) -> np.ndarray:
        """The gradient for many rounds at once in float32 (models × rounds, as float64).

        score, total: float32 pairs × rounds. σ(x) = ½ + ½·tanh(x/2) in float32 runs ~10x
        faster than float64 `expit`; its absolute error (~6e-8 per probability) moves a
        bootstrap round's fit by ~1e-7 logits, far below `ROUND_TOL`."""
        t = theta.astype(np.float32)
        prob = np.subtract(t[self.first], t[self.second])
        prob *= 0.5
        np.tanh(prob, out=prob)
        prob *= 0.5
        prob += 0.5
        prob *= total
        np.subtract(score, prob, out=prob)
        return (self.incidence32 @ prob).astype(np.float64)

    def hessian(self, prob: np.ndarray, total: np.ndarray) -> np.ndarray:
        """Negative log-likelihood Hessian for one fit (models × models)."""
        m = self.n_models
        w = total * prob * (1.0 - prob)
        h = np.zeros((m, m))
        np.add.at(h, (self.first, self.first), w)
        np.add.at(h, (self.second, self.second), w)
        np.add.at(h, (self.first, self.second), -w)
        np.add.at(h, (self.second, self.first), -w)
        return h

    def hessians(self, prob: np.ndarray, total: np.ndarray) -> np.ndarray:
        """Hessians for many rounds at once: prob, total are pairs × rounds → rounds × m × m."""
        m = self.n_models
        r = prob.shape[1]
        w = (total * prob * (1.0 - prob)).T  # rounds × pairs
        base = (np.arange(r) * m * m)[:, None]
        ii = base + self.first * m + self.first
        jj = base + self.second * m + self.second
        ij = base + self.first * m + self.second
        ji = base + self.second * m + self.first
        flat = np.bincount(ii.ravel(), w.ravel(), r * m * m)
        flat += np.bincount(jj.ravel(), w.ravel(), r * m * m)
        flat -= np.bincount(ij.ravel(), w.ravel(), r * m * m)
        flat -= np.bincount(ji.ravel(), w.ravel(), r * m * m)
        return flat.reshape(r, m, m)


def component_labels(n_models: int, first: np.ndarray, second: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of the comparison graph (an edge wherever two models met)."""
    graph = csr_matrix((np.ones(len(first)), (first, second)), shape=(n_models, n_models))
    return connected_components(graph, directed=False)


def mle_exists(n_models: int, first: np.ndarray, second: np.ndarray, score: np.ndarray, total: np.ndarray, n_components: int) -> bool:
    """True when the BT maximum-likelihood ratings are finite (Zermelo/Ford's condition):
    within each component, every model is reachable from every other along "scored
    against" edges (i → j when i won or tied against j at least once)."""
    forward = score > 0  # the first model scored against the second
    backward = total - score > 0
    src = np.concatenate([first[forward], second[backward]])
    dst = np.concatenate([second[forward], first[backward]])
    graph = csr_matrix((np.ones(len(src)), (src, dst)), shape=(n_models, n_models))
    n_strong, _ = connected_components(graph, directed=True, connection="strong")
    return n_strong == n_components


def gauge(labels: np.ndarray, scale: float) -> np.ndarray:
    """A positive-semidefinite term that pins each component's mean rating, added to the
    Hessian when there is no prior: BT likelihoods do not change when a component's
    ratings all shift together, so the bare Hessian is singular."""
    m = len(labels)
    out = np.zeros((m, m))
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        out[np.ix_(members, members)] += scale / len(members)
    return out


def neg_log_likelihood(theta: np.ndarray, data: PairData, score: np.ndarray, total: np.ndarray, prior: float) -> float:
    """−log L for one fit, including `prior` virtual ties per model against a 0-rated model."""
    d = theta[data.first] - theta[data.second]
    value = -(score * log_expit(d) + (total - score) * log_expit(-d)).sum()
    if prior:
        value -= prior * 0.5 * (log_expit(theta) + log_expit(-theta)).sum()
    return float(value)


def fit_one(data: PairData, score: np.ndarray, total: np.ndarray, labels: np.ndarray, prior: float, theta0: np.ndarray | None = None) -> np.ndarray:
    """Bradley–Terry ratings (logits) by damped Newton with a backtracking line search.

    With `prior` = 0 the result is the MLE with every component's mean at 0 (what FastChat's
    L-BFGS from zeros also converges to); with `prior` > 0 each model also gets that many
    virtual ties against a model rated 0. Converges to `STEP_TOL`."""
    m = data.n_models
    theta = np.zeros(m) if theta0 is None else theta0.astype(float).copy()
    scale = max(1.0, float(total.sum()) / max(m, 1))
    pin = gauge(labels, scale) if not prior else 0.0
    loss = neg_log_likelihood(theta, data, score, total, prior)
    for _ in range(_MAX_NEWTON):
        grad, prob = data.gradient(theta, score, total)
        hess = data.hessian(prob, total) + pin
        if prior:
            s = expit(theta)
            grad = grad + prior * (0.5 - s)
            hess[np.diag_indices(m)] += prior * s * (1.0 - s)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while True:
            candidate = theta + t * step
            new_loss = neg_log_likelihood(candidate, data, score, total, prior)
            if new_loss <= loss - 1e-4 * t * float(grad @ step) or t < 1e-8:
                break
            t *= 0.5
        theta, loss = candidate, new_loss
        if np.max(np.abs(t * step), initial=0.0) < STEP_TOL:
            break
    return theta


def fit_rounds(
    data: PairData,
    score: np.ndarray,
    total: np.ndarray,
    priors: np.ndarray,
    labels: np.ndarray,
    theta_hat: np.ndarray,
    chord_inverse: np.ndarray,
) -> np.ndarray:
    """Fit many rounds at once (score, total: float32 pairs × rounds; priors: per round).

    Starts every round at the full-data fit `theta_hat` and iterates the Newton–chord step
    θ ← θ + H₀⁻¹ g(θ) with the full data's Hessian H₀ (`chord_inverse`, gauge included):
    bootstrap rounds sit close to the full fit, so this converges in a few matrix products
    without a Hessian per round. Rounds that contract slowly (small data, a round that
    needs the prior) finish with per-round Newton steps, and any that still resist with
    the damped single fit. Returns models × rounds logits."""
    rounds = score.shape[1]
    theta = np.repeat(theta_hat[:, None], rounds, axis=1)
    has_prior = bool(priors.any())
    previous = np.full(rounds, np.inf)
    active = np.ones(rounds, dtype=bool)
    slow = np.zeros(rounds, dtype=bool)
    score = np.asarray(score, dtype=np.float32)
    total = np.asarray(total, dtype=np.float32)
    prob_hat = expit(theta_hat[data.first] - theta_hat[data.second]).astype(np.float32)[:, None]
    for iteration in range(_MAX_CHORD):
        if iteration == 0:  # at θ̂ the probabilities are the same for every round
            residual = total * prob_hat
            np.subtract(score, residual, out=residual)
            grad = (data.incidence32 @ residual).astype(np.float64)
        else:
            grad = data.batch_gradient(theta, score, total)
        if has_prior:
            grad += priors * (0.5 - expit(theta))
        step = chord_inverse @ grad
        size = np.max(np.abs(step), axis=0, initial=0.0)
        slow |= active & ~(size < 0.5 * previous) & np.isfinite(previous) | ~np.isfinite(size)
        move = active & ~slow
        theta[:, move] += step[:, move]
        previous = size
        active &= ~slow & (size >= ROUND_TOL)
        if not active.any():
            break
    rest = np.flatnonzero(slow | active)
    if rest.size:
        theta[:, rest] = _newton_rounds(data, score[:, rest], total[:, rest], priors[rest], labels, theta_hat)
    return theta


def _newton_rounds(data: PairData, score: np.ndarray, total: np.ndarray, priors: np.ndarray, labels: np.ndarray, theta_hat: np.ndarray) -> np.ndarray:
    m, rounds = data.n_models, score.shape[1]
    theta = np.repeat(theta_hat[:, None], rounds, axis=1)
    scale = max(1.0, float(total[:, 0].sum()) / max(m, 1)) if rounds else 1.0
    pin = gauge(labels, scale)
    active = np.ones(rounds, dtype=bool)
    for _ in range(30):
        idx = np.flatnonzero(active)
        if not idx.size:
            break
        grad, prob = data.gradient(theta[:, idx], score[:, idx], total[:, idx])
        hess = data.hessians(prob, total[:, idx])
        pr = priors[idx]
        s = expit(theta[:, idx])
        grad += pr * (0.5 - s)
        hess[:, np.arange(m), np.arange(m)] += (pr * s * (1.0 - s)).T
        hess[pr == 0] += pin
        step = np.linalg.solve(hess, grad.T[..., None])[..., 0].T
        # Cap the step: undamped Newton can overshoot far from the optimum.
        size = np.max(np.abs(step), axis=0, initial=0.0)
        step *= np.minimum(1.0, 2.0 / np.maximum(size, 1e-300))
        theta[:, idx] += step
        active[idx] = ~(size < ROUND_TOL)
    for r in np.flatnonzero(active):  # the stubborn few: the safe, line-searched fit
        theta[:, r] = fit_one(data, score[:, r], total[:, r], labels, float(priors[r]), theta_hat)
    return theta


def needs_prior(data: PairData, score: np.ndarray, total: np.ndarray, n_components: int, full_score: np.ndarray, full_total: np.ndarray) -> np.ndarray:
    """Per round (columns of score/total): True where that resample has no finite MLE.

    A resample keeps a subset of the full data's "scored against" edges, so only rounds
    that lost an edge can have lost strong connectivity; only those are checked."""
    fwd_full, bwd_full = full_score > 0, full_total - full_score > 0
    lost = (fwd_full[:, None] & ~(score > 0)) | (bwd_full[:, None] & ~(total - score > 0))
    out = np.zeros(score.shape[1], dtype=bool)
    for r in np.flatnonzero(lost.any(axis=0)):
        out[r] = not mle_exists(data.n_models, data.first, data.second, score[:, r], total[:, r], n_components)
    return out


def draw_multinomial(rng: np.random.Generator, cell_counts: np.ndarray, rounds: int) -> np.ndarray:
    """`rounds` exact Multinomial(n, cell_counts / n) draws (rounds × cells), n = sum of counts.
    (`MultinomialSampler` draws them cells × rounds and reuses its tables across calls.)"""
    return MultinomialSampler(cell_counts).draw(rng, rounds).T


class MultinomialSampler:
    """Exact Multinomial(n, counts / n) resamples of integer cell counts, n = their sum.

    numpy's multinomial costs ~80 ns per cell per round and its Poisson ~60; this costs
    ~15. Each round starts as independent Poisson(count · (1 − 2/√n)) draws, which, given
    their total T, are exactly Multinomial(T, p); a round with T > n (~2%) is redrawn,
    which conditions only on T; adding n − T further iid draws from p (a uniformly random
    item of the original n, looked up) makes the round exactly Multinomial(n, p). The
    Poisson draws are inverse-CDF lookups (`_PoissonTable`), exact up to float64 rounding
    of the CDF. Below n = 1000 numpy's multinomial is used directly.

    Read-only after construction: threads may share one sampler, each with its own `rng`.
    """

    def __init__(self, cell_counts: np.ndarray) -> None:
        self.counts = np.asarray(cell_counts, dtype=np.int64)
        if self.counts.ndim != 1 or (self.counts < 0).any():
            raise ValueError("cell counts must be a 1-D array of non-negative integers")
        self.n = int(self.counts.sum())
        self.p = self.counts / self.n if self.n else self.counts.astype(float)
        self.poisson: _PoissonTable | None = None
        if self.n >= _POISSON_MIN_N:
            self.poisson = _PoissonTable(self.counts * (1.0 - 2.0 / math.sqrt(self.n)))
            if self.n <= _LOOKUP_MAX_N:
                self.item_cell = np.repeat(np.arange(len(self.counts), dtype=np.int32), self.counts)
            else:
                self.cumulative = np.cumsum(self.counts)

    def draw(self, rng: np.random.Generator, rounds: int) -> np.ndarray:
        """`rounds` resamples as a (cells × rounds) int32 array: column r is round r."""
        k = len(self.counts)
        if self.n == 0 or rounds == 0:
            return np.zeros((k, rounds), dtype=np.int32)
        if self.poisson is None:
            return np.ascontiguousarray(rng.multinomial(self.n, self.p, size=rounds).T.astype(np.int32))
        x = self.poisson.draw(rng, rounds)
        deficit = self.n - x.sum(axis=0, dtype=np.int64)
        while (over := np.flatnonzero(deficit < 0)).size:
            x[:, over] = self.poisson.draw(rng, over.size)
            deficit[over] = self.n - x[:, over].sum(axis=0, dtype=np.int64)
        items = rng.integers(0, self.n, size=int(deficit.sum()))
        if self.n <= _LOOKUP_MAX_N:
            cells = self.item_cell[items].astype(np.int64)
        else:
            cells = np.searchsorted(self.cumulative, items, side="right")
        flat = cells * rounds + np.repeat(np.arange(rounds), deficit)
        x += np.bincount(flat, minlength=k * rounds).reshape(k, rounds)
        return x


class _PoissonTable:
    """Poisson draws with per-cell means by inverse CDF: X = #{x : F(x) ≤ u}, u ~ U[0, 1).

    Cells with equal means share one CDF row over a window of ±(12√λ + 20) around the mean
    (the mass outside is below 1e-30). u's bin among `bins` equal bins names the answer
    outright unless a CDF value falls inside that bin; those few draws (a few percent)
    finish with a vectorised binary search in the row. ~15 ns per draw against numpy's
    ~60 for its PTRS rejection sampler."""

    def __init__(self, means: np.ndarray) -> None:
        values, self.row = np.unique(means, return_inverse=True)
        self.row = self.row.astype(np.int64)
        start = np.maximum(0, np.floor(values - 12 * np.sqrt(values) - 20)).astype(np.int64)
        stop = np.ceil(values + 12 * np.sqrt(values) + 20).astype(np.int64)
        length = stop - start + 1
        self.offset = np.concatenate([[0], np.cumsum(length)[:-1]])
        support = np.concatenate([np.arange(a, b + 1) for a, b in zip(start, stop)])
        cdf = pdtr(support, np.repeat(values, length))  # the Poisson CDF (scipy.stats would add 0.6 s of import)
        cdf[self.offset + length - 1] = 1.0  # the window holds all but < 1e-30 of the mass
        self.cdf = cdf
        rows = len(values)
        self.bin_bits = int(min(12, max(6, math.log2(max(1, _TABLE_ENTRIES // rows)))))
        self.bins = 1 << self.bin_bits
        self.row_start = (np.arange(rows, dtype=np.uint32) * np.uint32(self.bins))[self.row]
        edges = np.arange(self.bins + 1) / self.bins
        # int16 halves the table, so more of it stays in cache for the random lookups
        small = int(stop.max()) < 30_000
        self.low = np.empty((rows, self.bins), dtype=np.int16 if small else np.int32)  # #{F ≤ bin start}, or −1 − that
        self.high = np.empty((rows, self.bins), dtype=np.int32)  # #{F < bin end}
        for r in range(rows):
            row_cdf = cdf[self.offset[r] : self.offset[r] + length[r]]
            at_start = np.searchsorted(row_cdf, edges[:-1], side="right")
            before_end = np.searchsorted(row_cdf, edges[1:], side="left")
            self.low[r] = np.where(at_start == before_end, at_start + start[r], -1 - at_start)
            self.high[r] = before_end
        self.start = start

    def draw(self, rng: np.random.Generator, rounds: int) -> np.ndarray:
        """(cells × rounds) int32 draws.

        u = (b + v) / 2³² for 32 random bits b and, only where the bin of b is ambiguous, a
        fresh uniform v: exactly uniform, and the top bits of b are its bin."""
        bits = rng.integers(0, 1 << 32, size=(len(self.row), rounds), dtype=np.uint32)
        where = bits >> np.uint32(32 - self.bin_bits)
        where += self.row_start[:, None]
        x = np.take(self.low.ravel(), where).astype(np.int32, copy=False)
        ambiguous = np.flatnonzero(x < 0)
        if ambiguous.size:
            cell = ambiguous // rounds
            lo = (-1 - x.ravel()[ambiguous]).astype(np.int64)
            hi = self.high.ravel()[where.ravel()[ambiguous]].astype(np.int64)
            base = self.offset[self.row[cell]]
            u = (bits.ravel()[ambiguous] + rng.random(ambiguous.size)) * 2.0**-32
            while (open_ := lo < hi).any():  # lo, hi bracket #{F ≤ u}
                mid = (lo + hi) // 2
                below = (self.cdf[base + np.minimum(mid, hi - 1)] <= u) & open_
                lo = np.where(below, mid + 1, lo)
                hi = np.where(below | ~open_, hi, mid)
            x.ravel()[ambiguous] = lo + self.start[self.row[cell]]
        return x
