"""Screening reviewers, as the public arena screens its voters: whose votes does the crowd's
board find improbable, who always picks one side, who votes faster than anyone can read,
who calls everything a tie?

`screen_reviewers` takes the human votes and returns the reviewers it flags, each with
every reason that holds, its figure, the crowd's figure and a p-value:

- **improbable votes**: the reviewer's mean log-likelihood per decisive vote under a
  Bradley–Terry board fitted on *everyone else's* votes (leave-one-out, so a prolific bad
  voter cannot pull the board towards themselves), against a parametric bootstrap of the
  same battles voted by the board's own probabilities (a random or contrarian voter sits
  far below);
- **one side**: how often the decisive vote is "A", binomial test against ½ (sides are
  shuffled, so an honest reviewer picks A about half the time);
- **too fast**: the share of votes cast sooner than the answers could be read
  (`reading_chars_per_s`), binomial test against the crowd's share;
- **ties everything**: the share of tie / both-bad votes, binomial test against the
  crowd's rate.

Each check's p-values are Holm-corrected across the reviewers judged, and a reviewer needs
`min_votes` votes to be judged at all: with few votes nobody can tell.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import numpy as np
from scipy.stats import binomtest, norm

from arena.counts import PairCounts
from arena.ratings import bradley_terry

#: How fast a person reads an answer to judge it, characters per second (a fast skim).
READING_CHARS_PER_S = 50.0


class ScreenVote(msgspec.Struct, frozen=True, kw_only=True):
    """One human vote, as the screening needs it."""

    reviewer: str
    model_a: str
    model_b: str
    winner: str  # model_a, model_b, tie, tie (bothbad)
    time_to_vote_s: float | None = None
    answer_chars: int | None = None  # both answers together


class Reason(msgspec.Struct, frozen=True, kw_only=True):
    """Why a reviewer is flagged: the check, the reviewer's figure, the crowd's, the
    Holm-corrected p-value, and a sentence for a person."""

    check: str  # improbable_votes, one_side, too_fast, ties_everything
    figure: float
    crowd: float
    p_value: float
    message: str


class FlaggedReviewer(msgspec.Struct, frozen=True, kw_only=True):
    reviewer: str
    votes: int
    reasons: list[Reason]


def _holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values (monotone, capped at 1)."""
    order = sorted(p_values, key=p_values.get)
    m, running, out = len(order), 0.0, {}
    for k, name in enumerate(order):
        running = max(running, min(1.0, (m - k) * p_values[name]))
        out[name] = running
    return out


def _loglik_p_value(p_first: np.ndarray, first_won: np.ndarray, rng: np.random.Generator, rounds: int) -> tuple[float, float]:
    """(mean log-likelihood of the observed decisive votes, one-sided p-value that votes drawn
    from the board's own probabilities score this low or lower).

    The null distribution is a parametric bootstrap: the same battles voted `rounds` times
    by the board's probabilities. Its tail is read from a normal fit to those rounds (a
    mean of many votes), not by counting rounds, so a p-value far below 1/`rounds` is still
    resolved — which Holm's correction over many reviewers needs."""
    p = np.clip(p_first, 1e-6, 1 - 1e-6)
    observed = float(np.where(first_won, np.log(p), np.log1p(-p)).mean())
    simulated = rng.random((rounds, len(p))) < p
    scores = np.where(simulated, np.log(p), np.log1p(-p)).mean(axis=1)
    spread = float(scores.std())
    if spread == 0.0:
        return observed, 1.0 if observed >= float(scores.mean()) else 0.0
    return observed, float(norm.cdf((observed - float(scores.mean())) / spread))


def screen_reviewers(votes: Sequence[ScreenVote], *, min_votes: int = 20, alpha: float = 0.01,
                     reading_chars_per_s: float = READING_CHARS_PER_S, rounds: int = 2000,
                     seed: int = 0) -> list[FlaggedReviewer]:
    """The reviewers whose votes look unlike honest ones (see the module doc), most
    reasons first. A reviewer with fewer than `min_votes` votes is not judged."""
    if not votes:
        return []
    rng = np.random.default_rng(seed)
    by_reviewer: dict[str, list[ScreenVote]] = {}
    for v in votes:
        by_reviewer.setdefault(v.reviewer, []).append(v)
    judged = {r: vs for r, vs in by_reviewer.items() if len(vs) >= min_votes}
    tie_rate = float(np.mean([v.winner not in ("model_a", "model_b") for v in votes]))
    timed = [v for v in votes if v.time_to_vote_s is not None and v.answer_chars]
    fast_rate = float(np.mean([_too_fast(v, reading_chars_per_s) for v in timed])) if timed else 0.0

    raw: dict[str, dict[str, tuple[float, float, float]]] = {check: {} for check in
                                                                ("improbable_votes", "one_side", "too_fast", "ties_everything")}
    crowd_ll: list[float] = []
    for reviewer, own in judged.items():
        decisive = [v for v in own if v.winner in ("model_a", "model_b")]
        others = PairCounts()
        for v in votes:
            if v.reviewer != reviewer:
                others.add(v.model_a, v.model_b, v.winner)
        board = bradley_terry(others)
        known = [v for v in decisive if v.model_a in board.models and v.model_b in board.models]
        if len(known) >= min_votes // 2:
            p_first = np.array([board.win_probability(v.model_a, v.model_b) for v in known])
            first_won = np.array([v.winner == "model_a" for v in known])
            observed, p = _loglik_p_value(p_first, first_won, rng, rounds)
            expected = float(np.mean(p_first * np.log(np.clip(p_first, 1e-6, 1)) +
                                     (1 - p_first) * np.log(np.clip(1 - p_first, 1e-6, 1))))
            raw["improbable_votes"][reviewer] = (observed, expected, p)
            crowd_ll.append(observed)
        if decisive:
            k = sum(v.winner == "model_a" for v in decisive)
            raw["one_side"][reviewer] = (k / len(decisive), 0.5, binomtest(k, len(decisive), 0.5).pvalue)
        own_timed = [v for v in own if v.time_to_vote_s is not None and v.answer_chars]
        if own_timed and fast_rate < 1.0:
            k = sum(_too_fast(v, reading_chars_per_s) for v in own_timed)
            raw["too_fast"][reviewer] = (k / len(own_timed), fast_rate,
                                         binomtest(k, len(own_timed), max(fast_rate, 0.01), alternative="greater").pvalue)
        k = sum(v.winner not in ("model_a", "model_b") for v in own)
        if tie_rate < 1.0:
            raw["ties_everything"][reviewer] = (k / len(own), tie_rate,
                                                binomtest(k, len(own), max(tie_rate, 0.01), alternative="greater").pvalue)

    reasons: dict[str, list[Reason]] = {}
    for check, results in raw.items():
        adjusted = _holm({r: res[2] for r, res in results.items()})
        for reviewer, (figure, crowd, _) in results.items():
            if adjusted[reviewer] >= alpha:
                continue
            reasons.setdefault(reviewer, []).append(Reason(
                check=check, figure=round(figure, 4), crowd=round(crowd, 4), p_value=float(adjusted[reviewer]),
                message=_message(check, figure, crowd, reading_chars_per_s)))
    flagged = [FlaggedReviewer(reviewer=r, votes=len(by_reviewer[r]), reasons=rs) for r, rs in reasons.items()]
    return sorted(flagged, key=lambda f: (-len(f.reasons), min(x.p_value for x in f.reasons), f.reviewer))


def _too_fast(v: ScreenVote, chars_per_s: float) -> bool:
    return float(v.time_to_vote_s or 0.0) < float(v.answer_chars or 0) / chars_per_s


def _message(check: str, figure: float, crowd: float, chars_per_s: float) -> str:
    if check == "improbable_votes":
        return (f"votes improbable under the crowd's board: {figure:.3f} log-likelihood per vote, "
                f"{crowd:.3f} expected from an honest reviewer of the same battles")
    if check == "one_side":
        return f"picks side A in {figure:.0%} of decisive votes (sides are shuffled: about 50% expected)"
    if check == "too_fast":
        return (f"{figure:.0%} of votes cast faster than the answers can be read at {chars_per_s:g} characters/s "
                f"(crowd: {crowd:.0%})")
    return f"{figure:.0%} of votes are a tie or both-bad (crowd: {crowd:.0%})"
