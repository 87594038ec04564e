"""A retired candidate's adapter is unloaded from the vLLM server even when the server could
not be told at retirement: the unload is kept in Redis as pending and asked again (every
reconcile, every later retirement, `arena adapters --sync`) until it is done, across
restarts of the API; activating the candidate again cancels it.

The server is `tests.vllm_standin.VLLMStandIn` (real HTTP on loopback): `go_down()` refuses
connections and keeps its adapters, `unload_error` answers every unload with an error."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import msgspec
import pytest

from service.adapter_sync import reconcile_adapters, unregister_candidates
from service.store import Store
from tests.redis_fixtures import LiveServer, settings_env
from tests.service.test_remote_adapters import add_candidates, remote
from tests.vllm_standin import VLLMStandIn


@pytest.fixture
def vllm(settings):
    server = VLLMStandIn(mounts={"/adapters": str(settings.data_dir)}).start()
    yield server
    server.stop()


def wait_for(condition, what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def on_store(s, work):
    async def main():
        store = Store.from_url(s.redis_url, s.key_prefix)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(main())


def arena(s, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], env=settings_env(s), capture_output=True,
                          text=True, timeout=120)


def test_retiring_while_the_server_is_down_unloads_once_it_is_back_even_after_the_api_restarted(settings, vllm):
    paths = add_candidates(settings, "cand-a", "cand-b", "cand-c")
    s = remote(settings, vllm)  # no periodic reconcile: only the one at startup
    srv = LiveServer(s).start()
    try:
        admin = srv.client(admin=True)
        assert admin.post("/api/arena/active", json={"models": ["cand-a", "cand-b", "cand-c"]}).status_code == 200
        vllm.go_down()
        r = admin.post("/api/arena/active", json={"models": ["cand-b"], "active": False})
        assert r.status_code == 200, r.text
        assert r.json()["active"] == ["cand-a", "cand-c"]  # retired whatever the server says
        [warning] = r.json()["warnings"]
        assert vllm.url in warning and "unreachable" in warning and "pending unload" in warning
        [pending] = admin.get("/api/arena/active").json()["pending_unloads"]
        assert {k: pending[k] for k in ("name", "server", "attempts")} == {"name": "cand-b", "server": vllm.url, "attempts": 1}
        assert "unreachable" in pending["error"] and pending["path"] == "adapter"  # no server path over HTTP
        [kept] = on_store(s, lambda store: store.pending_unloads())
        assert kept.path == paths["cand-b"]  # in Redis: the path the server was given
    finally:
        srv.stop()

    vllm.come_back()
    assert set(vllm.loras) == {"cand-a", "cand-b", "cand-c"}  # it kept serving the retired one meanwhile
    srv = LiveServer(s).start()  # a new API process: the record was in Redis, not in the old one
    try:
        wait_for(lambda: set(vllm.loras) == {"cand-a", "cand-c"}, f"startup reconcile did not unload: {vllm.loras}")
        assert srv.client(admin=True).get("/api/arena/active").json() == {"active": ["cand-a", "cand-c"]}
        assert [body for path, body in vllm.calls if path == "/v1/unload_lora_adapter"] == [{"lora_name": "cand-b"}]
    finally:
        srv.stop()


def test_the_periodic_reconcile_retries_until_the_server_unloads(settings, vllm):
    add_candidates(settings, "cand-a", "cand-b", "cand-c")
    srv = LiveServer(remote(settings, vllm, remote_adapter_sync_s=1)).start()
    try:
        admin = srv.client(admin=True)
        assert admin.post("/api/arena/active", json={"models": ["cand-a", "cand-b", "cand-c"]}).status_code == 200
        vllm.unload_error = (503, "engine is busy")  # up, but refusing to unload
        r = admin.post("/api/arena/active", json={"models": ["cand-b"], "active": False})
        assert "engine is busy" in r.json()["warnings"][0] and "every 1 s" in r.json()["warnings"][0]
        # Asked again and again, each attempt counted, the server's words kept.
        wait_for(lambda: admin.get("/api/arena/active").json()["pending_unloads"][0]["attempts"] >= 3, "no retries")
        [pending] = admin.get("/api/arena/active").json()["pending_unloads"]
        assert "503: engine is busy" in pending["error"] and set(vllm.loras) == {"cand-a", "cand-b", "cand-c"}
        vllm.unload_error = None
        wait_for(lambda: "pending_unloads" not in admin.get("/api/arena/active").json(), "pending unload never done")
        assert set(vllm.loras) == {"cand-a", "cand-c"}
    finally:
        srv.stop()


def test_activating_again_cancels_the_pending_unload(settings, vllm):
    add_candidates(settings, "cand-a", "cand-b")
    s = remote(settings, vllm)
    srv = LiveServer(s).start()
    try:
        admin = srv.client(admin=True)
        assert admin.post("/api/arena/active", json={"models": ["cand-a", "cand-b"]}).status_code == 200
        vllm.go_down()
        assert admin.post("/api/arena/active", json={"models": ["cand-b"], "active": False}).json()["warnings"]
        vllm.come_back()
        assert admin.post("/api/arena/active", json={"models": ["cand-b"]}).json() == {"active": ["cand-a", "cand-b"]}
        assert "pending_unloads" not in admin.get("/api/arena/active").json()
        report = on_store(s, lambda store: reconcile_adapters(store, s))
        assert report.unloaded == [] and report.present == ["cand-a", "cand-b"]
        assert set(vllm.loras) == {"cand-a", "cand-b"}
        assert not [path for path, _ in vllm.calls if path == "/v1/unload_lora_adapter"]
    finally:
        srv.stop()


def test_a_pending_unload_is_done_without_asking_when_the_server_no_longer_has_it(settings, vllm):
    paths = add_candidates(settings, "cand-a", "cand-b", "cand-c")
    s = remote(settings, vllm)

    async def retire_while_down(store):
        for name in ("cand-a", "cand-b", "cand-c"):
            await store.set_active(name, True)
        await reconcile_adapters(store, s)
        vllm.go_down()
        for name in ("cand-b", "cand-c"):
            await store.set_active(name, False)
        warnings = await unregister_candidates(store, s, ["cand-b", "cand-c"])
        return warnings, await store.pending_unloads()

    warnings, pending = on_store(s, retire_while_down)
    assert len(warnings) == 2 and [p.name for p in pending] == ["cand-b", "cand-c"]
    vllm.come_back()
    vllm.restart()  # it forgot every runtime adapter meanwhile ...
    vllm.loras["cand-c"] = "/somewhere/else"  # ... and someone loaded another cand-c: not ours to unload

    async def reconcile(store):
        return await reconcile_adapters(store, s), await store.pending_unloads()

    report, pending = on_store(s, reconcile)
    assert report.unloaded == [] and not report.unload_failed and pending == []
    assert report.loaded == ["cand-a"] and vllm.loras == {"cand-a": paths["cand-a"], "cand-c": "/somewhere/else"}
    assert not [path for path, _ in vllm.calls if path == "/v1/unload_lora_adapter"]


def test_the_next_retirement_retries_the_pending_ones(settings, vllm):
    add_candidates(settings, "cand-a", "cand-b", "cand-c")
    s = remote(settings, vllm)

    async def work(store):
        for name in ("cand-a", "cand-b", "cand-c"):
            await store.set_active(name, True)
        await reconcile_adapters(store, s)
        vllm.unload_error = (500, "unload failed: CUDA error")
        await store.set_active("cand-b", False)
        first = await unregister_candidates(store, s, ["cand-b"])
        vllm.unload_error = None
        await store.set_active("cand-c", False)
        second = await unregister_candidates(store, s, ["cand-c"])
        return first, second, await store.pending_unloads()

    first, second, pending = on_store(s, work)
    assert "refused to unload adapter 'cand-b' (500: unload failed: CUDA error)" in first[0]
    assert second == [] and pending == [] and set(vllm.loras) == {"cand-a"}


def test_the_cli_warns_lists_and_syncs_pending_unloads(settings, vllm):
    add_candidates(settings, "cand-a", "cand-b")
    s = remote(settings, vllm)
    assert arena(s, "activate", "cand-a", "cand-b").returncode == 0
    vllm.go_down()
    out = arena(s, "deactivate", "cand-b")
    assert out.returncode == 0, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert line.startswith(f"warning: generation server {vllm.url}") and "pending unload" in line
    assert out.stdout.strip() == "active: cand-a"

    out = arena(s, "adapters")
    assert out.returncode == 0, out.stderr
    assert f"generation server {vllm.url}: unreachable" in out.stdout
    assert "active   cand-a  unknown" in out.stdout and "retired  cand-b  unload pending since" in out.stdout
    out = arena(s, "adapters", "--sync")  # still down: it says so, and exits 1
    assert out.returncode == 1 and "cand-b" in out.stderr and "Traceback" not in out.stderr
    assert ", 2 attempts: generation server" in out.stdout  # the record's count, then vLLM's last answer

    vllm.come_back()
    out = arena(s, "adapters", "--sync")
    assert out.returncode == 0, out.stderr
    assert "unloaded retired cand-b" in out.stdout and "active   cand-a  loaded" in out.stdout
    assert "retired" not in out.stdout.replace("unloaded retired", "")
    shown = json.loads(arena(s, "adapters", "--json").stdout)
    assert shown == {"server": vllm.url, "unreachable": None, "active": {"cand-a": "loaded"}, "pending_unloads": []}
    assert set(vllm.loras) == {"cand-a"}

    without = msgspec.structs.replace(s, generation_url=None)
    out = arena(without, "adapters")
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        "error: ARENA_GENERATION_URL is not set: adapters are loaded in this process, there is no generation server "
        "to follow the arena"]


def test_a_pending_unload_kept_under_another_url_is_asked_of_the_server_configured_now(settings, vllm):
    from service.domain import PendingUnload

    paths = add_candidates(settings, "cand-a", "cand-b")
    s = remote(settings, vllm)
    vllm.loras.update({"cand-a": paths["cand-a"], "cand-b": paths["cand-b"]})

    async def work(store):
        await store.set_active("cand-a", True)
        await store.keep_pending_unload(PendingUnload(name="cand-b", path=paths["cand-b"], server="http://vllm:8000",
                                                      since=1.0, error="unreachable"))
        return await reconcile_adapters(store, s), await store.pending_unloads()

    report, pending = on_store(s, work)  # the same server, now configured as 127.0.0.1:PORT
    assert report.unloaded == ["cand-b"] and report.present == ["cand-a"] and pending == []
    assert vllm.loras == {"cand-a": paths["cand-a"]}
