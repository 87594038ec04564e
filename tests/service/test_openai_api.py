"""The OpenAI-compatible API over real HTTP on loopback: models, chat and completions
(plain and streamed), the official `openai` client, bad input, the Redis answer cache,
concurrent requests over several adapters, and `RemoteBackend` against `arena serve`
running as a separate process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import msgspec
import openai
import pytest

from evaluators.records import Conversation, Message, user_turn
from service.errors import NotFound, Unavailable
from service.generation import GenerationParams, GenItem, RemoteBackend, cache_key
from service.serving import Serving
from service.store import Store, SyncStore
from tests.redis_fixtures import free_port, settings_env
from tests.service.serving_fixtures import MODELS, adapter_dirs, alone, reverse_adapter, served  # noqa: F401

PROMPTS = [
    "Which word comes second in: amber birch cedar?",
    "Reverse the order of: delta ember fjord",
    "Give the first two words of: grove heron amber birch",
    "hello",
]
GREEDY = GenerationParams(max_new_tokens=12)


def chat_body(model: str, prompt: str, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 12, **extra}


def sse_data(response: httpx.Response) -> list[str]:
    """The `data:` payloads of an SSE response, in order."""
    assert response.headers["content-type"].startswith("text/event-stream")
    return [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]


API_KEY = "key-for-tests"


@pytest.fixture
def settings(settings):
    """The shared settings plus an `ARENA_API_KEYS` key: every /v1 route needs a key."""
    return msgspec.structs.replace(settings, api_keys=f"other-key, {API_KEY}")


@pytest.fixture
def server(live_server, served):
    return live_server


def keyed(server) -> httpx.Client:
    """A client sending one of `ARENA_API_KEYS`, as any OpenAI client would."""
    client = server.client()
    client.headers["Authorization"] = f"Bearer {API_KEY}"
    return client


def test_every_route_needs_an_api_key(server):
    anonymous = server.client()
    routes = [("GET", "/v1/models", None), ("GET", "/v1/models/cand-a", None),
              ("POST", "/v1/chat/completions", chat_body("cand-a", "hi")),
              ("POST", "/v1/completions", {"model": "cand-a", "prompt": "hi", "max_tokens": 4})]
    for method, path, body in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_KEY}"}):
            r = anonymous.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            assert "need an API key" in r.json()["detail"] and r.json()["error"]["code"] == "invalid_api_key"
    # The admin token is a key too.
    assert server.client(admin=True).get("/v1/models").status_code == 200
    assert keyed(server).get("/v1/models").status_code == 200


def test_models_lists_candidates_and_bases(server):
    client = keyed(server)
    listing = client.get("/v1/models").json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == MODELS
    by_id = {m["id"]: m for m in listing["data"]}
    assert by_id["cand-a"]["parent"] == "tiny" and by_id["tiny"]["parent"] is None
    assert by_id["cand-a"]["max_model_len"] == 1024
    assert client.get("/v1/models/cand-b").json()["id"] == "cand-b"
    missing = client.get("/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["available"] == MODELS


def test_chat_and_completions_plain_and_streamed_give_the_answer_generated_alone(server, alone):
    client = keyed(server)
    for model in MODELS:
        expected = alone(GenItem(model=model, prompt=user_turn(PROMPTS[0]), params=GREEDY))
        # Streamed first, so the stream is not just the cached answer replayed.
        with client.stream("POST", "/v1/chat/completions", json=chat_body(model, PROMPTS[0], stream=True,
                                                                           stream_options={"include_usage": True})) as r:
            assert r.status_code == 200
            events = sse_data(r)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert all(c["object"] == "chat.completion.chunk" and c["model"] == model for c in chunks)
        assert len({c["id"] for c in chunks}) == 1
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == expected.finish_reason
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == expected.completion_tokens

        r = client.post("/v1/chat/completions", json=chat_body(model, PROMPTS[0]))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "chat.completion" and body["model"] == model and body["id"].startswith("chatcmpl-")
        choice = body["choices"][0]
        assert choice["message"] == {"role": "assistant", "content": expected.text} == {"role": "assistant", "content": streamed}
        assert choice["finish_reason"] == expected.finish_reason
        assert body["usage"] == {"prompt_tokens": expected.prompt_tokens, "completion_tokens": expected.completion_tokens,
                                 "total_tokens": expected.prompt_tokens + expected.completion_tokens}

    # /v1/completions sends the prompt as is: no chat template.
    raw = "User:Reverse the order of: amber birch</s>\n Assistant:"
    expected = alone(GenItem(model="cand-b", prompt=raw, params=GenerationParams(max_new_tokens=10)))
    request = {"model": "cand-b", "prompt": raw, "max_tokens": 10, "temperature": 0}
    with client.stream("POST", "/v1/completions", json=request | {"stream": True}) as r:
        events = sse_data(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == expected.text
    assert chunks[-1]["choices"][0]["finish_reason"] == expected.finish_reason
    body = client.post("/v1/completions", json=request).json()
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == expected.text
    assert body["usage"]["prompt_tokens"] == expected.prompt_tokens


def test_the_official_openai_client_works_unchanged(server, alone):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)
    assert sorted(m.id for m in client.models.list()) == MODELS
    conversation = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": PROMPTS[1]}]
    expected = alone(GenItem(model="cand-b", params=GREEDY, prompt=Conversation(
        messages=(Message("system", "Answer briefly."), Message("user", PROMPTS[1])))))
    answer = client.chat.completions.create(model="cand-b", messages=conversation, temperature=0, max_tokens=12)
    assert answer.choices[0].message.content == expected.text
    assert answer.usage.completion_tokens == expected.completion_tokens
    stream = client.chat.completions.create(model="cand-b", messages=conversation, temperature=0, max_tokens=12, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == expected.text
    completion = client.completions.create(model="cand-a", prompt="the fox", temperature=0, max_tokens=8)
    assert completion.choices[0].text == alone(GenItem(model="cand-a", prompt="the fox", params=GenerationParams(max_new_tokens=8))).text
    # Sampling with a seed is reproducible; `stop` cuts the text.
    sampled = [client.chat.completions.create(model="cand-a", messages=conversation, temperature=1.2, top_p=0.9, seed=7,
                                              max_tokens=12, extra_body={"no_cache": True}).choices[0].message.content
               for _ in range(2)]
    assert sampled[0] == sampled[1] == alone(GenItem(model="cand-a", prompt=Conversation(messages=(
        Message("system", "Answer briefly."), Message("user", PROMPTS[1]))),
        params=GenerationParams(max_new_tokens=12, temperature=1.2, top_p=0.9, seed=7))).text
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=conversation)
    assert "cand-a, cand-b, tiny" in str(missing.value)
    with pytest.raises(openai.BadRequestError, match="only n=1"):
        client.chat.completions.create(model="cand-a", messages=conversation, n=2)


def test_bad_input_gets_the_right_status_and_says_what_is_wrong(server):
    client = keyed(server)
    for path, body in (("/v1/chat/completions", chat_body("nope", "hi")),
                       ("/v1/completions", {"model": "nope", "prompt": "hi"})):
        r = client.post(path, json=body)
        assert r.status_code == 404, r.text
        problem = r.json()
        assert problem["available"] == MODELS and "cand-a, cand-b, tiny" in problem["detail"]
        assert problem["error"]["code"] == "model_not_found" and "nope" in problem["error"]["message"]

    too_long = client.post("/v1/chat/completions", json=chat_body("cand-a", "word " * 1500, max_tokens=16))
    assert too_long.status_code == 400
    assert too_long.json()["limit"] == 1024 - 16 and "the limit for cand-a is 1008" in too_long.json()["detail"]
    too_long = client.post("/v1/completions", json={"model": "tiny", "prompt": "word " * 1500, "max_tokens": 16})
    assert too_long.status_code == 400 and "limit" in too_long.json()["detail"]
    huge = client.post("/v1/completions", json={"model": "tiny", "prompt": "w" * 200_000, "max_tokens": 16})
    assert huge.status_code == 400 and "ARENA_MAX_PROMPT_CHARS" in huge.json()["detail"]  # refused before tokenizing

    over_cap = client.post("/v1/chat/completions", json=chat_body("cand-a", "hi", max_tokens=513))
    assert over_cap.status_code == 400 and over_cap.json()["limit"] == 512
    assert over_cap.json()["detail"] == "max_tokens=513 is over the limit of 512; ask for 512 or fewer"
    over_cap = client.post("/v1/chat/completions", json=chat_body("cand-a", "hi", max_completion_tokens=10_000))
    assert over_cap.status_code == 400 and "max_completion_tokens=10000" in over_cap.json()["detail"]

    for extra, says in (({"n": 3}, "only n=1"), ({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"),
                        ({"stop": ["a", "b", "c", "d", "e"]}, "at most 4"), ({"logprobs": True}, "logprobs"),
                        ({"messages": []}, "messages is empty"),
                        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
                        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, "last message"),
                        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "only text parts"),
                        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content is null"),
                        ({"response_format": {"type": "json_object"}}, "response_format type 'json_object'")):
        r = client.post("/v1/chat/completions", json=chat_body("cand-a", "hi") | extra)
        assert r.status_code == 400, (extra, r.text)
        assert says in r.json()["detail"], (extra, r.json())
    r = client.post("/v1/completions", json={"model": "cand-a", "prompt": ["a", "b"]})
    assert r.status_code == 400 and "one string" in r.json()["detail"]
    for path, body in (("/v1/chat/completions", chat_body("cand-a", "hi")), ("/v1/completions", {"model": "cand-a", "prompt": "hi"})):
        for stream in (False, True):  # a seed torch cannot take: 400 before any generation (it was a 500, or an error mid-stream)
            r = client.post(path, json=body | {"seed": 2**64, "temperature": 1.0, "max_tokens": 2, "stream": stream})
            assert r.status_code == 400 and "seed" in r.text, r.text
    assert client.post("/v1/chat/completions", json=chat_body("cand-a", "hi", max_tokens=2)
                       | {"response_format": {"type": "text"}}).status_code == 200
    # Every failure on /v1 carries OpenAI's `error` object beside the problem details, the
    # body's own shape too (it was only on the errors the routes raise).
    for r in (client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}),
              client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "no model"}]}),
              client.post("/v1/chat/completions", json=[[[[1]]]]),
              client.get("/v1/nothing-here"),
              client.post("/v1/chat/completions", json=chat_body("cand-a", "x" * 2_000_000))):
        assert 400 <= r.status_code < 500 and r.json()["error"]["message"] == r.json()["detail"], (r.status_code, r.text[:300])
        assert r.json()["error"]["type"] == "invalid_request_error"
    assert "model" in client.post("/v1/chat/completions", json={"messages": []}).json()["error"]["message"]
    # A body labelled as something else than JSON (curl -d without -H, a form, a "simple"
    # cross-site text/plain request) is a 415 saying what to send, as vLLM refuses it.
    body = json.dumps(chat_body("cand-a", "hi", max_tokens=2)).encode()
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        for path in ("/v1/chat/completions", "/v1/completions"):
            r = client.post(path, content=body, headers={"content-type": kind})
            assert r.status_code == 415 and "Content-Type: application/json" in r.json()["error"]["message"], r.text
    for kind in ("application/json; charset=utf-8", "application/vnd.api+json", None):
        headers = {"content-type": kind} if kind else {}
        r = client.post("/v1/chat/completions", content=body, headers=headers)
        assert r.status_code == 200, (kind, r.text)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as bad:  # the message the official client shows is ours
        client.chat.completions.create(model="cand-a", messages=[{"role": "user", "content": "q"}], max_tokens="many")
    assert bad.value.message.startswith("Error code: 400") and "max_tokens" in bad.value.message


def test_answers_are_cached_in_redis_and_no_cache_regenerates(server, settings):
    serving = server.app.state.serving
    calls = []
    generate = serving.backend.generate
    serving.backend.generate = lambda items: calls.append([i.model for i in items]) or generate(items)
    client = keyed(server)

    first = client.post("/v1/chat/completions", json=chat_body("cand-a", PROMPTS[2])).json()
    assert calls == [["cand-a"]]
    again = client.post("/v1/chat/completions", json=chat_body("cand-a", PROMPTS[2])).json()
    assert calls == [["cand-a"]], "the second identical request generated again"
    assert again["choices"] == first["choices"] and again["usage"] == first["usage"] and again["id"] != first["id"]
    # The answer is in Redis under (candidate's run id, rendered prompt, params).
    rendered = serving.backend.render("cand-a", user_turn(PROMPTS[2]))
    key = cache_key("run-cand-a", rendered, GenerationParams(max_new_tokens=12))
    store = SyncStore(settings.redis_url, settings.key_prefix)
    try:
        assert store.cache_get(key)["text"] == first["choices"][0]["message"]["content"]
    finally:
        store.close()

    client.post("/v1/chat/completions", json=chat_body("cand-a", PROMPTS[2], no_cache=True))
    assert len(calls) == 2
    # A different params set is a different answer; unseeded sampling is never cached.
    client.post("/v1/chat/completions", json=chat_body("cand-a", PROMPTS[2], max_tokens=11))
    assert len(calls) == 3
    for _ in range(2):
        client.post("/v1/chat/completions", json=chat_body("cand-a", PROMPTS[2], temperature=0.8))
    assert len(calls) == 5


async def test_32_concurrent_requests_over_3_models_each_get_the_answer_generated_alone(server, alone):
    backend = server.app.state.serving.backend
    batches: list[list[str]] = []  # the models of each forward batch's rows
    generate_rows = backend._generate_rows
    backend._generate_rows = lambda base, rows: batches.append([r.item.model for r in rows]) or generate_rows(base, rows)
    jobs = [(MODELS[i % 3], f"{PROMPTS[i % 4]} {i}") for i in range(32)]
    async with httpx.AsyncClient(base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        responses = await asyncio.gather(*(
            client.post("/v1/chat/completions", json=chat_body(model, prompt, no_cache=True)) for model, prompt in jobs
        ))
    for (model, prompt), response in zip(jobs, responses):
        assert response.status_code == 200, response.text
        expected = alone(GenItem(model=model, prompt=user_turn(prompt), params=GREEDY))
        assert response.json()["choices"][0]["message"]["content"] == expected.text, (model, prompt)
    assert sum(map(len, batches)) == 32
    assert any(len(set(models)) > 1 for models in batches), f"no batch mixed adapters: {batches}"


async def test_remote_backend_against_arena_serve_in_another_process(settings, served, alone, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = settings_env(settings) | {"ARENA_HOST": "127.0.0.1", "ARENA_PORT": str(port)}
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "service.cli.__main__", "serve", "--no-worker"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    store = Store.from_url(settings.redis_url, settings.key_prefix)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            await asyncio.sleep(0.2)

        # The other process knows the admin token (ARENA_ADMIN_TOKEN), a valid API key there.
        remote = Serving(msgspec.structs.replace(settings, generation_url=f"{url}/v1", generation_api_key=settings.admin_token), store)
        assert isinstance(remote.backend, RemoteBackend)
        assert await remote.model_names() == MODELS
        assert remote.backend.context_length("cand-b") == 1024
        items = [GenItem(model=MODELS[i % 3], prompt=user_turn(p), params=GREEDY) for i, p in enumerate(PROMPTS)]
        items.append(GenItem(model="cand-b", prompt="User:Reverse the order of: amber birch</s>\n Assistant:",
                             params=GenerationParams(max_new_tokens=10, stop=["birch"])))
        answers = await remote.generate(items, use_cache=False)
        assert answers == [alone(item) for item in items]

        with pytest.raises(NotFound) as missing:
            await remote.generate([GenItem(model="nope", prompt="hi")])
        assert f"'nope' is not served by {url}; available: cand-a, cand-b, tiny" in missing.value.message
        remote.close()  # what the app's lifespan does on shutdown
        assert remote.backend._client.is_closed

        dead_url = f"http://127.0.0.1:{free_port()}"
        dead = Serving(msgspec.structs.replace(settings, generation_url=dead_url), store,
                       backend=RemoteBackend(dead_url, retries=1, backoff_s=0.05, timeout=2))
        with pytest.raises(Unavailable, match="unreachable after 2 attempts.*ARENA_GENERATION_URL"):
            await dead.generate(items[:1])
        dead.backend.close()
    finally:
        await store.close()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
