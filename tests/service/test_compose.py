"""compose.yaml is valid, and the same processes run without Docker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import httpx
import jsonschema
import yaml

from tests.redis_fixtures import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_matches_the_compose_specification():
    schema = json.loads((resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json").read_text())
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    jsonschema.validate(compose, schema)
    assert {"redis", "api", "worker"} <= set(compose["services"])
    assert "--appendonly" in compose["services"]["redis"]["command"]
    for name in ("api", "worker"):
        assert compose["services"][name]["environment"]["REDIS_URL"].startswith("redis://redis:")
        assert any(v.endswith(":/data") for v in compose["services"][name]["volumes"])


def test_the_compose_processes_run_without_docker(tmp_path, settings):
    """The api and worker services' commands, as processes sharing a data dir and a Redis
    (REDIS_URL when set, else the embedded server the api process starts)."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(ARENA_DATA_DIR=str(tmp_path / "data"), ARENA_ADMIN_TOKEN="t0ken", OMP_NUM_THREADS="1", ARENA_KEY_PREFIX=settings.key_prefix)
    if os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]
    api_cmd = [a for a in compose["services"]["api"]["command"]]
    api_cmd[api_cmd.index("--port") + 1] = str(port)
    api_cmd[api_cmd.index("--host") + 1] = "127.0.0.1"
    worker_cmd = compose["services"]["worker"]["command"]
    assert api_cmd[0] == worker_cmd[0] == "arena"
    python = [sys.executable, "-m", "service.cli.__main__"]
    api = subprocess.Popen(python + api_cmd[1:], env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert api.poll() is None and time.monotonic() < deadline, "api did not come up"
            time.sleep(0.2)
        worker = subprocess.Popen(python + worker_cmd[1:], env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        while True:
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
            if health["workers"]:
                break
            assert time.monotonic() < deadline, f"worker never reported: {health}"
            time.sleep(0.2)
        assert health["status"] == "ok" and health["redis"]["ok"]
        assert health["in_process_worker"] is None  # --no-worker, as in compose.yaml
    finally:
        for proc in (worker, api):
            if proc and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
