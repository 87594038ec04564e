"""Generation backends: mixed-adapter batches give exactly the answers generated alone,
under concurrency and adapter eviction; params, limits and errors say what is wrong; the
remote backend retries, and reports a missing model or a dead server clearly.

The model is a tiny random Llama with a byte-level tokenizer trained here, and three
LoRA adapters with different random weights, so every candidate answers differently.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgspec
import pytest
import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from evaluators.records import PLAIN_CHAT_TEMPLATE, Conversation, Message, render_plain, user_turn
from service.errors import InvalidInput, NotFound, Unavailable
from service.generation import (
    GenerationParams,
    GenItem,
    InProcessBackend,
    LoglikelihoodItem,
    RemoteBackend,
    RollingItem,
    backend_from_settings,
    cache_key,
)
from service.config import Settings

hf_logging.disable_progress_bar()
# Building adapters with get_peft_model trips a transformers deprecation inside peft.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

CONTEXT = 128
PROMPTS = ["hi", "what is two plus two?", "name a colour please", "the fox", "tell me a story about a dog"]
CANDIDATES = ["cand-a", "cand-b", "cand-c"]


def _build_tiny(root: Path) -> tuple[Path, dict[str, Path]]:
    corpus = [
        "User:what is two plus two?</s>\n Assistant:four</s>\n ",
        "User:name a colour</s>\n Assistant:blue, green and red are colours</s>\n ",
        "the quick brown fox jumps over the lazy dog. once upon a time there was a story.",
    ] * 20
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="</s>", pad_token="<pad>", chat_template=PLAIN_CHAT_TEMPLATE
    )
    base = root / "base"
    tokenizer.save_pretrained(base)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT,
        initializer_range=0.3,  # peaked logits: greedy choices are far from ties
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(base)
    adapters = {}
    for seed, name in enumerate(CANDIDATES):
        torch.manual_seed(100 + seed)
        model = AutoModelForCausalLM.from_pretrained(base)
        lora = LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"], init_lora_weights=False
        )
        get_peft_model(model, lora).save_pretrained(root / name)
        adapters[name] = root / name
    return base, adapters


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    return _build_tiny(tmp_path_factory.mktemp("generation"))


def _backend(tiny, **kwargs) -> InProcessBackend:
    base, adapters = tiny
    backend = InProcessBackend(device="cpu", **kwargs)  # float32: batched == alone exactly
    for name, path in adapters.items():
        backend.register(name, base, path)
    backend.register_base("base", base)
    return backend


@pytest.fixture(scope="module")
def backend(tiny) -> InProcessBackend:
    return _backend(tiny)


def _items(models, prompts=PROMPTS, **params) -> list[GenItem]:
    return [
        GenItem(model=m, prompt=user_turn(p), params=GenerationParams(max_new_tokens=16, **params))
        for p in prompts
        for m in models
    ]


@pytest.fixture(scope="module")
def alone(backend) -> dict[tuple[str, str], str]:
    """Every (model, prompt) answer generated on its own: the reference."""
    return {(i.model, i.prompt.prompt): backend.generate([i])[0].text for i in _items([*CANDIDATES, "base"])}


# -- in-process: correctness of mixed batches ---------------------------------------------


def test_mixed_adapter_batch_equals_each_answer_generated_alone(backend, alone):
    items = _items([*CANDIDATES, "base"])
    batch = backend.generate(items)
    assert [g.text for g in batch] == [alone[(i.model, i.prompt.prompt)] for i in items]
    assert [g.model for g in batch] == [i.model for i in items]
    # The adapters really differ, so the equality above could fail.
    for prompt in PROMPTS:
        assert len({alone[(m, prompt)] for m in [*CANDIDATES, "base"]}) == 4
    assert all(g.completion_tokens <= 16 and g.prompt_tokens > 0 for g in batch)


def test_base_rows_equal_the_bare_base_model(tiny, backend, alone):
    base_dir, _ = tiny
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="eager").eval()
    for prompt in PROMPTS[:3]:
        text = render_plain(user_turn(prompt), add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        expected = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        assert alone[("base", prompt)] == expected


def test_concurrent_callers_each_get_their_own_answer(backend, alone):
    items = _items([*CANDIDATES, "base"])
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def caller(worker: int) -> None:
        mine = items[worker::8] * 2  # several adapters per caller, some repeated
        try:
            start.wait()
            results[worker] = [g.text for g in backend.generate(mine)]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    for worker in range(8):
        mine = items[worker::8] * 2
        assert results[worker] == [alone[(i.model, i.prompt.prompt)] for i in mine]


def test_lru_eviction_keeps_answers_correct(tiny, alone):
    backend = _backend(tiny, max_adapters=2)
    items = _items(CANDIDATES)  # three adapters in one call: more than fit at once
    assert [g.text for g in backend.generate(items)] == [alone[(i.model, i.prompt.prompt)] for i in items]
    assert len(backend.loaded_adapters()) == 2
    for name in ["cand-a", "cand-c", "cand-b", "cand-a"]:  # cycle through evictions
        item = _items([name], prompts=["hi"])[0]
        assert backend.generate([item])[0].text == alone[(name, "hi")]
        assert backend.loaded_adapters()[-1] == name
        assert len(backend.loaded_adapters()) <= 2


def test_stop_strings_cut_the_answer_and_stop_early(backend, alone):
    # Pick a stop string from an answer the model really gives: an ASCII pair, first seen mid-answer.
    for (model, prompt), text in alone.items():
        spots = [k for k in range(3, len(text) - 2) if text[k : k + 2].isascii() and text[k : k + 2].strip()]
        spots = [k for k in spots if text.find(text[k : k + 2]) == k]
        if spots:
            break
    else:
        pytest.fail("no answer with a usable stop string")
    k = spots[0]
    stop = text[k : k + 2]
    stopped, other = backend.generate(
        [
            GenItem(model=model, prompt=user_turn(prompt), params=GenerationParams(max_new_tokens=16, stop=[stop])),
            _items(["cand-b"], prompts=["the fox"])[0],
        ]
    )
    assert stopped.text == text[:k]
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens < 16
    assert other.text == alone[("cand-b", "the fox")] and other.finish_reason == "length"


def test_max_new_tokens_over_the_cap_is_refused(tiny):
    backend = _backend(tiny, max_new_tokens_cap=16)
    with pytest.raises(InvalidInput, match="max_new_tokens=17 is over the limit of 16"):
        backend.generate([GenItem(model="cand-a", prompt="hi", params=GenerationParams(max_new_tokens=17))])
    [ok] = backend.generate([GenItem(model="cand-a", prompt="hi", params=GenerationParams(max_new_tokens=16))])
    assert ok.completion_tokens <= 16


def test_bad_params_are_refused_with_the_field_named():
    with pytest.raises(InvalidInput, match="temperature"):
        GenerationParams(temperature=-1)
    with pytest.raises(InvalidInput, match="top_p"):
        msgspec.json.decode(b'{"top_p": 0}', type=GenerationParams)
    with pytest.raises(InvalidInput, match="max_new_tokens"):
        GenerationParams(max_new_tokens=0)
    with pytest.raises(InvalidInput, match="stop"):
        GenerationParams(stop=[""])


def test_prompt_over_the_context_is_refused(backend):
    assert backend.context_length("cand-a") == CONTEXT
    long_prompt = "the quick brown fox " * 40
    with pytest.raises(InvalidInput, match=r"prompt is \d+ tokens; the limit for cand-a is 112") as info:
        backend.generate([GenItem(model="cand-a", prompt=long_prompt, params=GenerationParams(max_new_tokens=16))])
    assert info.value.extra["limit"] == CONTEXT - 16


def test_unknown_model_error_lists_the_available_names(backend):
    with pytest.raises(NotFound, match="unknown model 'nope'; available: base, cand-a, cand-b, cand-c"):
        backend.generate([GenItem(model="nope", prompt="hi")])


def test_seed_makes_sampling_reproducible_alone_or_batched(backend, alone):
    sampled = GenItem(
        model="cand-a", prompt=user_turn("hi"), params=GenerationParams(max_new_tokens=16, temperature=1.0, seed=7)
    )
    first = backend.generate([sampled])[0].text
    assert backend.generate([sampled])[0].text == first
    batched = backend.generate([_items(["cand-b"])[0], sampled, _items(["base"])[1]])
    assert batched[1].text == first
    assert batched[0].text == alone[("cand-b", PROMPTS[0])]  # greedy rows untouched by sampling rows
    reseeded = [
        msgspec.structs.replace(sampled, params=GenerationParams(max_new_tokens=16, temperature=1.0, seed=seed))
        for seed in (1, 2, 3)
    ]
    other_seeds = {answer.text for answer in backend.generate(reseeded)}
    assert other_seeds - {first}, "different seeds should give different samples"
    assert first != alone[("cand-a", "hi")]


def test_render_uses_the_candidates_template(tiny, tmp_path):
    base, adapters = tiny
    backend = _backend(tiny)
    conversation = Conversation(messages=(Message("system", "be brief"), Message("user", "hi")))
    assert backend.render("cand-a", conversation) == render_plain(conversation, add_generation_prompt=True)
    # An adapter trained with another template ships it; that template wins for that candidate.
    own = tmp_path / "own-template"
    shutil.copytree(adapters["cand-a"], own)
    (own / "chat_template.jinja").write_text("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}>>")
    backend.register("own", base, own)
    assert backend.render("own", conversation) == "<system>be brief<user>hi>>"
    assert backend.render("own", "raw text") == "raw text"
    [answer] = backend.generate([GenItem(model="own", prompt=conversation, params=GenerationParams(max_new_tokens=4))])
    assert answer.prompt_tokens == len(AutoTokenizer.from_pretrained(base)("<system>be brief<user>hi>>")["input_ids"])


def test_a_base_without_chat_template_gets_the_plain_format(tiny, tmp_path, alone):
    base, _ = tiny
    plain = tmp_path / "no-template"
    shutil.copytree(base, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    backend = InProcessBackend(device="cpu")
    backend.register_base("plain", plain)
    assert AutoTokenizer.from_pretrained(plain).chat_template is None
    assert backend.render("plain", user_turn("hi")) == "User:hi</s>\n Assistant:"
    params = GenerationParams(max_new_tokens=16)
    [answer] = backend.generate([GenItem(model="plain", prompt=user_turn("hi"), params=params)])
    assert answer.text == alone[("base", "hi")]


def test_register_refuses_what_it_cannot_serve(tiny, tmp_path):
    base, _ = tiny
    backend = InProcessBackend(device="cpu")
    with pytest.raises(NotFound, match="adapter_config.json"):
        backend.register("x", base, tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(InvalidInput, match="not LoRA"):
        backend.register("x", base, tmp_path)
    with pytest.raises(NotFound, match="config.json"):
        backend.register_base("x", tmp_path / "missing")


# -- in-process: log-likelihood ---------------------------------------------------------------


def test_loglikelihood_mixed_batch_matches_the_model(tiny, backend):
    base_dir, _ = tiny
    context, continuation = "User:what is two plus two?</s>\n Assistant:", "four</s>"
    items = [LoglikelihoodItem(model=m, context=context, continuation=continuation) for m in [*CANDIDATES, "base"]]
    items.append(LoglikelihoodItem(model="cand-b", context="the", continuation=" quick brown fox"))
    batch = backend.loglikelihood(items)
    assert [r.logprob for r in batch] == pytest.approx([backend.loglikelihood([i])[0].logprob for i in items], abs=1e-4)
    assert len({round(r.logprob, 3) for r in batch[:4]}) == 4

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    ctx = tokenizer(context)["input_ids"]
    whole = tokenizer(context + continuation)["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0], -1)
    expected = sum(logprobs[pos - 1, whole[pos]].item() for pos in range(len(ctx), len(whole)))
    assert batch[3].logprob == pytest.approx(expected, abs=1e-4)
    assert batch[3].tokens == len(whole) - len(ctx)


def test_loglikelihood_rolling_covers_long_texts(backend):
    short = "the quick brown fox jumps over the lazy dog"
    long = short * 20  # several context windows
    [s, l_a, l_b] = backend.loglikelihood_rolling(
        [
            RollingItem(model="cand-a", text=short),
            RollingItem(model="cand-a", text=long),
            RollingItem(model="cand-b", text=long),
        ]
    )
    [whole] = backend.loglikelihood([LoglikelihoodItem(model="cand-a", context="", continuation=short)])
    assert s.logprob == pytest.approx(whole.logprob, abs=1e-4) and s.tokens == whole.tokens
    assert l_a.tokens == l_b.tokens > 2 * CONTEXT
    assert l_a.logprob < 0 and l_a.logprob != pytest.approx(l_b.logprob)


# -- cache keys ---------------------------------------------------------------------------------


def test_cache_key_is_stable_and_ignores_what_does_not_change_the_answer():
    greedy = GenerationParams(max_new_tokens=32, stop=["a", "b"])
    key = cache_key("cand-a", "User:hi</s>\n Assistant:", greedy)
    assert len(key) == 64
    same = GenerationParams(max_new_tokens=32, stop=["b", "a"], seed=3, top_p=0.5)  # greedy: seed, top_p unused
    assert key == cache_key("cand-a", "User:hi</s>\n Assistant:", same)
    assert key != cache_key("cand-b", "User:hi</s>\n Assistant:", greedy)
    assert key != cache_key("cand-a", "User:ho</s>\n Assistant:", greedy)
    assert key != cache_key("cand-a", "User:hi</s>\n Assistant:", GenerationParams(max_new_tokens=33, stop=["a", "b"]))
    sampled = GenerationParams(temperature=0.7, seed=1)
    assert cache_key("c", "p", sampled) != cache_key("c", "p", GenerationParams(temperature=0.7, seed=2))


# -- remote --------------------------------------------------------------------------------------


class _FakeOpenAI:
    """An OpenAI-compatible server on loopback: `cand-a`/`cand-b` answer, `flaky` fails
    with 429 once, `broken` always 500s, anything else is a vLLM-style 404."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.flaky_calls = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status, payload, headers=()):
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in headers:
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [
                    {"id": "cand-a", "object": "model", "max_model_len": 256},
                    {"id": "cand-b", "object": "model"},
                ]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                body["_auth"] = self.headers.get("Authorization")
                body["_path"] = self.path
                with fake.lock:
                    fake.requests.append(body)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    time.sleep(0.05)
                    self._answer(body)
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

            def _answer(self, body):
                model = body["model"]
                if model == "flaky":
                    with fake.lock:
                        fake.flaky_calls += 1
                        first = fake.flaky_calls == 1
                    if first:
                        return self._send(429, {"error": {"message": "slow down"}}, [("Retry-After", "0")])
                elif model == "broken":
                    return self._send(500, {"error": {"message": "engine crashed"}})
                elif model not in ("cand-a", "cand-b"):
                    return self._send(404, {"error": {"message": f"The model `{model}` does not exist.",
                                                      "type": "NotFoundError", "code": 404}})
                usage = {"prompt_tokens": 5, "completion_tokens": 3}
                if body["_path"] == "/v1/completions":
                    choice = {"index": 0, "text": f"raw:{body['prompt']}", "finish_reason": "length"}
                else:
                    choice = {"index": 0, "message": {"role": "assistant",
                              "content": f"{model}:{body['messages'][-1]['content']}"}, "finish_reason": "stop"}
                self._send(200, {"choices": [choice], "usage": usage})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_server():
    server = _FakeOpenAI()
    yield server
    server.close()


def test_remote_generates_chat_and_raw_prompts_concurrently(fake_server):
    with RemoteBackend(fake_server.url + "/v1", api_key="sekret", backoff_s=0.01) as remote:
        items = [GenItem(model=("cand-a", "cand-b")[i % 2], prompt=user_turn(f"q{i}")) for i in range(12)]
        items.append(GenItem(model="cand-a", prompt="once upon", params=GenerationParams(
            max_new_tokens=7, temperature=0.5, seed=3, stop=["\n"])))
        answers = remote.generate(items)
        assert remote.models() == ["cand-a", "cand-b"]
        assert remote.context_length("cand-a") == 256 and remote.context_length("cand-b") is None
    assert [a.text for a in answers[:12]] == [f"{i.model}:q{n}" for n, i in enumerate(items[:12])]
    assert answers[0].finish_reason == "stop" and answers[0].completion_tokens == 3
    assert answers[12].text == "raw:once upon" and answers[12].finish_reason == "length"
    assert fake_server.max_in_flight > 1  # sent concurrently, not one after another
    raw = next(r for r in fake_server.requests if r["_path"] == "/v1/completions")
    assert raw["max_tokens"] == 7 and raw["stop"] == ["\n"] and raw["seed"] == 3 and raw["temperature"] == 0.5
    chat = next(r for r in fake_server.requests if r["_path"] == "/v1/chat/completions")
    assert chat["_auth"] == "Bearer sekret" and "seed" not in chat and "stop" not in chat


def test_remote_retries_429_then_succeeds(fake_server):
    with RemoteBackend(fake_server.url, retries=2, backoff_s=0.01) as remote:
        [answer] = remote.generate([GenItem(model="flaky", prompt=user_turn("hi"))])
    assert answer.text == "flaky:hi"
    assert fake_server.flaky_calls == 2


def test_remote_gives_up_on_persistent_5xx_with_unavailable(fake_server):
    with RemoteBackend(fake_server.url, retries=2, backoff_s=0.01) as remote:
        with pytest.raises(Unavailable, match=r"failed after 3 attempts \(500: engine crashed\)"):
            remote.generate([GenItem(model="broken", prompt=user_turn("hi"))])
    assert sum(r["model"] == "broken" for r in fake_server.requests) == 3


def test_remote_missing_model_lists_the_servers_models(fake_server):
    with RemoteBackend(fake_server.url, backoff_s=0.01) as remote:
        with pytest.raises(NotFound, match="model 'nope' is not served by .*; available: cand-a, cand-b"):
            remote.generate([GenItem(model="nope", prompt=user_turn("hi"))])
        with pytest.raises(NotFound, match="available: cand-a, cand-b"):
            remote.context_length("nope")
    assert sum(r["model"] == "nope" for r in fake_server.requests) == 1  # a 404 is not retried


def test_remote_unreachable_server_is_unavailable():
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with RemoteBackend(f"http://127.0.0.1:{port}", retries=1, backoff_s=0.01, timeout=2) as remote:
        with pytest.raises(Unavailable, match=rf"127.0.0.1:{port} is unreachable after 2 attempts"):
            remote.generate([GenItem(model="cand-a", prompt=user_turn("hi"))])


def test_remote_async_variant_and_cap(fake_server):
    remote = RemoteBackend(fake_server.url, backoff_s=0.01, max_new_tokens_cap=128)
    try:
        items = [GenItem(model="flaky", prompt=user_turn("x")), GenItem(model="cand-b", prompt=user_turn("y"))]
        answers = asyncio.run(remote.agenerate(items))
        assert [a.text for a in answers] == ["flaky:x", "cand-b:y"]
        with pytest.raises(NotFound, match="available: cand-a, cand-b"):
            asyncio.run(remote.agenerate([GenItem(model="nope", prompt="z")]))
        with pytest.raises(InvalidInput, match="limit of 128"):
            remote.generate([GenItem(model="cand-a", prompt="z", params=GenerationParams(max_new_tokens=129))])
    finally:
        remote.close()


def test_settings_choose_the_backend(tmp_path):
    local = backend_from_settings(
        Settings(data_dir=tmp_path, redis_url=None, adapter_cache_size=3, max_new_tokens_cap=64)
    )
    assert isinstance(local, InProcessBackend) and local.max_adapters == 3 and local.max_new_tokens_cap == 64
    remote = backend_from_settings(
        Settings(data_dir=tmp_path, redis_url=None, generation_url="http://127.0.0.1:9/v1", max_new_tokens_cap=64)
    )
    try:
        assert isinstance(remote, RemoteBackend) and remote.base_url == "http://127.0.0.1:9"
        with pytest.raises(InvalidInput, match="limit of 64"):
            remote.generate([GenItem(model="x", prompt="y", params=GenerationParams(max_new_tokens=65))])
    finally:
        remote.close()
