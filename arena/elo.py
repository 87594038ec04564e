"""Online Elo: the provisional rating that moves with every vote, beside Bradley–Terry.

Same update as FastChat's `compute_elo` (K=4, scale 400, base 10, start 1000). It depends
on the order of the votes, which is why the leaderboard's rating is the BT fit and Elo is
shown next to it only as a running number.
"""

from __future__ import annotations

from collections.abc import Iterable

from arena.battles import Battle


def elo_update(rating_a: float, rating_b: float, score_a: float, *, k: float = 4.0, scale: float = 400.0, base: float = 10.0) -> tuple[float, float]:
    """One online Elo update: `score_a` is 1 (A won), 0 (B won) or 0.5 (tie); returns the
    new (rating_a, rating_b). The service calls this per vote to keep a provisional number."""
    expected_a = 1.0 / (1.0 + base ** ((rating_b - rating_a) / scale))
    delta = k * (score_a - expected_a)
    return rating_a + delta, rating_b - delta


def online_elo(battles: Iterable[Battle], *, k: float = 4.0, scale: float = 400.0, base: float = 10.0, init_rating: float = 1000.0) -> dict[str, float]:
    """Online Elo over battles in time order (by `tstamp` when every battle has one, else
    in the order given), as FastChat's `compute_elo`. Order-dependent by design: a
    provisional number beside BT, not a replacement for it."""
    battles = list(battles)
    if battles and all(b.tstamp is not None for b in battles):
        battles.sort(key=lambda b: b.tstamp)
    ratings: dict[str, float] = {}
    for b in battles:
        ra, rb = ratings.get(b.model_a, init_rating), ratings.get(b.model_b, init_rating)
        ratings[b.model_a], ratings[b.model_b] = elo_update(ra, rb, b.score_a, k=k, scale=scale, base=base)
    return ratings
