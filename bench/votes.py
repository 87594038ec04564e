"""Claim: the vote endpoint takes ≥ 2,000 votes/s on 2 cores over real HTTP, and loses or
duplicates none.

Durability is on: the embedded server runs with `appendfsync always` and the store adds
`WAITAOF 1 0` to each vote, so a 200 means the vote is fsynced. `--durability` also runs
the alternative (everysec + WAITAOF) and the baseline without an AOF, in the same run.

Starts a Redis (REDIS_URL, else the embedded server with append-only persistence) and the
real app under uvicorn (`--workers`, default 2) as a subprocess, stores `--votes` battles
(the same record `service.battles.create_battle` stores, answers included, so no model
runs), then `--clients` concurrent reviewers each vote over keep-alive HTTP/1.1 on
`POST /api/battles/{id}/vote` until every battle dealt to it has its vote. Each reviewer
is an anonymous open-mode reviewer with its signed cookie; the rate limit is on (high), so
the full vote path runs: reviewer check, battle read, one Lua call that checks (first vote,
the battle's own reviewer, exclusion, rate), logs (XADD) and counts (HINCRBY).

Afterwards it reads the stream and the human board's pair counts and checks that every
acknowledged (200) vote is in the stream exactly once, nothing else is, and the counts add
up to the same number.

Prints one JSON line: votes_per_s, p50/p99 latency (ms), errors by status, acknowledged,
in_stream, counted, lost, duplicated, and the machine's load.

Run: `python bench/votes.py [--votes 20000 --clients 64 --workers 2]`. The load generator
is a small HTTP/1.1 keep-alive client on asyncio streams (below) rather than httpx: on two
shared cores the client must cost much less than the server it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")


def app():
    """uvicorn factory (`bench.votes:app --factory`): the service's app from the environment."""
    from service.app import create_app
    from service.config import load_settings

    settings = load_settings()
    return create_app(settings, settings.redis_url or os.environ["REDIS_URL"], worker=False)


# --- a minimal keep-alive HTTP/1.1 client ---------------------------------------------------------


class Connection:
    """One keep-alive connection; `post` sends a JSON body and returns (status, body)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.cookie = ""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        cookie = f"Cookie: {self.cookie}\r\n" if self.cookie else ""
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{cookie}\r\n".encode() + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.lower()
            if name == "content-length":
                length = int(value)
            elif name == "set-cookie" and value.strip().startswith("arena_reviewer="):
                self.cookie = value.strip().split(";", 1)[0]
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        data = await self.reader.readexactly(length)
        if close:
            self.writer.close()
            self.writer = None
        return status, data


# --- the run -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, IndexError, ValueError):
            continue
    return total


def redis_cpu_seconds(url: str) -> float:
    """CPU seconds the Redis server has used (its INFO cpu section)."""
    import redis

    client = redis.Redis.from_url(url)
    info = client.info("cpu")
    client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def battle_record(i: int, reviewer: str) -> dict:
    """What `create_battle` stores (see service/battles.py), with fixed answers."""
    from arena.judge import match_id

    models = [("lora-r16", "lora-r8"), ("lora-r8", "base"), ("base", "lora-r16")][i % 3]
    prompt = f"Benchmark prompt {i % 50}: how do I reverse a list in Python?"
    return {
        "id": secrets.token_urlsafe(16), "question_id": match_id(prompt, *models), "prompt": prompt, "reference": None,
        "category": "bench", "source": "bench", "model_a": models[0], "model_b": models[1],
        "answer_a": "Use `items.reverse()` to reverse in place, or `items[::-1]` for a copy.",
        "answer_b": "Call `reversed(items)` and wrap it in `list(...)` if you need a list.",
        "created_at": time.time(), "reviewer": reviewer,
    }


async def seed(url: str, prefix: str, n: int, clients: int) -> tuple[list[tuple[str, int]], list[str]]:
    """Store `n` battles, battle i dealt to client i % `clients` (a battle takes only its own
    reviewer's vote). Returns (battle id, client) pairs and each client's signed cookie."""
    from service.battles import store_battle
    from service.reviewers import ANON_COOKIE, ANON_PREFIX, anonymous_cookie
    from service.store import Store

    store = Store.from_url(url, prefix)
    secret = await store.reviewer_secret()
    names = [f"{ANON_PREFIX}bench{k}" for k in range(clients)]
    cookies = [f"{ANON_COOKIE}={anonymous_cookie(name, secret)}" for name in names]
    ids = []
    for start in range(0, n, 50):  # the store's connection pool holds 100
        batch = [(battle_record(i, names[i % clients]), i % clients) for i in range(start, min(n, start + 50))]
        await asyncio.gather(*(store_battle(store, b) for b, _ in batch))
        ids.extend((b["id"], k) for b, k in batch)
    await store.close()
    return ids, cookies


async def load(port: int, ids: list[tuple[str, int]], cookies: list[str]) -> tuple[float, list[float], dict[int, int], dict[str, str]]:
    queues: list[list[str]] = [[] for _ in cookies]
    for battle_id, k in reversed(ids):
        queues[k].append(battle_id)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    acknowledged: dict[str, str] = {}
    bodies = [b'{"choice":"a"}', b'{"choice":"b"}', b'{"choice":"tie"}', b'{"choice":"both_bad"}']

    async def reviewer(k: int) -> None:
        conn = Connection("127.0.0.1", port)
        conn.cookie = cookies[k]
        queue = queues[k]
        n = 0
        while queue:
            battle_id = queue.pop()
            t0 = time.perf_counter()
            status, body = await conn.post(f"/api/battles/{battle_id}/vote", bodies[(k + n) % 4])
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                acknowledged[battle_id] = json.loads(body)["vote_id"]
            n += 1
        if conn.writer is not None:
            conn.writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(reviewer(k) for k in range(len(cookies))))
    return time.perf_counter() - start, latencies, statuses, acknowledged


async def verify(url: str, prefix: str, acknowledged: dict[str, str]) -> dict[str, int]:
    import msgspec

    from service.store import Store

    store = Store.from_url(url, prefix)
    seen: dict[str, int] = {}
    in_stream = 0
    after = ""
    while True:
        entries = await store.read_votes_raw(after, count=20000)
        if not entries:
            break
        for entry_id, raw in entries:
            vote = msgspec.json.decode(raw)
            seen[vote["battle_id"]] = seen.get(vote["battle_id"], 0) + 1
            in_stream += 1
            if acknowledged.get(vote["battle_id"]) not in (None, entry_id):
                seen[vote["battle_id"]] += 1000  # logged under another id than acknowledged: count as duplicate
        after = entries[-1][0]
    counted = sum(sum(v) for v in (await store.pair_counts("human")).values())
    await store.close()
    lost = sum(1 for b in acknowledged if seen.get(b, 0) == 0)
    duplicated = sum(1 for c in seen.values() if c > 1)
    unacknowledged = sum(1 for b in seen if b not in acknowledged)
    return {"in_stream": in_stream, "counted": counted, "lost": lost, "duplicated": duplicated, "unacknowledged_in_stream": unacknowledged}


#: How the embedded server makes a vote durable, per `--durability`: its `appendfsync`
#: policy (the store adds `WAITAOF 1 0` to each vote whenever the server keeps an AOF).
DURABILITY = {"always": "always", "waitaof": "everysec", "off": None}


def run_once(args, mode: str) -> dict:
    """One timed run with the embedded server in `mode` (or REDIS_URL's server as it is)."""
    from service.redis_server import EmbeddedRedis

    tmp = Path(tempfile.mkdtemp(prefix="bench-votes-"))
    embedded = None
    url = os.environ.get("REDIS_URL")
    if not url:
        import redis

        embedded = EmbeddedRedis(tmp / "redis")
        url = embedded.start()
        client = redis.Redis.from_url(url)
        if DURABILITY[mode] is None:
            client.config_set("appendonly", "no")
        else:
            client.config_set("appendfsync", DURABILITY[mode])
        client.close()
    prefix = f"bench-{secrets.token_hex(4)}"
    port = free_port()
    env = {**os.environ, "REDIS_URL": url, "ARENA_KEY_PREFIX": prefix, "ARENA_DATA_DIR": str(tmp / "data"),
           "ARENA_ADMIN_TOKEN": "bench", "ARENA_VOTES_PER_MINUTE": "100000000", "PYTHONPATH": str(ROOT),
           # Every client is on 127.0.0.1 and votes on battles dealt moments ago: the limits
           # meant for people would refuse the load itself (the checks still run in the script).
           "ARENA_VOTES_PER_MINUTE_PER_ADDRESS": "0", "ARENA_BATTLES_PER_MINUTE_PER_ADDRESS": "0", "ARENA_MIN_VOTE_S": "0",
           "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.votes:app", "--factory", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(args.workers), "--log-level", "warning", "--no-access-log", "--no-proxy-headers", "--loop", "uvloop", "--http", "httptools"],
        cwd=ROOT, env=env,
    )
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.25)
        durable = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["redis"]["votes_durable"]
        ids, cookies = asyncio.run(seed(url, prefix, args.warmup + args.votes, args.clients))
        _, _, warm_statuses, warm_ack = asyncio.run(load(port, ids[: args.warmup], cookies))
        cpu_before = cpu_seconds(server.pid) + redis_cpu_seconds(url)
        wall, latencies, statuses, acknowledged = asyncio.run(load(port, ids[args.warmup :], cookies))
        server_cpu = cpu_seconds(server.pid) + redis_cpu_seconds(url) - cpu_before
        checks = asyncio.run(verify(url, prefix, {**warm_ack, **acknowledged}))
    finally:
        server.terminate()
        server.wait(timeout=30)
        if embedded is not None:
            embedded.stop()
    latencies.sort()
    ok = statuses.get(200, 0)
    acknowledged_n = ok + warm_statuses.get(200, 0)
    return {
        "durability": mode if embedded is not None else "REDIS_URL as configured",
        "votes_durable": durable,
        "votes_per_s": round(ok / wall, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 2),
        "wall_s": round(wall, 2),
        # CPU the server side (app workers + Redis) spent per vote: less sensitive to other
        # processes on a shared machine than votes/s; 1000 / it = votes/s one core could take.
        "server_cpu_ms_per_vote": round(1000 * server_cpu / max(ok, 1), 3),
        "statuses": {str(k): v for k, v in sorted({**warm_statuses, **statuses}.items())},
        "acknowledged": acknowledged_n,
        **checks,
        "ok": not (checks["lost"] or checks["duplicated"] or checks["in_stream"] != acknowledged_n
                   or checks["counted"] != acknowledged_n),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--votes", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=1000, help="Votes before the timed run (not timed, still verified).")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes.")
    parser.add_argument("--durability", choices=sorted(DURABILITY), nargs="+", default=["always", "waitaof", "off"],
                        help="Embedded server modes to run, in turn: appendfsync always (what the service uses), "
                             "everysec + WAITAOF per vote, and no AOF at all (the baseline).")
    args = parser.parse_args()
    runs = {mode: run_once(args, mode) for mode in args.durability}
    first = runs[args.durability[0]]
    result = {
        "bench": "votes", "votes": args.votes, "clients": args.clients, "workers": args.workers,
        # The figure: votes/s with every acknowledged vote fsynced, against the same run without an AOF.
        "votes_per_s": first["votes_per_s"], "durability": first["durability"],
        "ratio_to_no_aof": round(first["votes_per_s"] / runs["off"]["votes_per_s"], 2) if "off" in runs else None,
        "runs": runs, "goal_votes_per_s": 2000, "cpus": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    if not all(r["ok"] for r in runs.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
