"""Votes that survive: the Redis server killed mid-stream, and processes coming and going.

- Votes stream in over real HTTP while the embedded server process is SIGKILLed and
  restarted: every vote that got a 200 is in the log and in the counts afterwards, exactly
  once; the ones caught in between got a 503 that says why, never a 200 or a 500.
- The embedded server belongs to the data dir: stopping `arena worker` (or any other
  command) never takes it away from a running `arena serve`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.votes import load, seed, verify  # noqa: E402
from service.config import Settings  # noqa: E402
from service.redis_server import EmbeddedRedis, _pid_alive  # noqa: E402
from service.store.keys import Keys  # noqa: E402
from tests.redis_fixtures import LiveServer, free_port  # noqa: E402
from tests.service.test_cli import embedded_env  # noqa: E402


def test_acknowledged_votes_survive_a_killed_server(tmp_path):
    store_dir = tmp_path / "store"
    server = EmbeddedRedis(store_dir)
    url = server.start()
    settings = Settings(data_dir=tmp_path / "data", redis_url=url, key_prefix="survive", admin_token="t",
                        min_vote_s=0.0, votes_per_minute=10**8, votes_per_minute_per_address=0,
                        battles_per_minute_per_address=0)
    settings.data_dir.mkdir()
    app = LiveServer(settings).start()
    try:
        assert app.client().get("/health").json()["redis"]["votes_durable"] is True
        ids, cookies = asyncio.run(seed(url, "survive", 2000, 16))
        outcome: dict = {}
        streaming = threading.Thread(target=lambda: outcome.update(zip(
            ("wall", "latencies", "statuses", "acknowledged"), asyncio.run(load(app.port, ids, cookies)))))
        streaming.start()
        votes = redis.Redis.from_url(url)
        while votes.xlen(Keys("survive").votes) < 300:  # kill it mid-stream, whatever the machine's speed
            assert streaming.is_alive()
            time.sleep(0.01)
        pid = server.pid()
        os.kill(pid, signal.SIGKILL)  # no SHUTDOWN, no flush: only what was fsynced survives
        while _pid_alive(pid):
            time.sleep(0.01)
        time.sleep(0.5)  # votes arriving now find no server
        assert EmbeddedRedis(store_dir).start() == url  # the same port and password back
        streaming.join(timeout=300)
        statuses, acknowledged = outcome["statuses"], outcome["acknowledged"]
        assert statuses.get(200, 0) > 0 and set(statuses) <= {200, 503}, statuses
        assert statuses.get(503, 0) > 0, "the kill should have caught some votes in flight"
        checks = asyncio.run(verify(url, "survive", acknowledged))
        assert checks["lost"] == 0 and checks["duplicated"] == 0, checks
        # The counts rebuilt from the AOF agree with the log: nothing counted twice or half.
        assert checks["counted"] == checks["in_stream"] >= len(acknowledged), checks
    finally:
        app.stop()
        EmbeddedRedis(store_dir).stop()


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def _health(port: int) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()


def _start_serve(env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    """`arena serve --no-worker` on a free port, once its health is ok: (process, port)."""
    port = free_port()
    serve = subprocess.Popen([sys.executable, "-m", "service.cli.__main__", "serve", "--no-worker"],
                             env=env | {"ARENA_PORT": str(port)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            if _health(port)["status"] == "ok":
                return serve, port
        except httpx.HTTPError:
            pass
        assert serve.poll() is None and time.monotonic() < deadline, serve.stderr.read() if serve.poll() else "slow"
        time.sleep(0.2)


def test_stopping_a_worker_never_stops_the_server_under_serve(tmp_path):
    env = embedded_env(tmp_path) | {"ARENA_ADMIN_TOKEN": "t"}
    cli = [sys.executable, "-m", "service.cli.__main__"]
    serve, port = _start_serve(env)
    try:
        worker = subprocess.Popen([*cli, "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not _health(port)["workers"]:
            assert worker.poll() is None and time.monotonic() < deadline, "the worker did not come up"
            time.sleep(0.2)
        worker.send_signal(signal.SIGINT)  # as Ctrl-C in its terminal
        assert worker.wait(timeout=60) is not None
        # A one-shot command comes and goes too.
        data = tmp_path / "qa.jsonl"
        data.write_text(json.dumps({"prompt": "q", "completion": "a"}) + "\n")
        added = subprocess.run([*cli, "data", "add", str(data), "--name", "qa"], env=env, capture_output=True, text=True,
                               timeout=120)
        assert added.returncode == 0, added.stderr
        # The API still has its store: health is ok, reads and writes work.
        assert _health(port)["status"] == "ok"
        admin = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer t"}, timeout=10)
        assert [d["name"] for d in admin.get("/api/datasets").json()] == ["qa"]
        r = admin.post("/api/datasets", files={"file": ("b.jsonl", b'{"prompt": "x", "completion": "y"}\n')},
                       data={"name": "more"})
        assert r.status_code == 201, r.text
        status = json.loads(subprocess.run([*cli, "server", "status", "--json"], env=env, capture_output=True,
                                           text=True, timeout=60).stdout)
        assert status["running"] and len(status["leases"]) == 1  # only serve holds it now
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=60)
    # The last user is gone: the server stopped with it, its data on disk.
    assert not EmbeddedRedis(tmp_path / "data").running()
    listed = subprocess.run([*cli, "data", "list", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert sorted(d["name"] for d in json.loads(listed.stdout)) == ["more", "qa"]


def test_serve_stopped_by_sigterm_stops_the_server_it_was_the_last_user_of(tmp_path):
    """SIGTERM is how docker stop, systemd and compose stop `arena serve`: its lease is
    dropped and, as the last user, it stops the server (none left running orphaned)."""
    serve, _ = _start_serve(embedded_env(tmp_path) | {"ARENA_ADMIN_TOKEN": "t"})
    server = EmbeddedRedis(tmp_path / "data")
    try:
        pid = server.pid()
        serve.send_signal(signal.SIGTERM)
        _, stderr = serve.communicate(timeout=60)
        assert serve.returncode == 128 + signal.SIGTERM and "Traceback" not in stderr, stderr
        assert not server.running() and not _pid_alive(pid), "the server outlived its last user"
        assert list(server.leases.iterdir()) == []
    finally:
        if serve.poll() is None:
            serve.kill()
        server.stop()


def test_serve_restarts_its_embedded_server_when_that_process_dies(tmp_path):
    """The embedded server killed under `arena serve` (OOM killer, kill -9): serve starts it
    again on the same port by itself, with every acknowledged write back from the AOF; in
    between, requests get a 503 that says why. `arena server stop` is obeyed, not undone."""
    env = embedded_env(tmp_path) | {"ARENA_ADMIN_TOKEN": "t"}
    cli = [sys.executable, "-m", "service.cli.__main__"]
    serve, port = _start_serve(env)
    server = EmbeddedRedis(tmp_path / "data")
    admin = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer t"}, timeout=10)
    try:
        r = admin.post("/api/datasets", files={"file": ("a.jsonl", b'{"prompt": "x", "completion": "y"}\n')},
                       data={"name": "kept"})
        assert r.status_code == 201, r.text
        url, pid = server.url, server.pid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while _answers(url):  # the signal takes a moment to land
            assert time.monotonic() < deadline
            time.sleep(0.01)
        while True:  # down for a moment, then back without anyone restarting it
            r = admin.get("/api/datasets")
            if r.status_code == 200:
                break
            assert r.status_code == 503 and "Traceback" not in r.text, r.text
            assert time.monotonic() < deadline, "the server did not come back"
            time.sleep(0.1)
        assert [d["name"] for d in r.json()] == ["kept"]
        while server.pid() == pid:  # it answers a moment before its pid is recorded
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert server.url == url  # a new process on the same URL
        assert _health(port)["status"] == "ok"
        # A deliberate stop stays a stop.
        stopped = subprocess.run([*cli, "server", "stop"], env=env, capture_output=True, text=True, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        time.sleep(3)
        assert not server.running()
        assert admin.get("/api/datasets").status_code == 503
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=60)
        server.stop()
