"""Claim: with 1M votes imported, votes stream in at ≥ 1,000/s over HTTP while
`/api/leaderboard` answers with p99 ≤ 100 ms and the API process stays under 500 MB RSS.

Starts a Redis (the embedded server, append-only, in a temporary dir, unless `--redis-url`)
and imports `--votes` votes (human votes over `--models` models, categories, sources and
question ids, plus judge verdicts in both orders) through `Store.record_observations`, the
path `arena battles import` takes after validating its file: each vote is logged and
counted into the aggregates by the same Lua call a live vote uses. Then it runs the real
app under uvicorn (one worker process) and, for `--seconds`, streams votes at `--rate`
over keep-alive HTTP/1.1 from `--clients` reviewers (`POST /api/battles/{id}/vote`, as
bench/votes.py) while a second process polls `/api/leaderboard` (human, judge, and one
category, in turn) as fast as it answers. Meanwhile it samples the API's RSS.

Two runs on the same data, one after the other:
- `refresher`: the service as shipped (fits refreshed in the background every
  `ARENA_BOARD_REFRESH_S`, requests served the last fit);
- `baseline`: `ARENA_BOARD_REFRESH_S=0`, the same code with no refresher, so a request
  refits a board whose votes changed (what a leaderboard costs when it waits for its fit).
  The previous design (each process kept the log and refitted on every request after a
  vote) is no longer in the tree; its RSS grew with the log, which `baseline` cannot show.

Prints one JSON line: the import rate, then per run votes/s acknowledged, vote p50/p99,
leaderboard p50/p99, peak API RSS, and how long after the stream the board had caught up.

Run: `python bench/leaderboard.py [--votes 1000000 --rate 1000 --seconds 30]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from bench.votes import Connection, free_port, seed  # noqa: E402  (after the path)

POLLED = ("/api/leaderboard", "/api/leaderboard?board=judge", "/api/leaderboard?category=c1")
WINNERS = ("model_a", "model_a", "model_b", "tie", "tie (bothbad)")


def app():
    """uvicorn factory (`bench.leaderboard:app --factory`): the service's app from the environment."""
    from service.app import create_app
    from service.config import load_settings

    settings = load_settings()
    return create_app(settings, settings.redis_url or os.environ["REDIS_URL"], worker=False)


# --- the import --------------------------------------------------------------------------------


def imported_votes(n: int, models: int, rng: random.Random):
    """`n` votes in chunks: 90% human votes, 10% judge verdicts (two orders per judgement).
    As in the arena, a question is a prompt and a pair (`arena.judge.match_id`), and a prompt
    has one category and one source."""
    names = [f"model-{i:02d}" for i in range(models)]
    strength = {m: rng.gauss(0, 1) for m in names}
    prompts = [(f"c{rng.randrange(5)}", f"s{rng.randrange(3)}") for _ in range(2000)]
    chunk_h: list[dict] = []
    chunk_j: list[dict] = []
    judgement = 0
    for i in range(n):
        a, b = rng.sample(names, 2)
        prompt = rng.randrange(len(prompts))
        category, source = prompts[prompt]
        question = f"p{prompt}:{min(a, b)}:{max(a, b)}"
        if i % 10 == 9 and chunk_j and chunk_j[-1].get("order") == "first":
            prev = chunk_j[-1]
            swapped = {"model_a": "model_b", "model_b": "model_a", "tie": "tie"}[prev["winner"]]
            chunk_j.append({**prev, "model_a": prev["model_b"], "model_b": prev["model_a"], "winner": swapped, "order": "second"})
        elif i % 10 == 8:
            judgement += 1
            winner = "model_a" if strength[a] > strength[b] else "model_b"
            chunk_j.append({"model_a": a, "model_b": b, "winner": winner, "reviewer": "llm:bench", "judgement": f"j{judgement}",
                            "order": "first", "consistent": True, "question_id": question,
                            "category": category, "source": source, "tstamp": 1.7e9 + i})
        else:
            p = 1 / (1 + 10 ** ((strength[b] - strength[a]) * 100 / 400))
            winner = rng.choice(WINNERS[2:]) if rng.random() < 0.15 else ("model_a" if rng.random() < p else "model_b")
            chunk_h.append({"model_a": a, "model_b": b, "winner": winner, "reviewer": f"r{rng.randrange(2000)}",
                            "question_id": question, "category": category, "source": source, "tstamp": 1.7e9 + i})
        if len(chunk_h) + len(chunk_j) >= 20000:
            yield chunk_h, chunk_j
            chunk_h, chunk_j = [], []
    if chunk_h or chunk_j:
        yield chunk_h, chunk_j


async def import_votes(url: str, prefix: str, n: int, models: int) -> float:
    from service.store import Store

    store = Store.from_url(url, prefix)
    started = time.perf_counter()
    for human, judged in imported_votes(n, models, random.Random(0)):
        await store.record_observations(human, board="human")
        await store.record_observations(judged, board="judge")
    wall = time.perf_counter() - started
    await store.close()
    return wall


# --- the load ------------------------------------------------------------------------------------


async def stream_votes(port: int, ids: list[tuple[str, int]], cookies: list[str], rate: float) -> dict:
    """Vote on every battle, vote i sent at start + i / rate (or as soon as its connection is free)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    bodies = [b'{"choice":"a"}', b'{"choice":"b"}', b'{"choice":"tie"}']
    per_client: list[list[tuple[int, str]]] = [[] for _ in cookies]
    for i, (battle_id, k) in enumerate(ids):
        per_client[k].append((i, battle_id))
    start = time.perf_counter() + 0.2

    async def reviewer(k: int) -> None:
        conn = Connection("127.0.0.1", port)
        conn.cookie = cookies[k]
        for i, battle_id in per_client[k]:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t0 = time.perf_counter()
            status, _ = await conn.post(f"/api/battles/{battle_id}/vote", bodies[i % 3])
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
        if conn.writer is not None:
            conn.writer.close()

    await asyncio.gather(*(reviewer(k) for k in range(len(cookies))))
    wall = time.perf_counter() - start
    latencies.sort()
    ok = statuses.get(200, 0)
    return {"votes_per_s": round(ok / wall, 1), "acknowledged": ok, "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "vote_p50_ms": _ms(latencies, 0.5), "vote_p99_ms": _ms(latencies, 0.99), "wall_s": round(wall, 2)}


def _ms(sorted_seconds: list[float], q: float) -> float | None:
    return round(1000 * sorted_seconds[min(len(sorted_seconds) - 1, int(len(sorted_seconds) * q))], 2) if sorted_seconds else None


def poll(url: str, seconds: float) -> None:
    """`--poll`: GET the polled boards in turn for `seconds`; prints their latencies' summary."""
    import httpx

    latencies: list[float] = []
    errors = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        deadline = time.monotonic() + seconds
        k = 0
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            r = client.get(POLLED[k % len(POLLED)])
            latencies.append(time.perf_counter() - t0)
            errors += r.status_code != 200
            k += 1
    latencies.sort()
    print(json.dumps({"polls": len(latencies), "errors": errors, "p50_ms": _ms(latencies, 0.5), "p99_ms": _ms(latencies, 0.99),
                      "max_ms": _ms(latencies, 1.0)}))


class RssSampler(threading.Thread):
    """The peak resident memory of a process and its descendants, sampled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            self.peak = max(self.peak, self.rss())

    def rss(self) -> int:
        total, todo = 0, [self.pid]
        while todo:
            p = todo.pop()
            try:
                for line in Path(f"/proc/{p}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                for task in Path(f"/proc/{p}/task").iterdir():
                    todo.extend(int(c) for c in (task / "children").read_text().split())
            except (OSError, ValueError):
                continue
        return total


def run_api(args, url: str, prefix: str, refresh_s: float, tmp: Path) -> dict:
    """One timed run against the imported store, with `ARENA_BOARD_REFRESH_S=refresh_s`."""
    import httpx

    port = free_port()
    env = {**os.environ, "REDIS_URL": url, "ARENA_KEY_PREFIX": prefix, "ARENA_DATA_DIR": str(tmp / "data"),
           "ARENA_ADMIN_TOKEN": "bench", "ARENA_VOTES_PER_MINUTE": "100000000", "ARENA_VOTES_PER_MINUTE_PER_ADDRESS": "0", "ARENA_BATTLES_PER_MINUTE_PER_ADDRESS": "0",
           "ARENA_MIN_VOTE_S": "0", "ARENA_BOARD_REFRESH_S": str(refresh_s), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.leaderboard:app", "--factory", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--log-level", "warning", "--no-access-log", "--loop", "uvloop", "--http", "httptools"],
        cwd=ROOT, env=env,
    )
    sampler = RssSampler(server.pid)
    sampler.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.25)
        cold = []
        for path in POLLED:  # the first fit of each board in this process is made while its first request waits
            t0 = time.perf_counter()
            assert httpx.get(base + path, timeout=120).status_code == 200
            cold.append(round(1000 * (time.perf_counter() - t0), 1))
        n = int(args.rate * args.seconds)
        ids, cookies = asyncio.run(seed(url, prefix, n, args.clients))
        poller = subprocess.Popen([sys.executable, __file__, "--poll", base, "--poll-seconds", str(args.seconds)],
                                  cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
        votes = asyncio.run(stream_votes(port, ids, cookies, args.rate))
        polled = json.loads(poller.communicate(timeout=args.seconds + 120)[0])
        # How long until the board shows every vote (0 when it already does).
        t0 = time.perf_counter()
        while True:
            board = httpx.get(base + "/api/leaderboard", timeout=120).json()
            if board["n_battles"] == board["votes"]["human"] or time.perf_counter() - t0 > 120:
                break
            time.sleep(0.05)
        caught_up = round(time.perf_counter() - t0, 2)
    finally:
        sampler.done.set()
        server.terminate()
        server.wait(timeout=30)
    return {"board_refresh_s": refresh_s, **votes, "leaderboard": polled, "cold_first_fit_ms": cold,
            "api_peak_rss_mb": round(sampler.peak / 2**20, 1), "board_caught_up_after_s": caught_up,
            "n_battles": board["n_battles"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--votes", type=int, default=1_000_000, help="Votes imported before the load.")
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--rate", type=float, default=1000, help="Votes per second to stream (the target).")
    parser.add_argument("--seconds", type=float, default=30, help="How long to stream votes and poll the board.")
    parser.add_argument("--clients", type=int, default=32, help="Concurrent voting connections.")
    parser.add_argument("--refresh-s", type=float, default=3.0, help="ARENA_BOARD_REFRESH_S of the refresher run.")
    parser.add_argument("--no-baseline", action="store_true", help="Skip the run without a refresher.")
    parser.add_argument("--redis-url", default=None, help="Use this Redis (default: an embedded one in a temporary dir).")
    parser.add_argument("--poll", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--poll-seconds", type=float, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.poll:
        poll(args.poll, args.poll_seconds)
        return

    from _redis import bench_redis

    tmp = Path(tempfile.mkdtemp(prefix="bench-leaderboard-"))
    prefix = f"bench-{secrets.token_hex(4)}"
    # The embedded, append-only server unless --redis-url (REDIS_URL's is not asked for).
    with bench_redis("leaderboard", args.redis_url, directory=tmp, from_env=False) as url:
        try:
            import_s = asyncio.run(import_votes(url, prefix, args.votes, args.models))
            runs = {"refresher": run_api(args, url, prefix, args.refresh_s, tmp)}
            if not args.no_baseline:
                runs["baseline"] = run_api(args, url, prefix, 0.0, tmp)
            redis_mb = _redis_memory_mb(url)
        finally:
            _drop_prefix(url, prefix)  # a shared Redis keeps nothing of the bench's
    main_run = runs["refresher"]
    result = {
        "bench": "leaderboard", "imported_votes": args.votes, "models": args.models,
        "import_votes_per_s": round(args.votes / import_s, 1), "import_path": "Store.record_observations (arena battles import)",
        # The figures: votes/s while the board is polled, its p99, the API's peak RSS.
        "votes_per_s": main_run["votes_per_s"], "leaderboard_p99_ms": main_run["leaderboard"]["p99_ms"],
        "api_peak_rss_mb": main_run["api_peak_rss_mb"],
        "baseline_leaderboard_p99_ms": runs["baseline"]["leaderboard"]["p99_ms"] if "baseline" in runs else None,
        "runs": runs, "redis_used_mb": redis_mb,
        "goal": {"votes_per_s": args.rate, "leaderboard_p99_ms": 100, "api_rss_mb": 500},
        "cpus": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    result["ok"] = bool(main_run["votes_per_s"] >= 0.95 * args.rate and (main_run["leaderboard"]["p99_ms"] or 1e9) <= 100
                        and main_run["api_peak_rss_mb"] < 500)
    print(json.dumps(result))


def _redis_memory_mb(url: str) -> float:
    import redis

    client = redis.Redis.from_url(url)
    used = client.info("memory")["used_memory"]
    client.close()
    return round(used / 2**20, 1)


def _drop_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])
    client.close()


if __name__ == "__main__":
    main()
