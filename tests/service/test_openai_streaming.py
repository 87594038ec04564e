"""`/v1` streams for real, over HTTP on loopback with the official `openai` client: text
arrives while the answer is still being generated (in process, and passed through from a
remote OpenAI-compatible server), the stream's text is the non-streamed answer, an
upstream failure mid-answer is an error the client raises, and a client that goes away
stops its generation."""

from __future__ import annotations

import threading
import time

import msgspec
import openai
import pytest

from evaluators.records import user_turn
from service.generation import GenerationParams, GenItem
from service.generation import _decoding
from tests.redis_fixtures import LiveServer
from tests.scripted_openai import ScriptedOpenAI
from tests.service.serving_fixtures import adapter_dirs, alone, reverse_adapter, served  # noqa: F401

API_KEY = "key-for-streaming-tests"
PROMPTS = ["Reverse the order of: delta ember fjord", "Give the first two words of: grove heron amber birch", "hello there"]
#: A raw prompt the tiny base continues until its budget (checked in the test that uses it).
ENDLESS = "a b a b a b a b a b a b"


@pytest.fixture
def settings(settings):
    return msgspec.structs.replace(settings, api_keys=API_KEY)


@pytest.fixture
def server(live_server, served):
    return live_server


def client_for(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=60)


def test_chunks_arrive_while_the_answer_is_still_being_generated(server, alone, monkeypatch):
    # A long enough greedy answer: more than four tokens, so generation can be held at its fourth.
    for prompt in PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        expected = alone(GenItem(model="cand-b", prompt=user_turn(prompt), params=GenerationParams(max_new_tokens=40)))
        if expected.completion_tokens >= 8:
            break
    else:
        pytest.fail("no prompt gave an answer of 8 tokens or more")

    # The generation thread stops at the 4th new token until the client has a content chunk
    # (or 20 s have passed): a server that sends only the finished answer keeps it waiting.
    seen_text = threading.Event()
    gate_opened: list[bool] = []
    original = _decoding.RowStops.__call__

    def held(self, input_ids, scores, **kwargs):
        if input_ids.shape[1] - self._width == 4 and not gate_opened:
            gate_opened.append(seen_text.wait(20))
        return original(self, input_ids, scores, **kwargs)

    monkeypatch.setattr(_decoding.RowStops, "__call__", held)
    stream = client_for(server).chat.completions.create(model="cand-b", messages=messages, temperature=0, max_tokens=40,
                                                        stream=True, extra_body={"no_cache": True})
    pieces, finish = [], []
    for chunk in stream:
        assert chunk.model == "cand-b" and chunk.object == "chat.completion.chunk"
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
            seen_text.set()
        if chunk.choices and chunk.choices[0].finish_reason:
            finish.append(chunk.choices[0].finish_reason)
    assert gate_opened == [True], "the first text reached the client only after generation had finished"
    assert len(pieces) > 1
    assert "".join(pieces) == expected.text and finish == [expected.finish_reason]
    # The same answer, not streamed, is the streamed text (greedy decoding).
    answer = client_for(server).chat.completions.create(model="cand-b", messages=messages, temperature=0, max_tokens=40)
    assert answer.choices[0].message.content == "".join(pieces)


def test_a_client_that_goes_away_stops_its_generation(server, alone, monkeypatch):
    budget = 500
    full = alone(GenItem(model="tiny", prompt=ENDLESS, params=GenerationParams(max_new_tokens=budget)))
    assert full.finish_reason == "length" and full.completion_tokens == budget  # it would run to the end

    steps: list[int] = []
    original = _decoding.RowStops.__call__

    def slow(self, input_ids, scores, **kwargs):  # 10 ms a token: the whole answer takes 5 s or more
        steps.append(input_ids.shape[1] - self._width)
        time.sleep(0.01)
        return original(self, input_ids, scores, **kwargs)

    monkeypatch.setattr(_decoding.RowStops, "__call__", slow)
    backend = server.app.state.serving.backend
    finished = []
    generate_rows = backend._generate_rows
    backend._generate_rows = lambda base, rows: finished.extend(generate_rows(base, rows)) or finished[-len(rows):]

    stream = client_for(server).completions.create(model="tiny", prompt=ENDLESS, temperature=0, max_tokens=budget,
                                                   stream=True, extra_body={"no_cache": True})
    received = 0
    for chunk in stream:
        received += len(chunk.choices[0].text) if chunk.choices else 0
        if received >= 5:
            break
    stream.close()  # the client goes away mid-answer
    deadline = time.monotonic() + 20
    while not finished and time.monotonic() < deadline:
        time.sleep(0.05)
    assert finished, "the generation did not end within 20 s of the client leaving"
    assert finished[0].completion_tokens < budget / 2 and max(steps) < budget / 2


def test_a_stop_string_never_shows_in_the_stream(server, alone):
    # A long stop string from the middle of the unstopped answer (it spans several tokens):
    # the stream must hold back its first tokens while they could still be the start of it.
    for prompt in PROMPTS:
        full = alone(GenItem(model="tiny", prompt=user_turn(prompt), params=GenerationParams(max_new_tokens=40)))
        if len(full.text) >= 16:
            break
    else:
        pytest.fail("no answer of 16 characters or more")
    stop = full.text[4:16]
    expected = alone(GenItem(model="tiny", prompt=user_turn(prompt), params=GenerationParams(max_new_tokens=40, stop=[stop])))
    assert expected.finish_reason == "stop" and expected.text == full.text[:4]
    stream = client_for(server).chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}],
                                                        temperature=0, max_tokens=40, stop=[stop], stream=True,
                                                        extra_body={"no_cache": True})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected.text


# --- a remote backend: the upstream's stream, passed through ------------------------------


@pytest.fixture
def upstream():
    words = "one two three four five six seven eight"
    server = ScriptedOpenAI({"lora-up": lambda prompt: words, "lora-broken": lambda prompt: words}).start()
    server.broken.add("lora-broken")
    yield server
    server.stop()


def test_a_remote_backends_stream_is_passed_through_as_it_arrives(settings, upstream):
    server = LiveServer(msgspec.structs.replace(settings, generation_url=upstream.url)).start()
    try:
        client = client_for(server)
        messages = [{"role": "user", "content": "count"}]
        plain = client.chat.completions.create(model="lora-up", messages=messages, temperature=0, max_tokens=16)
        assert plain.choices[0].message.content == "one two three four five six seven eight"

        # The upstream holds its second piece until our client has the first.
        upstream.stream_gate = seen = threading.Event()
        pieces, ids = [], set()
        for chunk in client.chat.completions.create(model="lora-up", messages=messages, temperature=0, max_tokens=16,
                                                    stream=True, extra_body={"no_cache": True}):
            assert chunk.model == "lora-up"
            ids.add(chunk.id)
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
                seen.set()
        assert upstream.gate_opened == [True], "the first upstream piece reached the client only at the end"
        assert "".join(pieces) == plain.choices[0].message.content and len(pieces) > 1
        assert len(ids) == 1 and ids.pop().startswith("chatcmpl-") and "chatcmpl-test" not in ids  # our id, not the upstream's
        assert upstream.calls[-1]["body"]["stream"] is True

        # An upstream that fails mid-answer: the client raises, saying what happened.
        upstream.stream_gate = None
        with pytest.raises(openai.APIError, match="failed in the middle of the answer: CUDA out of memory"):
            for _ in client.chat.completions.create(model="lora-broken", messages=messages, temperature=0, max_tokens=16,
                                                    stream=True, extra_body={"no_cache": True}):
                pass
        # A refusal before the stream starts keeps its status.
        with pytest.raises(openai.NotFoundError, match="lora-up"):
            client.chat.completions.create(model="nope", messages=messages, stream=True)
    finally:
        server.stop()
