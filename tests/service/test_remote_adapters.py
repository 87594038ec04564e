"""A vLLM server follows the arena: candidates' adapters are loaded there when activated or
trained, unloaded when retired, and loaded again after the server forgot them.

The server is `tests.vllm_standin.VLLMStandIn` (vLLM's runtime-LoRA endpoints, real HTTP
on loopback), which sees the data dir at /adapters, as the compose `gpu` profile mounts it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from service.adapter_sync import reconcile_adapters, remote_adapter_path
from service.domain import BaseModel, Candidate
from service.errors import Conflict
from service.generation import RemoteBackend
from service.generation.remote_adapters import RemoteAdapters
from service.store import Store, SyncStore
from tests.redis_fixtures import LiveServer, poll_done, settings_env
from tests.vllm_standin import VLLMStandIn

PROMPTS = [{"prompt": "What is 2 + 2?", "category": "math"}]


@pytest.fixture
def vllm(settings):
    server = VLLMStandIn(answer=lambda lora, prompt: f"I am {lora}.", mounts={"/adapters": str(settings.data_dir)}).start()
    yield server
    server.stop()


def remote(settings, vllm, **overrides):
    overrides = {"remote_adapter_root": "/adapters", "remote_adapter_sync_s": 0, "min_vote_s": 0.0, **overrides}
    return msgspec.structs.replace(settings, generation_url=vllm.url, **overrides)


def add_candidates(settings, *names: str) -> dict[str, str]:
    """Candidates with an adapter directory each under the data dir; returns name → the path vLLM is given."""
    store = SyncStore(settings.redis_url, settings.key_prefix)
    paths = {}
    try:
        store.put_base(BaseModel(name="base", path=str(settings.data_dir / "bases" / "base"), source="test", created_at=time.time()))
        for name in names:
            adapter = settings.data_dir / "runs" / f"run_{name}" / "adapter"
            adapter.mkdir(parents=True)
            (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
            store.add_candidate(Candidate(name=name, base="base", dataset="d@1", dataset_id="ds", run_id=f"run_{name}",
                                          adapter_dir=str(adapter), config={}, metrics={}, created_at=time.time()))
            paths[name] = f"/adapters/runs/run_{name}/adapter"
    finally:
        store.close()
    return paths


def battle(client) -> tuple[dict, dict]:
    r = client.post("/api/battles")
    assert r.status_code == 201, r.text
    shown = r.json()
    v = client.post(f"/api/battles/{shown['id']}/vote", json={"choice": "tie"})
    assert v.status_code == 200, v.text
    return shown, v.json()


def test_activated_candidates_are_loaded_battled_on_the_server_and_unloaded_when_retired(settings, vllm):
    paths = add_candidates(settings, "cand-a", "cand-b", "cand-c")
    assert remote_adapter_path(remote(settings, vllm), str(settings.data_dir / "runs/run_cand-a/adapter")) == paths["cand-a"]
    srv = LiveServer(remote(settings, vllm)).start()
    try:
        admin, client = srv.client(admin=True), srv.client()
        r = admin.post("/api/arena/active", json={"models": ["cand-a", "cand-b"]})
        assert r.status_code == 200 and r.json() == {"active": ["cand-a", "cand-b"]}, r.text
        assert vllm.loras == {"cand-a": paths["cand-a"], "cand-b": paths["cand-b"]}
        assert admin.post("/api/arena/prompts", json={"prompts": PROMPTS}).status_code == 201

        shown, reveal = battle(client)
        # Each side was answered by the server with that side's adapter.
        assert shown["answer_a"] == f"I am {reveal['model_a']}." and shown["answer_b"] == f"I am {reveal['model_b']}."
        assert {reveal["model_a"], reveal["model_b"]} == {"cand-a", "cand-b"}
        assert sorted(vllm.chat_models()) == ["cand-a", "cand-b"]

        # Activating again is no second load; retiring unloads only the retired one.
        loads = sum(path == "/v1/load_lora_adapter" for path, _ in vllm.calls)
        assert admin.post("/api/arena/active", json={"models": ["cand-a"]}).status_code == 200
        assert sum(path == "/v1/load_lora_adapter" for path, _ in vllm.calls) == loads
        r = admin.post("/api/arena/active", json={"models": ["cand-b"], "active": False})
        assert r.json() == {"active": ["cand-a"]}
        assert vllm.loras == {"cand-a": paths["cand-a"]}
    finally:
        srv.stop()


def test_a_restarted_server_gets_its_adapters_back(settings, vllm):
    add_candidates(settings, "cand-a", "cand-b")
    srv = LiveServer(remote(settings, vllm)).start()
    try:
        admin, client = srv.client(admin=True), srv.client()
        assert admin.post("/api/arena/active", json={"models": ["cand-a", "cand-b"]}).status_code == 200
        assert admin.post("/api/arena/prompts", json={"prompts": PROMPTS}).status_code == 201
        vllm.restart()
        # The next battle finds the server without them, loads them and is answered.
        shown, reveal = battle(client)
        assert shown["answer_a"] == f"I am {reveal['model_a']}."
        assert set(vllm.loras) == {"cand-a", "cand-b"}
        # Once healed, a battle is its two answers and nothing else: no listing, no load.
        before = len(vllm.calls)
        battle(client)
        assert [path for path, _ in vllm.calls[before:]] == ["/v1/chat/completions"] * 2
    finally:
        srv.stop()

    # The periodic reconcile (and the one at startup) needs no battle to heal.
    vllm.restart()
    srv = LiveServer(remote(settings, vllm, remote_adapter_sync_s=1)).start()
    try:
        deadline = time.monotonic() + 15
        while set(vllm.loras) != {"cand-a", "cand-b"}:
            assert time.monotonic() < deadline, f"startup reconcile did not load: {vllm.loras}"
            time.sleep(0.1)
        vllm.restart()
        while set(vllm.loras) != {"cand-a", "cand-b"}:
            assert time.monotonic() < deadline, f"periodic reconcile did not load: {vllm.loras}"
            time.sleep(0.1)
    finally:
        srv.stop()


def test_a_refused_load_is_a_clear_error_and_nothing_is_lost(settings, vllm):
    add_candidates(settings, "cand-a", "cand-b")
    vllm.refuse["cand-b"] = "LoRA rank 64 is greater than max_lora_rank 16."
    s = remote(settings, vllm)
    srv = LiveServer(s).start()
    try:
        admin = srv.client(admin=True)
        r = admin.post("/api/arena/active", json={"models": ["cand-a", "cand-b"]})
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert f"generation server {vllm.url} refused to load adapter 'cand-b'" in detail
        assert "LoRA rank 64 is greater than max_lora_rank 16." in detail and "Traceback" not in r.text
        assert admin.get("/api/arena/active").json() == {"active": []}  # nothing marked active
        assert [c["name"] for c in admin.get("/api/candidates").json()] == ["cand-a", "cand-b"]

        # The CLI: one line naming the server and what it said, exit code 1.
        out = subprocess.run([sys.executable, "-m", "service.cli", "activate", "cand-b"], env=settings_env(s),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 1, out.stdout + out.stderr
        [line] = out.stderr.strip().splitlines()
        assert line.startswith(f"error: generation server {vllm.url} refused to load adapter 'cand-b'") and "max_lora_rank 16" in line

        # Once the server takes it, activation works.
        del vllm.refuse["cand-b"]
        assert admin.post("/api/arena/active", json={"models": ["cand-b"]}).json() == {"active": ["cand-b"]}
    finally:
        srv.stop()


def test_wrong_root_missing_runtime_loading_and_a_name_taken_elsewhere(settings, vllm):
    paths = add_candidates(settings, "cand-a")
    srv = LiveServer(remote(settings, vllm, remote_adapter_root="/elsewhere")).start()
    try:
        r = srv.client(admin=True).post("/api/arena/active", json={"models": ["cand-a"]})
        assert r.status_code == 422 and "No adapter found for /elsewhere/runs/run_cand-a/adapter" in r.json()["detail"]
        assert "ARENA_REMOTE_ADAPTER_ROOT" in r.json()["detail"]
    finally:
        srv.stop()

    static = VLLMStandIn(runtime_lora=False).start()
    srv = LiveServer(msgspec.structs.replace(settings, generation_url=static.url)).start()
    try:
        r = srv.client(admin=True).post("/api/arena/active", json={"models": ["cand-a"]})
        assert r.status_code == 422 and "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in r.json()["detail"]
    finally:
        srv.stop()
        static.stop()

    with RemoteBackend(vllm.url, retries=0) as backend:
        adapters = RemoteAdapters(backend)
        assert adapters.load("cand-a", paths["cand-a"]) is True
        assert adapters.load("cand-a", paths["cand-a"]) is False  # vLLM's 400 "already loaded", same path: done
        with pytest.raises(Conflict, match=f"already serves 'cand-a' from {paths['cand-a']}, not from /other"):
            adapters.load("cand-a", "/other")
        assert adapters.unload("cand-a") is True and adapters.unload("cand-a") is False
        assert adapters.loaded() == {"base-model": "/models/base-model"}


def test_reconcile_reports_what_it_could_not_load(settings, vllm):
    add_candidates(settings, "cand-a", "cand-b")
    vllm.refuse["cand-b"] = "out of LoRA slots"
    s = remote(settings, vllm)

    async def main():
        store = Store.from_url(s.redis_url, s.key_prefix)
        try:
            await store.set_active("cand-a", True)
            await store.set_active("cand-b", True)
            first = await reconcile_adapters(store, s)
            second = await reconcile_adapters(store, s)
            return first, second
        finally:
            await store.close()

    first, second = asyncio.run(main())
    assert first.loaded == ["cand-a"] and "out of LoRA slots" in first.failed["cand-b"]
    assert second.present == ["cand-a"] and not second.loaded
    assert set(vllm.loras) == {"cand-a"}


def test_a_trained_candidate_is_loaded_on_the_server(settings, vllm, tiny_base: Path):
    from service.bases import make_base

    store = SyncStore(settings.redis_url, settings.key_prefix)
    store.put_base(make_base("tiny", tiny_base, "tiny"))
    store.close()
    vllm.refuse["refused"] = "LoRA rank 8 is greater than max_lora_rank 4."
    srv = LiveServer(remote(settings, vllm), worker=True).start()
    try:
        admin = srv.client(admin=True)
        rows = "\n".join(json.dumps({"prompt": f"Say {w}", "completion": w}) for w in ["amber", "birch", "cedar", "delta"] * 4)
        assert admin.post("/api/datasets", files={"file": ("w.jsonl", rows.encode())}, data={"name": "w"}).status_code == 201
        config = {"max_steps": 2, "batch_size": 4, "logging_steps": 1, "eval_fraction": 0.0, "max_length": 32}
        runs = {}
        for name in ("fresh", "refused"):
            r = admin.post("/api/runs", json={"base": "tiny", "data": "w", "name": name, "config": config})
            assert r.status_code == 202, r.text
            runs[name] = r.json()["id"]
        for name, run_id in runs.items():
            deadline = time.monotonic() + 240
            while (job := admin.get(f"/api/jobs/{run_id}").json())["status"] not in ("succeeded", "failed"):
                assert time.monotonic() < deadline
                time.sleep(0.25)
            assert job["status"] == "succeeded", job["error"]
            runs[name] = job
        assert vllm.loras == {"fresh": f"/adapters/runs/{runs['fresh']['id']}/adapter"}
        assert runs["fresh"]["result"]["remote_adapter"] == "loaded"
        # Refused: the run still succeeded and its candidate is saved; the run says why it is not served.
        assert runs["refused"]["result"]["remote_adapter"] == "not loaded"
        assert "max_lora_rank 4" in runs["refused"]["result"]["warnings"][0]
        assert {c["name"] for c in admin.get("/api/candidates").json()} == {"fresh", "refused"}
    finally:
        srv.stop()


def test_an_eval_loads_its_candidates_and_is_answered_by_them(settings, vllm):
    add_candidates(settings, "cand-a", "cand-b")
    srv = LiveServer(remote(settings, vllm), worker=True).start()
    try:
        admin = srv.client(admin=True)
        task = {"task": "who", "dataset": "inline.jsonl", "output_type": "generate_until", "doc_to_text": "{{q}}",
                "doc_to_target": "{{a}}", "generation_kwargs": {"until": ["\n"], "max_gen_toks": 16},
                "metric_list": [{"metric": "exact_match"}]}
        docs = [{"q": "Who are you?", "a": "I am cand-a."}, {"q": "Name yourself.", "a": "I am cand-a."}]
        r = admin.post("/api/evals", json={"candidates": ["cand-a", "cand-b"], "task": task, "docs": docs})
        assert r.status_code == 202, r.text
        view = poll_done(admin, f"/api/evals/{r.json()['id']}", 120, every=0.2)
        assert view["status"] == "succeeded", view.get("error")
        assert set(vllm.loras) == {"cand-a", "cand-b"}
        assert sorted(set(vllm.chat_models())) == ["cand-a", "cand-b"]
        scores = {c["name"]: c["metrics"]["exact_match"]["value"] for c in view["candidates"]}
        assert scores == {"cand-a": 1.0, "cand-b": 0.0}  # each answered with its own adapter
    finally:
        srv.stop()


def test_retiring_while_the_server_is_down_still_retires(settings, vllm):
    add_candidates(settings, "cand-a", "cand-b")
    srv = LiveServer(remote(settings, vllm)).start()
    try:
        admin = srv.client(admin=True)
        assert admin.post("/api/arena/active", json={"models": ["cand-a", "cand-b"]}).status_code == 200
        vllm.stop()
        r = admin.post("/api/arena/active", json={"models": ["cand-b"], "active": False})
        assert r.status_code == 200, r.text
        assert r.json()["active"] == ["cand-a"]
        assert "unreachable" in r.json()["warnings"][0] and vllm.url in r.json()["warnings"][0]
    finally:
        srv.stop()
