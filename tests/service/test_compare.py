"""Side by side: `POST /api/compare` and `arena compare` give every candidate's answer to one
prompt in one call, from the cache the second time, and say what is wrong with bad input."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from evaluators.records import user_turn
from service.cli.compare import compare_cmd
from service.generation import GenerationParams, GenItem
from tests.redis_fixtures import settings_env
from tests.service.serving_fixtures import MODELS, adapter_dirs, alone, reverse_adapter, served  # noqa: F401

PROMPT = "Reverse the order of: amber birch cedar"


def test_compare_returns_every_answer_and_caches_them(live_server, served, alone):
    serving = live_server.app.state.serving
    calls = []
    generate = serving.backend.generate
    serving.backend.generate = lambda items: calls.append([i.model for i in items]) or generate(items)
    client = live_server.client(admin=True)  # the admin token is an API key

    request = {"prompt": PROMPT, "candidates": MODELS, "params": {"max_new_tokens": 10}}
    r = client.post("/api/compare", json=request)
    assert r.status_code == 200, r.text
    result = r.json()
    assert [a["candidate"] for a in result["answers"]] == MODELS
    for answer in result["answers"]:
        expected = alone(GenItem(model=answer["candidate"], prompt=user_turn(PROMPT), params=GenerationParams(max_new_tokens=10)))
        assert (answer["text"], answer["finish_reason"], answer["completion_tokens"]) == (
            expected.text, expected.finish_reason, expected.completion_tokens)
    assert len({a["text"] for a in result["answers"]}) == 3, "the candidates should answer differently"
    assert calls == [MODELS], "the three answers should be generated in one call (shared batches)"
    assert result["params"]["max_new_tokens"] == 10 and result["params"]["temperature"] == 0

    assert client.post("/api/compare", json=request).json()["answers"] == result["answers"]
    assert len(calls) == 1, "the second comparison should come from the cache"
    client.post("/api/compare", json=request | {"no_cache": True})
    assert calls[-1] == MODELS and len(calls) == 2


def test_compare_bad_input(live_server, served):
    client = live_server.client()
    r = client.post("/api/compare", json={"prompt": "hi", "candidates": ["cand-a"]})
    assert r.status_code == 401 and "need an API key" in r.json()["detail"]  # a named candidate's answer unmasks battles
    client = live_server.client(admin=True)
    missing = client.post("/api/compare", json={"prompt": "hi", "candidates": ["cand-a", "nope"]})
    assert missing.status_code == 404 and missing.json()["available"] == MODELS
    for body, says in (({"prompt": " ", "candidates": ["cand-a"]}, "prompt is empty"),
                       ({"prompt": "hi", "candidates": []}, "at least one"),
                       ({"prompt": "hi", "candidates": ["cand-a", "cand-a"]}, "cand-a named more than once"),
                       ({"prompt": "hi", "candidates": ["cand-a"], "params": {"max_new_tokens": 513}}, "over the limit of 512"),
                       ({"prompt": "hi", "candidates": ["cand-a"], "params": {"temperature": -1}}, "temperature"),
                       ({"prompt": "hi", "candidates": ["cand-a"], "params": {"beams": 4}}, "beams"),
                       ({"prompt": "word " * 1500, "candidates": ["cand-a"]}, "the limit for cand-a is 896")):
        r = client.post("/api/compare", json=body)
        assert r.status_code == 422, (body, r.text)
        assert says in r.json()["detail"], (body, r.json())


def test_arena_compare_prints_answers_side_by_side(settings, served, alone):
    env = settings_env(settings)
    params = GenerationParams(max_new_tokens=10)
    expected = {m: alone(GenItem(model=m, prompt=user_turn(PROMPT), params=params)).text for m in MODELS}
    python = [sys.executable, "-m", "service.cli.__main__", "compare", "--prompt", PROMPT, "--max-new-tokens", "10"]
    result = subprocess.run([*python, "--candidates", ",".join(MODELS), "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert {a["candidate"]: a["text"] for a in json.loads(result.stdout)["answers"]} == expected

    shown = CliRunner(env=env).invoke(compare_cmd, ["--prompt", PROMPT, "--candidates", "cand-a,cand-b", "--max-new-tokens", "10"])
    assert shown.exit_code == 0, shown.output
    header = next(line for line in shown.output.splitlines() if "cand-a" in line)
    assert "cand-b" in header, "the panels should sit side by side"
    for name in ("cand-a", "cand-b"):
        assert expected[name].split()[0] in shown.output

    unknown = subprocess.run([*python, "--candidates", "cand-a,nope"], env=env, capture_output=True, text=True, timeout=300)
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "error: unknown model 'nope'; available: cand-a, cand-b, tiny"
