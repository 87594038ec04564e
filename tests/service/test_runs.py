"""Training runs through the service: API, SSE, page, cancel, failures, a killed worker, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from service.bases import make_base
from service.store import SyncStore
from tests.redis_fixtures import LiveServer, settings_env

FAST = {"epochs": 2, "batch_size": 4, "lr": 5e-3, "logging_steps": 2, "eval_fraction": 0.125, "max_length": 64}


def records(n: int = 32) -> bytes:
    words = ["amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "heron"]
    rows = []
    for i in range(n):
        a, b, c = words[i % 8], words[(i * 3 + 1) % 8], words[(i * 5 + 2) % 8]
        rows.append(json.dumps({"prompt": f"Second word of: {a} {b} {c}", "completion": b}))
    return "\n".join(rows).encode()


@pytest.fixture
def server(settings, tiny_base):
    store = SyncStore(settings.redis_url, settings.key_prefix)
    store.put_base(make_base("tiny", tiny_base, "tiny"))
    store.close()
    srv = LiveServer(settings, worker=True).start()
    admin = srv.client(admin=True)
    r = admin.post("/api/datasets", files={"file": ("words.jsonl", records())}, data={"name": "words"})
    assert r.status_code == 201, r.text
    yield srv
    srv.stop()


def wait(client: httpx.Client, run_id: str, statuses: set[str], timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/runs/{run_id}").json()
        if run["status"] in statuses:
            return run
        time.sleep(0.25)
    raise AssertionError(f"run {run_id} still {run['status']}")


def test_run_trains_registers_a_candidate_with_lineage(server):
    admin = server.client(admin=True)
    r = admin.post("/api/runs", json={"base": "tiny", "data": "words", "name": "cand-a", "config": FAST})
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    # SSE: one event per logging step, ending with the final status.
    events = []
    with admin.stream("GET", f"/api/runs/{run_id}/events", timeout=300) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:].strip()))
    assert events[-1] == {"type": "status", "status": "succeeded"}
    steps = [e["step"] for e in events if e.get("type") == "progress" and "loss" in e]
    assert steps and steps == sorted(steps)
    run = wait(admin, run_id, {"succeeded", "failed"})
    assert run["status"] == "succeeded", run["error"]
    assert run["loss_curve"] and any(p["eval_loss"] is not None for p in run["loss_curve"])
    cands = admin.get("/api/candidates").json()
    assert [c["name"] for c in cands] == ["cand-a"]
    cand = cands[0]
    assert cand["base"] == "tiny" and cand["dataset"] == "words@1" and cand["run_id"] == run_id
    assert cand["config"]["lr"] == 5e-3
    # Answers name files relative to the data dir, never by the server's absolute path.
    assert cand["adapter_dir"].startswith("$ARENA_DATA_DIR/runs/")
    local = cand["adapter_dir"].replace("$ARENA_DATA_DIR", str(server.settings.data_dir))
    assert os.path.exists(os.path.join(local, "adapter_model.safetensors"))
    page = admin.get(f"/runs/{run_id}")
    assert page.status_code == 200 and "<svg" in page.text and "cand-a" in page.text
    # The name is taken now.
    again = admin.post("/api/runs", json={"base": "tiny", "data": "words", "name": "cand-a", "config": FAST})
    assert again.status_code == 409


def test_cancel_stops_training_and_registers_nothing(server):
    admin = server.client(admin=True)
    r = admin.post("/api/runs", json={"base": "tiny", "data": "words", "name": "long", "config": {**FAST, "max_steps": 5000, "logging_steps": 1}})
    run_id = r.json()["id"]
    deadline = time.monotonic() + 120
    while admin.get(f"/api/runs/{run_id}").json().get("step", 0) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert admin.delete(f"/api/runs/{run_id}").status_code == 200
    run = wait(admin, run_id, {"cancelled", "failed", "succeeded"}, timeout=60)
    assert run["status"] == "cancelled"
    assert run["step"] < 5000
    assert admin.get("/api/candidates").json() == []
    # The name is free again.
    assert admin.post("/api/runs", json={"base": "tiny", "data": "words", "name": "long", "config": FAST}).status_code == 202


@pytest.mark.parametrize(
    "config,expected",
    [
        ({"target_modules": "nope_proj"}, "target_modules ['nope_proj'] not found"),
        ({"batch_size": 64}, "one optimizer step needs"),
    ],
)
def test_bad_runs_fail_fast_with_one_clear_reason(server, config, expected):
    admin = server.client(admin=True)
    run_id = admin.post("/api/runs", json={"base": "tiny", "data": "words", "name": "bad", "config": {**FAST, **config}}).json()["id"]
    run = wait(admin, run_id, {"failed", "succeeded"}, timeout=120)
    assert run["status"] == "failed" and expected in run["error"]
    assert admin.get("/api/candidates").json() == []


def test_unknown_base_dataset_or_config_is_rejected_at_once(server):
    admin = server.client(admin=True)
    r = admin.post("/api/runs", json={"base": "nope", "data": "words", "name": "x"})
    assert r.status_code == 404 and "no base model named 'nope'" in r.json()["detail"]
    r = admin.post("/api/runs", json={"base": "tiny", "data": "nope", "name": "x"})
    assert r.status_code == 404 and "no dataset named 'nope'" in r.json()["detail"]
    r = admin.post("/api/runs", json={"base": "tiny", "data": "words", "name": "x", "config": {"lr": -1}})
    assert r.status_code == 422 and "lr" in r.json()["detail"]
    r = admin.post("/api/runs", json={"base": "tiny", "data": "words", "name": "x", "config": {"learning_rate": 1}})
    assert r.status_code == 422
    assert server.client().post("/api/runs", json={"base": "tiny", "data": "words", "name": "x"}).status_code == 401


def test_a_killed_worker_run_resumes_from_its_checkpoint(settings, tiny_base):
    store = SyncStore(settings.redis_url, settings.key_prefix)
    store.put_base(make_base("tiny", tiny_base, "tiny"))
    env = settings_env(settings)
    srv = LiveServer(settings, worker=False).start()
    try:
        admin = srv.client(admin=True)
        admin.post("/api/datasets", files={"file": ("w.jsonl", records(48))}, data={"name": "words"})
        config = {**FAST, "epochs": 12, "save_steps": 3, "logging_steps": 1, "batch_size": 8}
        run_id = admin.post("/api/runs", json={"base": "tiny", "data": "words", "name": "resumed", "config": config}).json()["id"]
        cmd = [sys.executable, "-m", "service.cli.__main__", "worker"]
        victim = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ckpts = settings.data_dir / "runs" / run_id / "checkpoints"
        deadline = time.monotonic() + 180
        while not (ckpts.exists() and any((p / "optimizer.pt").exists() for p in ckpts.iterdir())):
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.2)
        time.sleep(0.5)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        rescuer = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            run = wait(admin, run_id, {"succeeded", "failed"}, timeout=300)
        finally:
            os.killpg(rescuer.pid, signal.SIGTERM)
            rescuer.wait(timeout=60)
        assert run["status"] == "succeeded", run["error"]
        assert run["attempts"] == 2
        metrics = json.loads((settings.data_dir / "runs" / run_id / "metrics.json").read_text())
        assert metrics["resumed_from"] and "checkpoint-" in metrics["resumed_from"]
        assert store.get_candidate("resumed").run_id == run_id
    finally:
        srv.stop()
        store.close()


def test_cli_train_wait_and_sweep_in_embedded_mode(tmp_path, tiny_base):
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(ARENA_DATA_DIR=str(tmp_path / "data"), OMP_NUM_THREADS="1")
    data = tmp_path / "words.jsonl"
    data.write_bytes(records())

    def arena(*args):
        return subprocess.run([sys.executable, "-m", "service.cli.__main__", *args], env=env, capture_output=True, text=True, timeout=600)

    assert arena("base", "add", str(tiny_base), "--name", "tiny").returncode == 0
    assert arena("data", "add", str(data), "--name", "words").returncode == 0
    flags = ["--epochs", "2", "--batch-size", "4", "--lr", "5e-3", "--logging-steps", "2", "--max-length", "64"]
    done = arena("train", "--base", "tiny", "--data", "words", "--name", "cli-cand", *flags, "--wait")
    assert done.returncode == 0, done.stderr
    assert "cli-cand: final loss" in done.stdout
    listed = json.loads(arena("candidates", "list", "--json").stdout)
    assert [c["name"] for c in listed] == ["cli-cand"]
    sweep = arena("train", "--base", "tiny", "--data", "words", "--name", "sw", *flags, "--packing", "grouped",
                  "--sweep", "lora_r=4,8 lr=1e-3,5e-3", "--json")
    assert sweep.returncode == 0, sweep.stderr
    queued = json.loads(sweep.stdout)
    assert sorted(j["params"]["candidate"] for j in queued) == ["sw-lorar4-lr0.001", "sw-lorar4-lr0.005", "sw-lorar8-lr0.001", "sw-lorar8-lr0.005"]
    assert {j["params"]["config"]["lora_r"] for j in queued} == {4, 8}
    assert {j["params"]["config"]["packing"] for j in queued} == {"grouped"}
    bad = arena("train", "--base", "nope", "--data", "words", "--name", "x")
    assert bad.returncode == 1 and "no base model named 'nope'" in bad.stderr
    hub = arena("base", "add", "some-org/some-model", "--name", "hub")
    assert hub.returncode == 2 and "could not download 'some-org/some-model' from the Hugging Face hub" in hub.stderr
    assert len(hub.stderr.strip().splitlines()) == 1
    not_a_model = arena("base", "add", str(tmp_path), "--name", "dir")
    assert not_a_model.returncode == 1 and "no config.json" in not_a_model.stderr
