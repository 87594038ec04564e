"""A judge request cannot choose which secret the worker sends, nor where: the key is the
server's (ARENA_JUDGE_API_KEY or a named profile), and ARENA_JUDGE_ALLOWED_HOSTS bounds
the URLs. Real HTTP to the service and to a scripted OpenAI-compatible judge on loopback."""

from __future__ import annotations

import json

import msgspec
import pytest

from tests.redis_fixtures import LiveServer
from tests.scripted_openai import ScriptedOpenAI
from tests.service.test_judging import wait_job

ANSWERS = {"alpha": lambda prompt: "4", "beta": lambda prompt: "5"}
JUDGES = {"judge-a": lambda messages: "A is better. [[A]]"}
PROMPTS = [{"prompt": "What is 2 + 2?", "reference": "4"}]


@pytest.fixture(scope="module")
def endpoint():
    server = ScriptedOpenAI(ANSWERS, JUDGES).start()
    yield server
    server.stop()


def _serve(settings, endpoint, **overrides) -> LiveServer:
    s = msgspec.structs.replace(settings, generation_url=endpoint.url, judge_api_key="server-judge-key", **overrides)
    return LiveServer(s, worker=True).start()


def _judge_keys(endpoint) -> list[str | None]:
    return [c["authorization"] for c in endpoint.calls if c["body"].get("model") in JUDGES]


def test_a_request_cannot_name_the_secret_sent(settings, endpoint):
    srv = _serve(settings, endpoint)
    try:
        admin = srv.client(admin=True)
        body = {"judge": endpoint.url + "/v1", "judge_model": "judge-a", "candidates": ["alpha", "beta"], "prompts": PROMPTS}
        # The old exfiltration: ask the worker to send its admin token to the judge URL.
        r = admin.post("/api/judge", json={**body, "api_key_env": "ARENA_ADMIN_TOKEN"})
        assert r.status_code in (400, 422) and "api_key_env" in r.text
        assert admin.get("/api/judge").json() == []  # nothing was enqueued
        endpoint.calls.clear()
        r = admin.post("/api/judge", json=body)
        assert r.status_code == 202, r.text
        job = wait_job(admin, r.json()["id"])
        assert job["status"] == "succeeded", job["error"]
        keys = _judge_keys(endpoint)
        assert keys and set(keys) == {"Bearer server-judge-key"}  # the server's key, only
        assert "server-judge-key" not in json.dumps(admin.get("/api/judge").json())  # never in params or results
    finally:
        srv.stop()


def test_judge_hosts_are_restricted_and_profiles_carry_their_own_key(settings, endpoint):
    profiles = json.dumps({"house": {"url": endpoint.url + "/v1", "model": "judge-a", "api_key": "profile-key"}})
    srv = _serve(settings, endpoint, judge_allowed_hosts="judges.internal:443,127.0.0.1", judge_profiles=profiles)
    try:
        admin = srv.client(admin=True)
        outside = {"judge": "https://attacker.example/v1", "judge_model": "m", "candidates": ["alpha", "beta"],
                   "prompts": PROMPTS}
        r = admin.post("/api/judge", json=outside)
        assert r.status_code == 422 and "ARENA_JUDGE_ALLOWED_HOSTS" in r.json()["detail"]
        endpoint.calls.clear()
        r = admin.post("/api/judge", json={"judge": "house", "candidates": ["alpha", "beta"], "prompts": PROMPTS})
        assert r.status_code == 202, r.text
        job = wait_job(admin, r.json()["id"])
        assert job["status"] == "succeeded", job["error"]
        assert set(_judge_keys(endpoint)) == {"Bearer profile-key"}
        assert "profile-key" not in json.dumps(admin.get("/api/judge").json())
    finally:
        srv.stop()


def test_config_masks_judge_secrets(settings):
    s = msgspec.structs.replace(settings, judge_api_key="k1", judge_profiles='{"p": {"url": "https://x", "model": "m", "api_key": "k2"}}')
    shown = s.describe()
    assert shown["ARENA_JUDGE_API_KEY"] == "***" and shown["ARENA_JUDGE_PROFILES"] == "***"
    from service.config import parse_judge_profiles

    with pytest.raises(ValueError, match="profile 'p'") as caught:
        parse_judge_profiles('{"p": {"url": "file:///etc/passwd", "model": "m", "api_key": "secret"}}')
    assert "secret" not in str(caught.value)
