"""Claim: our matchmaking spends votes where they matter, so a board needs fewer votes to
be right than with uniform pairing. Measured by replaying simulated reviewers through both.

Simulation (one run per seed, policy and board size):
- candidates with true ratings spaced `--gap` Elo points apart (the order is known);
- each vote: the policy draws a pair (ours: `arena.matchmaking.choose_pair` with the
  model states the service would give it — BT rating, 95% bootstrap CI, votes; uniform:
  every pair equally likely), a simulated reviewer answers from the true ratings: a tie
  with probability `--ties`, a random vote with probability `--noise`, else the better
  model wins with the BT probability;
- every `--check-every` votes the board is refitted (BT + `--rounds` bootstrap rounds, as
  the leaderboard does) and the policy sees the new states; two milestones are recorded:
  `top`: the top model's CI no longer overlaps the second's (and the order is the true
  one); `order`: every adjacent pair is in its true order in at least 95% of the bootstrap
  samples; each counted once it holds at three checks in a row, dated at the first.

Prints one JSON line: per board size, the median votes each policy needed for each
milestone over the seeds (runs that did not get there within `--budget` count as the
budget), `votes_saved_ratio` = uniform / ours per milestone (goal ≥ 1.5 with 8 and 30
candidates) with `ratio_ci95`, a bootstrap interval over seeds (a seed's two runs resampled
together), and `leader_share`, the share of battles holding the board's current leader.
Our policy sees what the service gives it: the states and battles per pair of the last
refit. Run: `OMP_NUM_THREADS=1 python bench/matchmaking.py [--seeds 5] [--first-seed 0]
[--workers 2]`; `--top-weight` and `--exploration` set our rule's parameters, `--policies
ours` (or `uniform`) runs one side only (uniform's runs do not depend on our rule: same
seed, same runs). The README's 30-model figures use `--sizes 30 --gaps 60 --budget 80000
--check-every 250`.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from arena.counts import PairCounts  # noqa: E402
from arena.matchmaking import ModelState, choose_pair  # noqa: E402
from arena.ratings import leaderboard  # noqa: E402


def _true_outcome(rng: random.Random, ra: float, rb: float, ties: float, noise: float) -> str:
    u = rng.random()
    if u < ties:
        return "tie"
    if rng.random() < noise:
        return rng.choice(("model_a", "model_b"))
    p = 1.0 / (1.0 + 10 ** ((rb - ra) / 400.0))
    return "model_a" if rng.random() < p else "model_b"


def _milestones(counts: PairCounts, truth: list[str], rounds: int, seed: int) -> tuple[list[ModelState], bool, bool]:
    """The states matchmaking sees (the board's rows), and whether each milestone is reached now."""
    from arena.ratings import _Setup  # the leaderboard's own fit and bootstrap

    board = leaderboard(counts, bootstrap=rounds, seed=seed, fragility=False)
    rows = {r.model: r for r in board.rows}
    states = [ModelState(m, rows[m].rating, rows[m].ci_low, rows[m].ci_high, rows[m].votes) if m in rows
              else ModelState(m) for m in truth]
    if len(rows) < len(truth):
        return states, False, False
    first, second = rows[truth[0]], rows[truth[1]]
    top = first.ci_low > second.ci_high
    setup = _Setup.build(counts, None, 1.0)
    theta = setup.fit_point()
    samples, _ = setup.bootstrap(theta, rounds, seed, 1)
    index = {m: i for i, m in enumerate(setup.models)}
    order = all(float(np.mean(samples[index[a]] > samples[index[b]])) >= 0.95 for a, b in zip(truth, truth[1:]))  # models x rounds
    return states, top, order


def run(policy: str, n_models: int, gap: float, seed: int, args) -> dict[str, int]:
    rng = random.Random(f"{policy}:{n_models}:{seed}")
    sim = random.Random(f"reviewers:{n_models}:{seed}")  # the same reviewers for both policies
    truth = [f"m{k:02d}" for k in range(n_models)]  # best first
    true_rating = {m: 1000.0 + gap * (n_models - 1 - k) for k, m in enumerate(truth)}
    counts = PairCounts(truth)
    states = [ModelState(m) for m in truth]
    battles: dict[tuple[str, str], int] = {}  # per pair, as of the last refit (what the service's board holds)
    leader_games = led = 0  # battles holding the board's current leader, battles with a leader
    found: dict[str, int] = {}
    streak = {"top": 0, "order": 0}
    pairs = [(a, b) for i, a in enumerate(truth) for b in truth[i + 1:]]
    for vote in range(1, args.budget + 1):
        if policy == "ours":
            matchup = choose_pair(states, rng, pair_battles=battles, top_weight=args.top_weight,
                                  exploration=args.exploration)
            a, b = matchup.model_a, matchup.model_b
        else:
            a, b = rng.choice(pairs)
            if rng.random() < 0.5:
                a, b = b, a
        leader = max(states, key=lambda s: -math.inf if s.rating is None else s.rating)
        if leader.rating is not None:
            led += 1
            leader_games += leader.name in (a, b)
        counts.add(a, b, _true_outcome(sim, true_rating[a], true_rating[b], args.ties, args.noise))
        if vote % args.check_every == 0:
            states, top, order = _milestones(counts, truth, args.rounds, seed)
            battles = {(p.model_a, p.model_b): p.battles for p in counts.pairs()}
            # A milestone counts once it holds at three checks in a row (a thin board's
            # bootstrap can look decided by chance); it is dated at the first of them.
            for name, holds in (("top", top), ("order", order)):
                streak[name] = streak[name] + 1 if holds else 0
                if streak[name] == 3 and name not in found:
                    found[name] = vote - 2 * args.check_every
            if len(found) == 2:
                break
    return {**{k: found.get(k, args.budget) for k in ("top", "order")}, "leader_share": leader_games / max(led, 1)}


def _task(job):
    policy, size, gap, seed, args = job
    return run(policy, size, gap, seed, args)


def _ratio_ci(uniform: list[int], ours: list[int], seed: int = 0, rounds: int = 2000) -> list[float]:
    """95% bootstrap interval of median(uniform) / median(ours), resampling seeds (a seed's
    two runs share their reviewers, so they are resampled together)."""
    rng = np.random.default_rng(seed)
    u, o = np.asarray(uniform, float), np.asarray(ours, float)
    idx = rng.integers(0, len(u), size=(rounds, len(u)))
    ratios = np.median(u[idx], axis=1) / np.median(o[idx], axis=1)
    return [round(float(x), 2) for x in np.percentile(ratios, [2.5, 97.5])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8,30")
    parser.add_argument("--gaps", default="60,40", help="Elo points between adjacent true ratings, per size")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--ties", type=float, default=0.1)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--check-every", type=int, default=100)
    parser.add_argument("--budget", type=int, default=30000)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run: first-seed .. first-seed + seeds - 1")
    parser.add_argument("--workers", type=int, default=1, help="processes running seeds in parallel")
    parser.add_argument("--top-weight", type=float, default=None,
                        help="our rule's weight of the race for first place (default: the service's)")
    parser.add_argument("--exploration", type=float, default=None, help="our rule's uniform share (default: the service's)")
    parser.add_argument("--policies", default="ours,uniform", help="which policies to run (a comma-separated subset)")
    args = parser.parse_args()
    from arena.matchmaking import EXPLORATION, TOP_WEIGHT

    args.exploration = EXPLORATION if args.exploration is None else args.exploration
    args.top_weight = TOP_WEIGHT if args.top_weight is None else args.top_weight
    policies = [p for p in ("ours", "uniform") if p in args.policies.split(",")]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    result: dict[str, object] = {"bench": "matchmaking", "top_weight": args.top_weight, "exploration": args.exploration, "ties": args.ties, "noise": args.noise,
                                 "seeds": [seeds.start, seeds.stop - 1], "bootstrap_rounds": args.rounds,
                                 "check_every": args.check_every, "budget": args.budget}
    sizes = [(int(s), float(g)) for s, g in zip(args.sizes.split(","), args.gaps.split(","))]
    jobs = [(p, size, gap, seed, args) for size, gap in sizes for p in policies for seed in seeds]
    if args.workers > 1:
        with multiprocessing.Pool(args.workers) as pool:
            done = pool.map(_task, jobs, chunksize=1)
    else:
        done = [_task(job) for job in jobs]
    outcome = {(job[0], job[1], job[3]): got for job, got in zip(jobs, done)}
    for size, gap in sizes:
        votes = {p: [outcome[p, size, seed] for seed in seeds] for p in policies}
        entry: dict[str, object] = {"gap_elo": gap}
        entry["leader_share"] = {p: round(float(np.mean([v["leader_share"] for v in runs])), 3) for p, runs in votes.items()}
        for milestone in ("top", "order"):
            medians = {p: float(np.median([v[milestone] for v in runs])) for p, runs in votes.items()}
            entry[milestone] = {**medians, **{f"{p}_runs": [v[milestone] for v in runs] for p, runs in votes.items()}}
            if len(medians) == 2:
                entry[milestone]["votes_saved_ratio"] = round(medians["uniform"] / medians["ours"], 2)
                entry[milestone]["ratio_ci95"] = _ratio_ci(entry[milestone]["uniform_runs"], entry[milestone]["ours_runs"])
        if len(votes) == 2:
            entry["goal_1_5x"] = all(entry[m]["votes_saved_ratio"] >= 1.5 for m in ("top", "order"))  # type: ignore[index]
        result[f"models_{size}"] = entry
    print(json.dumps(result))


if __name__ == "__main__":
    main()
