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


def test_the_gpu_profile_runs_vllm_with_runtime_lora_and_the_adapters_it_is_sent():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    vllm = compose["services"]["vllm"]
    assert vllm["profiles"] == ["gpu"] and vllm["image"].startswith("vllm/vllm-openai:")
    assert "--enable-lora" in vllm["command"] and "--max-lora-rank" in vllm["command"]
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    [gpu] = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert "ports" not in vllm  # the adapter routes load files: only the api and workers reach it
    [data] = [v for v in vllm["volumes"] if isinstance(v, dict) and v["source"] == "arena-data"]
    assert data["read_only"] is True
    assert any(isinstance(v, str) and v.endswith(":/models/base:ro") for v in vllm["volumes"])
    for name in ("api", "worker"):
        env = compose["services"][name]["environment"]
        # The profile is switched on by ARENA_GENERATION_URL; the adapters' path there is the mount.
        assert env["ARENA_GENERATION_URL"] == "${ARENA_GENERATION_URL:-}"
        assert env["ARENA_REMOTE_ADAPTER_ROOT"] == data["target"]
        assert "vllm" not in compose["services"][name].get("depends_on", {})  # the default profile runs without it


def test_the_gpu_profile_wiring_without_docker(tmp_path, settings):
    """The api service's command and environment, with ARENA_GENERATION_URL at a vLLM
    stand-in that sees the data volume where the vllm service mounts it: activating a
    candidate loads its adapter there by that path."""
    from service.domain import BaseModel, Candidate
    from service.store import SyncStore
    from tests.vllm_standin import VLLMStandIn

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    api_env = compose["services"]["api"]["environment"]
    data_dir = tmp_path / "data"
    adapter = data_dir / "runs" / "run_1" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    standin = VLLMStandIn(mounts={api_env["ARENA_REMOTE_ADAPTER_ROOT"]: str(data_dir)}).start()
    store = SyncStore(settings.redis_url, settings.key_prefix)
    store.put_base(BaseModel(name="base", path="/models/base", source="compose", created_at=0.0))
    store.add_candidate(Candidate(name="cand-1", base="base", dataset="d@1", dataset_id="ds", run_id="run_1",
                                  adapter_dir=str(adapter), config={}, metrics={}, created_at=0.0))
    store.close()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARENA_")}
    env.update(REDIS_URL=settings.redis_url, ARENA_DATA_DIR=str(data_dir), ARENA_ADMIN_TOKEN="t0ken", OMP_NUM_THREADS="1",
               ARENA_KEY_PREFIX=settings.key_prefix, ARENA_GENERATION_URL=standin.url,
               ARENA_REMOTE_ADAPTER_ROOT=api_env["ARENA_REMOTE_ADAPTER_ROOT"])
    api_cmd = list(compose["services"]["api"]["command"])
    api_cmd[api_cmd.index("--port") + 1] = str(port)
    api_cmd[api_cmd.index("--host") + 1] = "127.0.0.1"
    api = subprocess.Popen([sys.executable, "-m", "service.cli.__main__", *api_cmd[1:]], env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
        r = httpx.post(f"http://127.0.0.1:{port}/api/arena/active", json={"models": ["cand-1"]},
                       headers={"Authorization": "Bearer t0ken"}, timeout=30)
        assert r.status_code == 200, r.text
        assert standin.loras == {"cand-1": f"{api_env['ARENA_REMOTE_ADAPTER_ROOT']}/runs/run_1/adapter"}
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(timeout=30)
        standin.stop()
