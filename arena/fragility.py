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
   searched (doubling up, then regula falsi on the refitted gaps) along the same greedy
   order until the smallest prefix that truly swaps the pair is found. `confirmed` says the final count was
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

from arena import _solver
from arena.counts import OUTCOME_SCORE, PairCounts

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
        self._arrays = a  # the counts' own pair order and names (`removals`)
        self.n = a.totals.astype(float)
        self.s = a.score_first.astype(float)
        self.available = np.stack([a.wins_first, a.wins_second, a.ties, a.bothbad], axis=1)
        self.data = _solver.PairData(len(self.theta), self.first, self.second)  # the fits' own gradient and Hessian
        _, self.p = self.data.gradient(self.theta, self.s, self.n)
        fisher = self.data.hessian(self.p, self.n)
        self.fisher_pinv = np.linalg.pinv(fisher, hermitian=True)
        import scipy.linalg

        # The fit's Fisher, factored once: refits reuse it (chord steps), since removing a
        # few votes barely changes it; they fall back to full Newton steps if that stalls.
        self.chord = scipy.linalg.cho_factor(fisher + self._ridge(fisher) * np.eye(len(fisher)))

    @staticmethod
    def _ridge(fisher: np.ndarray) -> float:
        """F is singular along each component's all-ones direction, which moves no rating
        difference, so a tiny ridge makes it solvable without changing them."""
        return 1e-9 * (np.trace(fisher) / len(fisher) + 1.0)

    def _solve(self, fisher: np.ndarray, gradient: np.ndarray) -> np.ndarray:
        """A Newton step."""
        import scipy.linalg

        return scipy.linalg.solve(fisher + self._ridge(fisher) * np.eye(len(fisher)), gradient, assume_a="pos")

    def classes(self, upper: str, lower: str, head: int | None = None) -> _Order:
        """Votes that narrow the gap, most first, as parallel arrays by (pair, outcome) class.
        With `head`, only the ~`head` most influential classes (and any tied with the last):
        exactly the start of the whole order, which is all a flip of a few hundred votes
        reads; `_Order.complete` says whether it is the whole."""
        contrast = np.zeros(len(self.theta))
        contrast[self.index[upper]], contrast[self.index[lower]] = 1.0, -1.0
        direction = self.fisher_pinv @ contrast
        lever = direction[self.first] - direction[self.second]
        delta = -lever[:, None] * (np.asarray(OUTCOME_SCORE)[None, :] - self.p[:, None])  # pairs x outcomes
        pair, outcome = np.nonzero((delta < 0) & (self.available > 0))
        d = delta[pair, outcome]
        available = int(self.available[pair, outcome].sum())
        complete = True
        if head is not None and len(d) > head:
            keep = d <= np.partition(d, head - 1)[head - 1]  # ties with the last kept: the stable order's start
            complete = bool(keep.all())
            pair, outcome, d = pair[keep], outcome[keep], d[keep]
        order = np.argsort(d, kind="stable")
        pair, outcome, d = pair[order], outcome[order], d[order]
        count = self.available[pair, outcome]
        return _Order(delta=d, count=count, pair=pair, outcome=outcome, cumulative=np.cumsum(count), available=available,
                      complete=complete)

    def taken(self, order: _Order, k: int) -> np.ndarray:
        """How many votes of each class the first `k` of `order` take."""
        before = order.cumulative - order.count
        return np.clip(k - before, 0, order.count)

    def removals(self, order: _Order, k: int) -> list[Removal]:
        taken = self.taken(order, k)
        a = self._arrays  # the pairs as the counts name them
        removals = []
        for c in np.nonzero(taken)[0]:
            pair = order.pair[c]
            removals.append(Removal(a.models[a.first[pair]], a.models[a.second[pair]], _OUTCOME_NAMES[int(order.outcome[c])], int(taken[c])))
        return removals

    def gap_after(self, order: _Order, k: int, upper: str, lower: str) -> float:
        """`upper`'s rating minus `lower`'s (logits) in the exact refit without the first `k`
        votes of `order`: below 0 when `lower` then rates above `upper`.

        Only the gap's sign decides anything, so the refit stops once the chord iteration's
        own contraction bounds what is left of every rating by a quarter of the gap (or at
        a step of 1e-9): near the flip a gap is ~1e-4 logits and the iteration contracts
        ~10x a step, so that takes ~3 steps instead of ~5."""
        if not self.exact_mle:
            from arena.ratings import bradley_terry

            fit = bradley_terry(_without(self.counts, self.removals(order, k)))
            ratings = dict(zip(fit.models, fit.ratings))
            return float(ratings[upper] - ratings[lower]) * math.log(fit.base) / fit.scale
        taken = self.taken(order, k)
        n = self.n - np.bincount(order.pair, taken, len(self.n))
        s = self.s - np.bincount(order.pair, taken * np.asarray(OUTCOME_SCORE)[order.outcome], len(self.s))
        import scipy.linalg

        theta = self.theta.copy()
        up, low = self.index[upper], self.index[lower]
        previous = math.inf
        for iteration in range(60):  # from the fit: chord steps, then Newton steps if they stall
            gradient, p = self.data.gradient(theta, s, n)
            if iteration < 30:
                step = scipy.linalg.cho_solve(self.chord, gradient)
            else:
                step = self._solve(self.data.hessian(p, n), gradient)
            step -= step.mean()  # the ridge's drift along all-ones is no rating change
            theta += np.clip(step, -2.0, 2.0)
            size = float(np.max(np.abs(step)))
            rate = size / previous  # 0 after the first step: no estimate yet
            if size < 1e-9 or (0 < rate < 0.5 and 4 * 2 * size * rate / (1 - rate) < abs(theta[up] - theta[low])):
                break
            previous = size
        return float(theta[up] - theta[low])


class _Order(msgspec.Struct):
    """Gap-narrowing vote classes, most influential first: δ per vote, votes, pair index,
    outcome, and the running total of votes; `available`: the votes of all such classes,
    `complete`: whether these are all of them (else the start of the order only)."""

    delta: np.ndarray
    count: np.ndarray
    pair: np.ndarray
    outcome: np.ndarray
    cumulative: np.ndarray
    available: int
    complete: bool = True


def _without(counts: PairCounts, removals: Sequence[Removal]) -> PairCounts:
    """`counts` less the removed votes (models kept, so indices stay comparable). Array work:
    the service's board refresher runs this for every refit of a board that needs the prior."""
    a = counts.arrays()
    table = np.stack([a.wins_first, a.wins_second, a.ties, a.bothbad], axis=1)
    index = {m: i for i, m in enumerate(a.models)}
    rows = {(i, j): r for r, (i, j) in enumerate(zip(a.first.tolist(), a.second.tolist()))}
    for r in removals:
        i, j, slot = index[r.model_a], index[r.model_b], _OUTCOME_NAMES.index(r.winner)
        if i > j:
            i, j, slot = j, i, (1, 0, 2, 3)[slot]
        table[rows[i, j], slot] -= r.count
    keep = table.sum(axis=1) > 0
    reduced = PairCounts(a.models)
    reduced._set_rows(a.first[keep], a.second[keep], np.maximum(table[keep], 0))
    return reduced


#: Vote classes ordered at first (of ~4 per pair of models): a flip takes the first few dozen.
_HEAD = 256


def _linear(order: _Order, gap: float) -> int | None:
    """The linear estimate: votes, most influential first, until their summed δ closes the
    gap (None: the classes in `order` do not)."""
    closed = np.cumsum(-order.delta * order.count)  # gap closed after each whole class
    c = int(np.searchsorted(closed, gap))  # the class in which the gap closes
    if c >= len(closed):
        return None
    before_gap = gap - (closed[c - 1] if c else 0.0)
    return int(order.cumulative[c] - order.count[c] + max(1, math.ceil(before_gap / -order.delta[c] - 1e-12)))


def _flip(board: _Board, upper: str, lower: str, max_refits: int) -> Flip:
    gap = board.theta[board.index[upper]] - board.theta[board.index[lower]]
    if gap < 0:
        return Flip(upper, lower, 0, 0, True)
    order = board.classes(upper, lower, head=_HEAD)
    if not len(order.count):
        return Flip(upper, lower, None, None, True)
    available = order.available
    linear = _linear(order, gap)
    if linear is None and not order.complete:  # the head does not close the gap: every class
        order = board.classes(upper, lower)
        linear = _linear(order, gap)
    refits = 0
    gaps = {0: float(gap)}

    def works(k: int) -> bool:
        nonlocal refits, order
        if not order.complete and k > order.cumulative[-1]:  # beyond the head: the whole order (its start is the same)
            order = board.classes(upper, lower)
        refits += 1
        gaps[k] = board.gap_after(order, k, upper, lower)
        return gaps[k] < 0

    high = min(linear or available, available)  # grows until it swaps (or every helpful vote is gone)
    low = 0  # the fit itself does not swap
    while not works(high):
        if high >= available or refits >= max_refits:
            return Flip(upper, lower, None, linear, high >= available)
        low, high = high, min(available, high * 2)
    # Regula falsi on the refits' gaps (Illinois variant): the gap falls almost linearly
    # with each vote taken, so the interpolated count is usually right at once and one more
    # refit, one vote short, confirms it; bisection would take log2(count) refits.
    g_low, g_high, kept = gaps[low], gaps[high], 0
    while high - low > 1 and refits < max_refits:
        k = min(high - 1, max(low + 1, math.ceil(low + (high - low) * g_low / (g_low - g_high) - 1e-9)))
        if works(k):
            high, g_high = k, gaps[k]
            g_low, kept = (g_low / 2 if kept == -1 else g_low), -1
        else:
            low, g_low = k, gaps[k]
            g_high, kept = (g_high / 2 if kept == 1 else g_high), 1
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
