"""What category tags cost a vote: the same votes counted with and without their battle's
tags (`language=…`, `length=…`, sometimes `task_type=…` and `hard`: each one more slice the
vote's Lua script counts into), in the same run, in alternating blocks so both see the
same machine load.

Votes go through `record_observations` (the import path: one Lua call per vote, pipelined),
so the figure is Redis's counting work, not HTTP. The embedded Redis runs without an AOF
to leave fsyncs out of it. Each vote carries a pool category and a source too (4 slices
before the tags), and a question id, so judge–human agreement is counted per slice as well.

Prints one JSON line: votes/s without tags (the baseline) and with them, their ratio, the
slices per vote, and the load average. Run: `python bench/categories.py [--votes 4000 --rounds 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TAG_SETS = [["language=zh", "length=long"], ["language=latin", "length=short", "task_type=coding"],
            ["task_type=writing", "language=zh", "length=medium", "hard"]]


def votes(n: int, tags: bool, seed: int) -> list[dict]:
    rng = random.Random(seed)
    models = [f"m{k}" for k in range(20)]
    out = []
    for _ in range(n):
        a, b = rng.sample(models, 2)
        vote = {"model_a": a, "model_b": b, "winner": rng.choice(["model_a", "model_b", "tie"]), "reviewer": f"r{rng.randrange(50)}",
                "question_id": f"q{rng.randrange(2000)}", "category": rng.choice(["math", "chat"]), "source": "pool"}
        if tags:
            vote["categories"] = rng.choice(TAG_SETS)
        out.append(vote)
    return out


async def run(url: str, n: int, rounds: int) -> dict:
    from service.store import Store

    store = Store.from_url(url, f"bench-{secrets.token_hex(4)}")
    elapsed = {False: 0.0, True: 0.0}
    for r in range(rounds):
        for tags in ((False, True) if r % 2 == 0 else (True, False)):
            batch = votes(n, tags, seed=r)
            started = time.perf_counter()
            await store.record_observations(batch, board="human")
            elapsed[tags] += time.perf_counter() - started
    await store.close()
    base, tagged = n * rounds / elapsed[False], n * rounds / elapsed[True]
    mean_tags = sum(len(t) for t in TAG_SETS) / len(TAG_SETS)
    return {"bench": "categories", "votes_per_s_without_tags": round(base), "votes_per_s_with_tags": round(tagged),
            "ratio_with_over_without": round(tagged / base, 3), "slices_per_vote": {"without": 4, "with": 4 + mean_tags},
            "votes": n * rounds, "load_avg": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--votes", type=int, default=4000, help="votes per block")
    parser.add_argument("--rounds", type=int, default=3, help="blocks of each kind, alternating")
    args = parser.parse_args()
    from _redis import bench_redis

    with bench_redis("categories", appendonly=False) as url:
        print(json.dumps(asyncio.run(run(url, args.votes, args.rounds))))


if __name__ == "__main__":
    main()
