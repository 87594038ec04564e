"""How fragile is each rank: the fewest votes whose removal swaps two adjacent models.

Dropping 2 of 57,477 votes flipped the public arena's #1 (Huang et al., arXiv 2508.11847,
"AMIP"). This module asks the same question of our boards, for every adjacent pair:

1. **Influence.** Removing one vote `v` between models i and j moves the Bradley–Terry
   logits by about `-F⁺ g_v` (one Newton step from the fit), where `F` is the Fisher
   information of the fit, `Σ n_ij p_ij (1-p_ij) (e_i-e_j)(e_i-e_j)ᵀ`, and
   `g_v = (y_v - p_ij)(e_i - e_j)` the vote's score (`y` = 1, ½ for a tie, 0). So the gap
   between the upper model A and the lower B changes by
   `δ_v = -(e_A-e_B)ᵀ F⁺ (e_i-e_j) (y_v - p_ij)`; votes of one pair and outcome share it.
2. **Greedy.** Votes are taken most-negative δ first until the approximate gap change
   reaches the gap: that count is the linear estimate.
3. **Exact refit.** The counts without those votes are refitted; the count is then
   searched (doubling up, bisecting down) along the same greedy order until the smallest
   prefix that truly swaps the pair is found. `confirmed` says the final count was
   checked by a refit; `votes=None` means no removal of votes swaps them (e.g. B never
   beat anyone A lost to).

Ties of both kinds count half, as in the fit. The result names the removed votes by pair
and outcome (`removals`), which is what `arena ratings explain A B` lists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec
import numpy as np

from arena.counts import PairCounts

_OUTCOME_NAMES = ("model_a", "model_b", "tie", "tie (bothbad)")


class Removal(msgspec.Struct, frozen=True):
    """`count` votes between `model_a` and `model_b` with FastChat winner `winner`."""

    model_a: str
    model_b: str
    winner: str
    count: int


class Flip(msgspec.Struct, frozen=True):
    """The fewest votes to remove so that `lower` rates above `upper` (None: impossible)."""

    upper: str
    lower: str
    votes: int | None
    linear_estimate: int | None
    confirmed: bool
    removals: list[Removal] = []


class _Board:
    """The fit and its Fisher information, and exact refits warm-started from the fit."""

    def __init__(self, counts: PairCounts) -> None:
        from arena.ratings import bradley_terry

        fit = bradley_terry(counts)
        self.counts, self.models = counts, fit.models
        self.index = {m: i for i, m in enumerate(fit.models)}
        self.theta = fit.ratings * math.log(fit.base) / fit.scale
        self.exact_mle = fit.prior_ties == 0  # else refits go through bradley_terry (it adds the prior)
        a = counts.arrays()
        order = [self.index[m] for m in a.models]  # counts' model order -> the fit's
        self.first, self.second = np.array(order)[a.first], np.array(order)[a.second]
        self.names = [(a.models[i], a.models[j]) for i, j in zip(a.first, a.second)]
        self.n = a.totals.astype(float)
        self.s = a.score_first.astype(float)
        self.available = np.stack([a.wins_first, a.wins_second, a.ties, a.bothbad], axis=1)
        self.fisher_pinv = np.linalg.pinv(self._fisher(self.theta, self.n), hermitian=True)

    def _p(self, theta: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(theta[self.first] - theta[self.second])))

    def _fisher(self, theta: np.ndarray, n: np.ndarray) -> np.ndarray:
        p = self._p(theta)
        w = n * p * (1.0 - p)
        m = len(theta)
        off = np.bincount(self.first * m + self.second, w, m * m).reshape(m, m)
        fisher = -(off + off.T)
        fisher[np.diag_indices(m)] = np.bincount(self.first, w, m) + np.bincount(self.second, w, m)
        return fisher

    def _solve(self, fisher: np.ndarray, gradient: np.ndarray) -> np.ndarray:
        """A Newton step: F is singular along each component's all-ones direction, which
        moves no rating difference, so a tiny ridge makes it solvable without changing them."""
        import scipy.linalg

        ridge = 1e-9 * (np.trace(fisher) / len(fisher) + 1.0)
        return scipy.linalg.solve(fisher + ridge * np.eye(len(fisher)), gradient, assume_a="pos")

    def classes(self, upper: str, lower: str) -> list[tuple[float, int, int, int]]:
        """Votes that narrow the gap, most first: (δ per vote, votes, pair, outcome)."""
        contrast = np.zeros(len(self.theta))
        contrast[self.index[upper]], contrast[self.index[lower]] = 1.0, -1.0
        direction = self.fisher_pinv @ contrast
        lever = direction[self.first] - direction[self.second]
        p = self._p(self.theta)
        out = []
        for outcome, y in enumerate(_Y):
            delta = -lever * (y - p)
            for k in np.nonzero((delta < 0) & (self.available[:, outcome] > 0))[0]:
                out.append((float(delta[k]), int(self.available[k, outcome]), int(k), outcome))
        return sorted(out)

    def removals(self, order: list[tuple[float, int, int, int]], k: int) -> list[Removal]:
        taken, left = [], k
        for _, available, pair, outcome in order:
            if left <= 0:
                break
            n = min(available, left)
            a, b = self.names[pair]
            taken.append(Removal(a, b, _OUTCOME_NAMES[outcome], n))
            left -= n
        return taken

    def swapped(self, order: list[tuple[float, int, int, int]], k: int, upper: str, lower: str) -> bool:
        """Whether the exact refit without the first `k` votes of `order` rates `lower` above `upper`."""
        if not self.exact_mle:
            from arena.ratings import bradley_terry

            fit = bradley_terry(_without(self.counts, self.removals(order, k)))
            ratings = dict(zip(fit.models, fit.ratings))
            return ratings[lower] > ratings[upper]
        n, s, left = self.n.copy(), self.s.copy(), k
        for _, available, pair, outcome in order:
            if left <= 0:
                break
            r = min(available, left)
            n[pair] -= r
            s[pair] -= r * _Y[outcome]
            left -= r
        theta = self.theta.copy()
        for _ in range(25):  # Newton from the fit: a few steps reach the refit's optimum
            residual = s - n * self._p(theta)
            gradient = np.bincount(self.first, residual, len(theta)) - np.bincount(self.second, residual, len(theta))
            step = self._solve(self._fisher(theta, n), gradient)
            step -= step.mean()  # the ridge's drift along all-ones is no rating change
            theta += np.clip(step, -2.0, 2.0)
            if np.max(np.abs(step)) < 1e-9:
                break
        return bool(theta[self.index[lower]] > theta[self.index[upper]])


#: The first model's score per outcome: a win, a loss, a tie, a both-bad tie.
_Y = (1.0, 0.0, 0.5, 0.5)


def _without(counts: PairCounts, removals: Sequence[Removal]) -> PairCounts:
    """`counts` less the removed votes (models kept, so indices stay comparable)."""
    left: dict[tuple[str, str, str], int] = {}
    for pair in counts.pairs():
        for winner, n in zip(_OUTCOME_NAMES, (pair.wins_a, pair.wins_b, pair.ties, pair.bothbad)):
            left[pair.model_a, pair.model_b, winner] = n
    for r in removals:
        left[r.model_a, r.model_b, r.winner] -= r.count
    reduced = PairCounts(counts.models)
    for (a, b, winner), n in left.items():
        if n > 0:
            reduced.add(a, b, winner, n)
    return reduced


def _flip(board: _Board, upper: str, lower: str, max_refits: int) -> Flip:
    gap = board.theta[board.index[upper]] - board.theta[board.index[lower]]
    if gap < 0:
        return Flip(upper, lower, 0, 0, True)
    order = board.classes(upper, lower)
    available = sum(c[1] for c in order)
    if not order:
        return Flip(upper, lower, None, None, True)
    linear, total, before = None, 0.0, 0  # total: the approximate gap change of the votes taken
    for delta, n, _, _ in order:
        need = math.ceil((gap + total) / -delta - 1e-12)
        if need <= n:
            linear = before + max(need, 1)
            break
        total += delta * n
        before += n
    refits = 0

    def works(k: int) -> bool:
        nonlocal refits
        refits += 1
        return board.swapped(order, k, upper, lower)

    high = min(linear or available, available)  # grows until it swaps (or every helpful vote is gone)
    while not works(high):
        if high >= available or refits >= max_refits:
            return Flip(upper, lower, None, linear, high >= available)
        high = min(available, high * 2)
    low = 0  # the fit itself does not swap; the linear step usually overshoots by a little
    if high > 8 and not works(probe := (3 * high) // 4):
        low = probe
    elif high > 8:
        high = probe
    while high - low > 1 and refits < max_refits:
        mid = (low + high) // 2
        if works(mid):
            high = mid
        else:
            low = mid
    return Flip(upper, lower, high, linear, high - low <= 1, board.removals(order, high))


def flip(counts: PairCounts, upper: str, lower: str, *, max_refits: int = 24) -> Flip:
    """The fewest votes (along the influence order) to remove from `counts` so that `lower`
    rates above `upper`."""
    return _flip(_Board(counts), upper, lower, max_refits)


def adjacent_flips(counts: PairCounts, order: Sequence[str], *, max_refits: int = 24) -> dict[str, Flip]:
    """`flip` for each model and the one ranked just below it (`order`: best first, one
    comparison-graph component). Keyed by the upper model; the last one has none."""
    if len(order) < 2:
        return {}
    board = _Board(counts)
    return {upper: _flip(board, upper, lower, max_refits) for upper, lower in zip(order, order[1:])}
