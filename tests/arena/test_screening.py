"""Screening reviewers: a random voter, a side-biased voter and a contrarian are found among
honest simulated reviewers, and no honest reviewer is flagged."""

from __future__ import annotations

import numpy as np
import pytest

from arena.screening import ScreenVote, screen_reviewers

STRENGTH = {"m0": 0.0, "m1": 120.0, "m2": 240.0, "m3": 360.0, "m4": 480.0, "m5": 600.0}


def _simulate(seed: int, honest: int = 30, per_reviewer: int = 100):
    rng = np.random.default_rng(seed)
    names = list(STRENGTH)
    votes = []

    def battle():
        a, b = (names[i] for i in rng.choice(len(names), 2, replace=False))
        p = 1 / (1 + 10 ** ((STRENGTH[b] - STRENGTH[a]) / 400))
        chars = int(rng.integers(300, 1500))
        return a, b, p, chars

    def add(reviewer, choose):
        for _ in range(per_reviewer):
            a, b, p, chars = battle()
            winner = choose(a, b, p)
            read_s = chars / 50 * float(rng.uniform(1.2, 4.0))  # honest: read, then vote
            votes.append(ScreenVote(reviewer=reviewer, model_a=a, model_b=b, winner=winner,
                                    time_to_vote_s=read_s, answer_chars=chars))

    def honest_choice(a, b, p):
        if rng.random() < 0.1:
            return "tie"
        return "model_a" if rng.random() < p else "model_b"

    for k in range(honest):
        add(f"honest-{k}", honest_choice)
    add("random", lambda a, b, p: "model_a" if rng.random() < 0.5 else "model_b")
    add("always-a", lambda a, b, p: "model_a")
    add("contrarian", lambda a, b, p: "model_b" if p > 0.5 else "model_a")
    add("tie-all", lambda a, b, p: "tie (bothbad)" if rng.random() < 0.9 else honest_choice(a, b, p))
    for k in range(per_reviewer):  # a speed-clicker: honest choices, no time to read
        a, b, p, chars = battle()
        votes.append(ScreenVote(reviewer="speed", model_a=a, model_b=b, winner=honest_choice(a, b, p),
                                time_to_vote_s=float(rng.uniform(0.5, 2.0)), answer_chars=chars))
    return votes


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_planted_voters_are_found_and_no_honest_one(seed):
    flagged = {f.reviewer: {r.check for r in f.reasons} for f in screen_reviewers(_simulate(seed))}
    assert "improbable_votes" in flagged.get("random", set()), flagged
    assert "one_side" in flagged.get("always-a", set()), flagged
    assert "improbable_votes" in flagged.get("contrarian", set()), flagged
    assert "ties_everything" in flagged.get("tie-all", set()), flagged
    assert "too_fast" in flagged.get("speed", set()), flagged
    assert not [r for r in flagged if r.startswith("honest-")], flagged


def test_few_votes_are_not_judged_and_reasons_say_why():
    votes = _simulate(0)
    few = [v for v in votes if v.reviewer != "always-a"] + [v for v in votes if v.reviewer == "always-a"][:5]
    assert "always-a" not in {f.reviewer for f in screen_reviewers(few)}
    reason = next(r for f in screen_reviewers(votes) if f.reviewer == "always-a" for r in f.reasons if r.check == "one_side")
    assert reason.figure == 1.0 and reason.p_value < 0.01 and "side A in 100%" in reason.message
    assert screen_reviewers([]) == []
