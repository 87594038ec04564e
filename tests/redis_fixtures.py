"""Real Redis for tests: `REDIS_URL` when set, else an embedded server started once per session.

Every test gets its own key prefix, so tests never see each other's data on a shared
Redis, and its keys are deleted afterwards.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from service.config import Settings
from service.redis_server import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        redis.Redis.from_url(url).ping()
        yield url
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("embedded-redis"))
    yield server.start()
    server.stop()


def _delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    for pattern in (f"{prefix}:*", f"saq:{prefix}-jobs:*", f"saq:job:{prefix}-jobs:*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    client.close()


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Iterator[Settings]:
    prefix = f"arenatest-{uuid.uuid4().hex[:10]}"
    s = Settings(
        data_dir=tmp_path / "data", redis_url=redis_url, key_prefix=prefix, admin_token="test-admin-token",
        job_heartbeat_s=2, job_sweep_s=1, job_retries=2, board_refresh_s=0.2,
        calibration_refresh_s=0,  # on only where a test asks: its jobs would join other tests' workers
    )
    s.data_dir.mkdir(parents=True)
    yield s
    _delete_prefix(redis_url, prefix)


def settings_env(s: Settings) -> dict[str, str]:
    """Environment variables that make a subprocess (`arena ...`) use the same settings."""
    env = dict(os.environ)
    env.update({name: value for name, value in s.describe().items() if value and value != "***"})
    env["ARENA_ADMIN_TOKEN"] = s.admin_token or ""
    env["OMP_NUM_THREADS"] = "1"
    if s.redis_url:
        env["REDIS_URL"] = s.redis_url  # describe() masks its password
    if not s.redis_url:
        env.pop("REDIS_URL", None)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """The real app under uvicorn on a loopback port, in a background thread."""

    def __init__(self, settings: Settings, worker: bool = False) -> None:
        import uvicorn

        from service.app import create_app

        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings, settings.redis_url, worker=worker)
        # A test that leaves a stream open must not keep the server (and its board refresher,
        # logging into a closed stream for the rest of the run) alive after `stop`.
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
                                                   proxy_headers=False, timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("live server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        if self.thread.is_alive():  # still waiting on a connection or a task: stop without waiting
            self.server.force_exit = True
            self.thread.join(timeout=15)

    def client(self, admin: bool = False) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.settings.admin_token}"} if admin else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    server = LiveServer(settings).start()
    yield server
    server.stop()


def with_csrf(client: httpx.Client, form: dict) -> dict:
    """`form` plus the CSRF token a browser would have from this site's page (`/login`
    sets the double-submit cookie for a client that has none)."""
    if "arena_csrf" not in client.cookies:
        client.get("/login")
    return {**form, "csrf_token": client.cookies["arena_csrf"]}


def poll_done(client: httpx.Client, path: str, timeout: float = 120, every: float = 0.1) -> dict:
    """GET `path` until its `status` is final (succeeded, failed, cancelled); the last view."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(path).json()
        if view["status"] in ("succeeded", "failed", "cancelled"):
            return view
        time.sleep(every)
    raise AssertionError(f"{path} still {view['status']} after {timeout}s")


def fresh_board(client: httpx.Client, path: str = "/api/leaderboard", timeout: float = 30, every: float = 0.05) -> dict:
    """GET a leaderboard (`path`: /api/leaderboard with its query) until its fit has caught
    up with the votes counted (boards are refitted in the background); that view."""
    deadline = time.monotonic() + timeout
    while True:
        view = client.get(path).json()
        if view["n_battles"] == view["votes"][view["board"]]:
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: fitted on {view['n_battles']} votes, {view['votes'][view['board']]} counted, after {timeout}s")
        time.sleep(every)
