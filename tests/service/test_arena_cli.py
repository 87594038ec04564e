"""The arena's commands as a user runs them: prompts, activation, reviewers, judge."""

from __future__ import annotations

import json
import subprocess
import sys

import msgspec
import pytest

from tests.redis_fixtures import LiveServer, fresh_board, settings_env
from tests.scripted_openai import ScriptedOpenAI

ANSWERS = {"alpha": lambda p: "The answer is 4.", "beta": lambda p: "The answer is 5."}


def arena(env, *args):
    return subprocess.run([sys.executable, "-m", "service.cli", *args], env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture
def running(settings):
    scripted = ScriptedOpenAI(ANSWERS).start()
    s = msgspec.structs.replace(settings, generation_url=scripted.url, min_vote_s=0.0)  # votes come at once here
    server = LiveServer(s, worker=True).start()
    yield server, settings_env(s)
    server.stop()
    scripted.stop()


def test_prompts_activation_reviewers_and_judge_from_the_cli(running, tmp_path):
    server, env = running
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "What is 2 + 2?", "reference": "The answer is 4.", "category": "math"}\n{"text": "Say hi."}\n')
    out = arena(env, "prompts", "add", str(prompts))
    assert out.returncode == 0 and "added 2 prompts (1 with references); the pool has 2" in out.stdout, out.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"answer": "no prompt"}\n')
    out = arena(env, "prompts", "add", str(bad))
    assert out.returncode == 1 and "bad.jsonl:2: no prompt" in out.stderr
    assert "2 prompts in the pool" in arena(env, "prompts", "list").stdout

    # A dataset's held-out split.
    admin = server.client(admin=True)
    rows = "\n".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) for i in range(10))
    assert admin.post("/api/datasets", files={"file": ("d.jsonl", rows.encode())}, data={"name": "qa"}).status_code == 201
    out = arena(env, "prompts", "add", "--dataset", "qa")
    assert out.returncode == 1 and "no held-out split" in out.stderr
    assert admin.post("/api/datasets/qa/split", json={"test_fraction": 0.3, "seed": 0}).status_code == 200
    out = arena(env, "prompts", "add", "--dataset", "qa", "--category", "qa")
    assert out.returncode == 0 and "added 3 prompts (3 with references); the pool has 5" in out.stdout, out.stderr

    out = arena(env, "activate", "alpha", "nope")
    assert out.returncode == 1 and "unknown model 'nope'" in out.stderr
    out = arena(env, "activate", "alpha", "beta")
    assert out.returncode == 0 and "active: alpha, beta" in out.stdout

    out = arena(env, "reviewers", "invite", "ann")
    assert out.returncode == 0, out.stderr
    token = out.stdout.split("token ", 1)[1].split()[0]
    ann = server.client()
    ann.headers["X-Reviewer-Token"] = token
    battle = ann.post("/api/battles").json()
    assert ann.post(f"/api/battles/{battle['id']}/vote", json={"choice": "a"}).status_code == 200
    listed = json.loads(arena(env, "reviewers", "list", "--json").stdout)
    assert {"reviewer": "ann", "votes": 1, "excluded": False} in listed
    out = arena(env, "reviewers", "exclude", "ann")
    assert out.returncode == 0 and "counted 0 human" in out.stdout
    assert fresh_board(admin)["n_battles"] == 0
    # Revoking the invite: the token stops working at once, for battles and votes alike.
    battle = ann.post("/api/battles").json()
    out = arena(env, "reviewers", "revoke", "ann")
    assert out.returncode == 0 and "revoked 1 invite token of ann" in out.stdout, out.stderr
    for r in (ann.post("/api/battles"), ann.post(f"/api/battles/{battle['id']}/vote", json={"choice": "a"})):
        assert r.status_code == 401 and "revoked" in r.json()["detail"]
    out = arena(env, "reviewers", "revoke", "ann")
    assert out.returncode == 1 and "holds no invite token" in out.stderr

    out = arena(env, "judge", "--judge", "reference", "--candidates", "alpha,beta", "--prompts", str(prompts), "--wait", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)["result"]
    assert result["judge"] == "reference:token_f1" and result["observations"] == 2 and result["errors"] == 2
    board = fresh_board(admin, "/api/leaderboard?board=judge")
    assert board["rows"][0]["model"] == "alpha"

    out = arena(env, "judge", "--judge", "http://127.0.0.1:9/v1", "--candidates", "alpha,beta")
    assert out.returncode == 1 and "--judge-model" in out.stderr
    out = arena(env, "judge", "--judge", "reference:bleu", "--candidates", "alpha,beta")
    assert out.returncode == 1 and "not one of token_f1" in out.stderr


def test_suspicious_reviewers_from_the_log_cli_and_api(settings):
    from service.store import SyncStore
    from tests.arena.test_screening import _simulate

    store = SyncStore(settings.redis_url, settings.key_prefix)
    logged = [{"model_a": v.model_a, "model_b": v.model_b, "winner": v.winner, "judge": v.reviewer, "reviewer": v.reviewer,
               "tstamp": 1.0, "time_to_vote_s": v.time_to_vote_s,
               "conversation_a": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x" * (v.answer_chars // 2)}],
               "conversation_b": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "y" * (v.answer_chars // 2)}]}
              for v in _simulate(0, honest=12)]
    store.record_observations(logged, board="human")
    store.close()
    out = arena(settings_env(settings), "reviewers", "suspicious", "--json")
    assert out.returncode == 0, out.stderr
    flagged = {row["reviewer"]: {r["check"] for r in row["reasons"]} for row in json.loads(out.stdout)}
    assert {"random", "always-a", "contrarian", "tie-all", "speed"} <= set(flagged), flagged
    assert not [r for r in flagged if r.startswith("honest-")]
    text = arena(settings_env(settings), "reviewers", "suspicious").stdout
    assert "always-a (100 votes):" in text and "side A in 100%" in text
    server = LiveServer(settings).start()
    try:
        assert server.client().get("/api/reviewers/suspicious").status_code == 401
        rows = server.client(admin=True).get("/api/reviewers/suspicious").json()
        assert {row["reviewer"] for row in rows} == set(flagged)
    finally:
        server.stop()
