"""The runner: one backend call for all candidates, lm-eval-shaped results, and the HF
reference backend on a tiny random Llama with two LoRA adapters."""

import math

import msgspec
import pytest
import torch

from evaluators.runner import BASE_ADAPTER, GenRequest, evaluate
from evaluators.tasks import GenerationKwargs, MetricConfig, TaskConfig

QA = TaskConfig(task="capitals", dataset="capitals.jsonl", doc_to_text="Q: capital of {{country}}?\nA:",
                doc_to_target="{{capital}}", metric_list=[MetricConfig("exact_match", kwargs={"strip": True}),
                                                          MetricConfig("token_f1")])
DOCS = [{"country": c, "capital": k} for c, k in
        [("France", "Paris"), ("Japan", "Tokyo"), ("Peru", "Lima"), ("Chad", "N'Djamena"), ("Fiji", "Suva")]]
ANSWERS = {f"Q: capital of {d['country']}?\nA:": d["capital"] for d in DOCS}


class FakeBackend:
    """'good' answers right, 'bad' wrong; records every call."""

    def __init__(self):
        self.calls = []

    def generate(self, requests: list[GenRequest]) -> list[str]:
        self.calls.append(("generate", [r.adapter for r in requests]))
        return [f" {ANSWERS[r.prompt]}\nQ: more" if r.adapter == "good" else " Atlantis" for r in requests]

    def loglikelihood(self, requests):
        self.calls.append(("loglikelihood", [a for a, _, _ in requests]))
        # 'good' prefers the longer continuation, 'bad' the shorter one.
        return [(-1.0 / len(cont) if a == "good" else -float(len(cont)), False) for a, _, cont in requests]

    def loglikelihood_rolling(self, requests):
        self.calls.append(("loglikelihood_rolling", [a for a, _ in requests]))
        return [-float(len(text)) * (1.0 if a == "good" else 2.0) for a, text in requests]


def test_all_candidates_share_one_generate_call_and_score_as_expected():
    backend = FakeBackend()
    task = msgspec.structs.replace(QA, generation_kwargs=GenerationKwargs(until=["\nQ:"], max_gen_toks=8))
    results = evaluate(task, DOCS, backend, ["good", "bad"])
    assert backend.calls == [("generate", ["good", "bad"] * len(DOCS))]
    good, bad = results["good"], results["bad"]
    assert good.metrics["exact_match"].value == 1.0 and good.metrics["exact_match"].stderr == 0.0
    assert bad.metrics["exact_match"].value == 0.0
    assert good.samples[0].response == " Paris"  # cut at the stop string
    row = good.sample_rows()[3]
    assert row["doc_id"] == 3 and row["target"] == "N'Djamena" and row["exact_match"] == 1.0
    assert row["doc_hash"] == good.samples[3].doc_hash and row["prompt"].startswith("Q: capital of Chad")


def test_lm_eval_results_shape_and_limit():
    results = evaluate(QA, DOCS, FakeBackend(), ["good", "bad"], limit=4)
    doc = results["bad"].to_lm_eval_json({"batch_size": 8})
    entry = doc["results"]["capitals"]
    assert entry["alias"] == "capitals"
    assert entry["exact_match,none"] == 0.0 and entry["exact_match_stderr,none"] == 0.0
    assert doc["n-samples"]["capitals"] == {"original": 5, "effective": 4}
    assert doc["versions"]["capitals"] == 1.0 and doc["n-shot"]["capitals"] == 0
    assert doc["higher_is_better"]["capitals"] == {"exact_match": True, "token_f1": True}
    assert doc["configs"]["capitals"]["doc_to_text"] == QA.doc_to_text
    assert doc["config"]["batch_size"] == 8 and doc["config"]["limit"] == 4


def test_multiple_choice_and_rolling_batch_candidates_together():
    mc = TaskConfig(task="pick", dataset="d.jsonl", output_type="multiple_choice", doc_to_text="{{q}}",
                    doc_to_choice="options", doc_to_target="label")
    docs = [{"q": "Longest?", "options": ["a", "abcd", "ab"], "label": 1}] * 3
    backend = FakeBackend()
    results = evaluate(mc, docs, backend, ["good", "bad"])
    assert backend.calls == [("loglikelihood", (["good"] * 3 + ["bad"] * 3) * 3)]
    assert results["good"].metrics["acc"].value == 1.0 and results["bad"].metrics["acc"].value == 0.0
    assert results["good"].samples[0].response == "abcd"

    rolling = TaskConfig(task="lm", dataset="d.jsonl", output_type="loglikelihood_rolling", doc_to_target="{{text}}")
    docs = [{"text": "one two three"}, {"text": "four five"}]
    results = evaluate(rolling, docs, FakeBackend(), ["good", "bad"])
    good = results["good"].metrics
    assert good["word_perplexity"].value == pytest.approx(math.exp(22 / 5))  # 13 + 9 chars, 3 + 2 words
    assert good["bits_per_byte"].value == pytest.approx(22 / 22 / math.log(2))
    assert good["bits_per_byte"].stderr_method == "bootstrap"
    assert results["bad"].metrics["word_perplexity"].value > good["word_perplexity"].value
    assert results["good"].sample_rows()[0]["word_perplexity"] == [-13.0, 3]


def test_chunks_report_progress():
    backend, seen = FakeBackend(), []
    evaluate(QA, DOCS, backend, ["good", "bad"], chunk_docs=2, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(2, 5), (4, 5), (5, 5)]
    assert [len(adapters) for _, adapters in backend.calls] == [4, 4, 2]


def test_candidates_must_be_named_once():
    with pytest.raises(ValueError, match="each name once"):
        evaluate(QA, DOCS, FakeBackend(), ["good", "good"])


# --- the HF backend on a tiny random Llama ------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lora():
    """A 2-layer random Llama (float64, so batch composition cannot flip a greedy token)
    with two random LoRA adapters, 'red' and 'blue', and a byte-level BPE tokenizer."""
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["Q: capital of France?\nA: Paris", "the cat sat on the mat"] * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config)
    lora = dict(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    model = get_peft_model(model, LoraConfig(**lora), adapter_name="red")
    model.add_adapter("blue", LoraConfig(**lora))
    return model.double().eval(), tokenizer


PROMPTS = ["Q: capital of France?\nA:", "the cat", "Q: capital of Peru?\nA: the cat sat on", ""]


def test_mixed_adapter_batches_equal_per_adapter_runs(tiny_lora):
    from evaluators.hf_backend import HFBackend

    model, tokenizer = tiny_lora
    backend = HFBackend(model, tokenizer, batch_size=16)
    adapters = ["red", "blue", BASE_ADAPTER]
    mixed = [GenRequest(a, p, max_new_tokens=6) for p in PROMPTS for a in adapters]
    mixed_out = backend.generate(mixed)
    alone = {a: backend.generate([GenRequest(a, p, max_new_tokens=6) for p in PROMPTS]) for a in adapters}
    assert mixed_out == [alone[a][i] for i in range(len(PROMPTS)) for a in adapters]
    # The adapters really differ, so the equality above could have failed.
    assert alone["red"] != alone["blue"] and alone["red"] != alone[BASE_ADAPTER]

    pairs = [(a, p, " Paris") for p in PROMPTS for a in adapters]
    mixed_ll = backend.loglikelihood(pairs)
    alone_ll = {a: backend.loglikelihood([(a, p, " Paris") for p in PROMPTS]) for a in adapters}
    for (a, _, _), got, i in zip(pairs, mixed_ll, [i for i in range(len(PROMPTS)) for _ in adapters]):
        assert got[0] == pytest.approx(alone_ll[a][i][0], abs=1e-9) and got[1] == alone_ll[a][i][1]
    assert alone_ll["red"][0][0] != pytest.approx(alone_ll["blue"][0][0])

    texts = [(a, t) for t in ("the cat sat on the mat", "Paris") for a in adapters]
    mixed_roll = backend.loglikelihood_rolling(texts)
    alone_roll = [backend.loglikelihood_rolling([pair])[0] for pair in texts]
    assert mixed_roll == pytest.approx(alone_roll, abs=1e-9)


def test_loglikelihood_matches_a_direct_forward_pass(tiny_lora):
    from evaluators.hf_backend import HFBackend

    model, tokenizer = tiny_lora
    backend = HFBackend(model, tokenizer, batch_size=4)
    context, continuation = "Q: capital of France?\nA:", " Paris"
    ll, greedy = backend.loglikelihood([("blue", context, continuation)])[0]
    ctx = backend.prefix_ids + tokenizer(context, add_special_tokens=False)["input_ids"]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    cont = whole[len(ctx) - len(backend.prefix_ids):]
    ids = torch.tensor([ctx + cont])
    model.set_adapter("blue")
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0], -1)
    expected = sum(logprobs[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont))
    assert ll == pytest.approx(expected, abs=1e-9)
    predicted = [logprobs[len(ctx) - 1 + j].argmax().item() for j in range(len(cont))]
    assert greedy == (predicted == cont)
    # With room for the whole text, rolling = one window conditioned on the start token.
    text = "the cat sat on the mat"
    assert backend.loglikelihood_rolling([("blue", text)])[0] == pytest.approx(
        backend.loglikelihood([("blue", "", text)])[0][0], abs=1e-9)


def test_rolling_windows_cover_every_token_once(tiny_lora):
    from evaluators.hf_backend import HFBackend

    model, tokenizer = tiny_lora
    backend = HFBackend(model, tokenizer, max_length=8)
    tokens = list(range(100, 130))
    windows = backend._rolling_windows(tokens)
    assert [t for _, targets in windows for t in targets] == tokens
    assert all(len(ctx) + len(targets) - 1 <= 8 for ctx, targets in windows)
    long_text = "the cat sat on the mat " * 6
    assert math.isfinite(backend.loglikelihood_rolling([("red", long_text)])[0])


def test_unknown_adapter_is_named(tiny_lora):
    from evaluators.hf_backend import HFBackend

    model, tokenizer = tiny_lora
    with pytest.raises(ValueError, match=r"adapter 'green' is not loaded; loaded adapters: blue, red"):
        HFBackend(model, tokenizer).generate([GenRequest("green", "hi", 2)])


def test_evaluate_on_the_tiny_model_mixes_adapters_and_matches_single_runs(tiny_lora):
    from evaluators.hf_backend import HFBackend

    model, tokenizer = tiny_lora
    backend = HFBackend(model, tokenizer, batch_size=8)
    task = msgspec.structs.replace(QA, generation_kwargs=GenerationKwargs(until=["\n"], max_gen_toks=5))
    together = evaluate(task, DOCS, backend, ["red", "blue"])
    for name in ("red", "blue"):
        alone = evaluate(task, DOCS, backend, [name])[name]
        assert [s.response for s in together[name].samples] == [s.response for s in alone.samples]
        assert together[name].metrics["token_f1"].value == alone.metrics["token_f1"].value


class ChatBackend(FakeBackend):
    """Answers from the conversation it is sent; renders it in a template of its own."""

    def generate(self, requests: list[GenRequest]) -> list[str]:
        self.calls.append(("generate", [(r.adapter, r.messages, r.prompt) for r in requests]))
        return [" Paris" if r.messages and r.messages[-1].content == "France" else " ?" for r in requests]

    def apply_chat_template(self, adapter, messages):
        return f"<{adapter}>" + "".join(f"[{m.role}]{m.content}" for m in messages) + "[assistant]"


def test_chat_tasks_send_the_conversation_and_samples_keep_it():
    from evaluators.records import Message

    task = TaskConfig(task="capitals", dataset="c.jsonl", doc_to_text="{{country}}", doc_to_target="{{capital}}",
                      apply_chat_template=True, system_instruction="Name the capital.",
                      metric_list=[MetricConfig("exact_match", kwargs={"strip": True})])
    backend = ChatBackend()
    results = evaluate(task, DOCS[:2], backend, ["good", "bad"])
    (_, sent), = backend.calls
    assert sent[0][1] == (Message("system", "Name the capital."), Message("user", "France"))
    # Each candidate's samples show the prompt in its own rendering, and the messages sent.
    row = results["bad"].sample_rows()[0]
    assert row["prompt"] == "<bad>[system]Name the capital.[user]France[assistant]"
    assert row["arguments"][0][0] == row["prompt"]
    assert row["messages"] == [{"role": "system", "content": "Name the capital."}, {"role": "user", "content": "France"}]
    assert results["good"].sample_rows()[0]["prompt"].startswith("<good>")
    assert results["good"].metrics["exact_match"].value == 0.5
    # A task without chat structure keeps no messages.
    plain = evaluate(QA, DOCS[:1], FakeBackend(), ["good"])["good"].sample_rows()[0]
    assert "messages" not in plain
