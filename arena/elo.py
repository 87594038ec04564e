"""Online Elo: the provisional rating that moves with every vote, beside Bradley–Terry.

Same update as FastChat's `compute_elo` (K=4, scale 400, base 10, start 1000). It depends
on the order of the votes, which is why the leaderboard's rating is the BT fit and Elo is
shown next to it only as a running number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from arena.battles import Battle

#: FastChat's constants, the defaults below; the service's vote script updates its running
#: ratings with the same ones.
K, SCALE, BASE, INIT_RATING = 4.0, 400.0, 10.0, 1000.0


def replay(ratings: list[float], first: Sequence[int], second: Sequence[int], scores: Sequence[float], *,
           k: float = 4.0, scale: float = 400.0, base: float = 10.0) -> None:
    """Online Elo updates in order, in place: vote v between models `first[v]` and
    `second[v]` (indices into `ratings`) with `first`'s score `scores[v]` (1, 0 or 0.5).
    The one Elo loop: `elo_update`, `online_elo` and `arena.tally` all run it."""
    # base ** (x / scale) as exp(alpha·x), names bound locally: the loop is the Elo column's
    # whole cost on a big file (a quarter faster than the plain form, same numbers to 1e-12).
    alpha, exp = math.log(base) / scale, math.exp
    for i, j, s in zip(first, second, scores):
        ra = ratings[i]
        rb = ratings[j]
        delta = k * (s - 1.0 / (1.0 + exp(alpha * (rb - ra))))
        ratings[i] = ra + delta
        ratings[j] = rb - delta


def elo_update(rating_a: float, rating_b: float, score_a: float, *, k: float = 4.0, scale: float = 400.0, base: float = 10.0) -> tuple[float, float]:
    """One online Elo update: `score_a` is 1 (A won), 0 (B won) or 0.5 (tie); returns the
    new (rating_a, rating_b). The service calls this per vote to keep a provisional number."""
    ratings = [rating_a, rating_b]
    replay(ratings, (0,), (1,), (score_a,), k=k, scale=scale, base=base)
    return ratings[0], ratings[1]


def online_elo(battles: Iterable[Battle], *, k: float = 4.0, scale: float = 400.0, base: float = 10.0, init_rating: float = 1000.0) -> dict[str, float]:
    """Online Elo over battles in time order (by `tstamp` when every battle has one, else
    in the order given), as FastChat's `compute_elo`. Order-dependent by design: a
    provisional number beside BT, not a replacement for it."""
    battles = list(battles)
    if battles and all(b.tstamp is not None for b in battles):
        battles.sort(key=lambda b: b.tstamp)
    index: dict[str, int] = {}
    for b in battles:
        index.setdefault(b.model_a, len(index))
        index.setdefault(b.model_b, len(index))
    ratings = [init_rating] * len(index)
    replay(ratings, [index[b.model_a] for b in battles], [index[b.model_b] for b in battles],
           [b.score_a for b in battles], k=k, scale=scale, base=base)
    return {model: ratings[i] for model, i in index.items()}
