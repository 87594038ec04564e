"""What the category view costs in board fits: a cold `/leaderboard` (a fresh process's
board cache, a refresher running: the overall human and judge boards; the category
columns say "computing"), the refresher's round that fits those columns, and its round
after N new votes, counted in fits (`BoardCache.fits`) and timed, with one overall
board's fit as the same-run baseline.

30 models, votes with a pool category and 2-4 tags each (14 categories in all, so the
table is full at `MAX_COLUMNS`), counted through `record_observations`; the page goes
through the Litestar app in-process (`litestar.testing.AsyncTestClient`), so the figure is
the user's path. Prints one JSON line. Run: `python bench/category_fits.py [--votes 20000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TAG_SETS = [["language=zh", "length=long"], ["language=latin", "length=short", "task_type=coding"],
            ["task_type=writing", "language=zh", "length=medium", "hard"], ["language=ja", "length=short"],
            ["language=ko", "length=medium", "task_type=math"]]
POOL = ["chat", "math", "code", "stories"]


def votes(n: int, models: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    names = [f"m{k:02d}" for k in range(models)]
    out = []
    for _ in range(n):
        a, b = rng.sample(names, 2)
        out.append({"model_a": a, "model_b": b, "winner": rng.choice(["model_a", "model_b", "tie"]),
                    "reviewer": f"r{rng.randrange(50)}", "question_id": f"q{rng.randrange(2000)}",
                    "category": rng.choice(POOL), "source": "pool", "categories": rng.choice(TAG_SETS)})
    return out


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(url: str, n: int, models: int, new_votes: int) -> dict:
    from litestar.testing import AsyncTestClient

    from service.app import create_app
    from service.board_cache import _caches, board_cache
    from service.config import load_settings
    from service.leaderboards import fit_board
    from service.store import Store

    prefix = f"bench-{secrets.token_hex(4)}"
    os.environ.update({"REDIS_URL": url, "ARENA_KEY_PREFIX": prefix, "ARENA_BOARD_REFRESH_S": "3600",
                       "ARENA_CALIBRATION_REFRESH_S": "0", "ARENA_DATA_DIR": tempfile.mkdtemp(prefix="bench-fits-")})
    store = Store.from_url(url, prefix)
    await store.record_observations(votes(n, models, seed=0), board="human")
    await store.record_observations(votes(n // 10, models, seed=1), board="judge")
    settings = load_settings()

    t0, c0 = time.perf_counter(), cpu()
    await fit_board(store, "human", bootstrap=settings.board_bootstrap)
    one_fit = {"wall_s": time.perf_counter() - t0, "cpu_s": cpu() - c0}

    app = create_app(settings, url)
    async with AsyncTestClient(app) as client:
        app_store = app.state.store
        t0, c0 = time.perf_counter(), cpu()
        page = await client.get("/leaderboard")
        cold = {"wall_s": time.perf_counter() - t0, "cpu_s": cpu() - c0}
        assert page.status_code == 200, page.text[:300]
        cache = board_cache(app_store)
        cold_fits = cache.fits
        categories = len((await store.aggregate_summary()).categories)


    # The refresher's rounds (a cache like the app's, on this loop's store): the one that
    # fits the columns the cold page asked for, then one after `new_votes` votes.
    from service.board_cache import BoardCache
    from service.category_boards import category_boards

    mine = BoardCache(bootstrap=settings.board_bootstrap)
    mine.refreshing = True  # as BoardCache.run sets it
    _caches[store] = mine
    await category_boards(store, "human")
    before = mine.fits
    t0, c0 = time.perf_counter(), cpu()
    await mine.refresh(store)
    fill = {"fits": mine.fits - before, "wall_s": round(time.perf_counter() - t0, 3), "cpu_s": round(cpu() - c0, 3)}
    await store.record_observations(votes(new_votes, models, seed=2), board="human")
    before = mine.fits
    t0, c0 = time.perf_counter(), cpu()
    refitted = await mine.refresh(store)
    round_ = {"wall_s": time.perf_counter() - t0, "cpu_s": cpu() - c0}
    cached = len(mine.entries)
    cache = mine
    await store.close()
    return {"bench": "category_fits", "models": models, "votes": n, "categories": categories,
            "bootstrap": settings.board_bootstrap,
            "cold_page": {"fits": cold_fits, **{k: round(v, 3) for k, v in cold.items()}},
            "one_fit": {k: round(v, 3) for k, v in one_fit.items()},
            "cold_page_over_one_fit_cpu": round(cold["cpu_s"] / max(one_fit["cpu_s"], 1e-9), 1),
            "refresh_filling_columns": fill,
            "refresh_after_votes": {"new_votes": new_votes, "cached_boards": cached, "fits": cache.fits - before,
                                    "refitted": refitted, **{k: round(v, 3) for k, v in round_.items()}},
            "load_avg": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--votes", type=int, default=20000)
    parser.add_argument("--models", type=int, default=30)
    parser.add_argument("--new-votes", type=int, default=10)
    args = parser.parse_args()
    from _redis import bench_redis

    with bench_redis("fits") as url:
        print(json.dumps(asyncio.run(run(url, args.votes, args.models, args.new_votes))))


if __name__ == "__main__":
    main()
