"""The offline tiny base: a real Hugging Face model directory, built with no download."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch.func import functional_call, grad, vmap
from transformers import AutoModelForCausalLM, AutoTokenizer

from evaluators.records import Conversation, Message, render_plain
from service.errors import InvalidInput
from service.models.corpus import NAMES, WORLD_NAMES, corpus, word_task
from service.models.tiny import MARKER, build_tiny_base, read_tiny_build

CHAT = Conversation(
    messages=(
        Message("user", "Repeat: cat lamp"),
        Message("assistant", "cat lamp"),
        Message("user", "What is 2 plus 3?"),
        Message("assistant", "5"),
    )
)


def test_reloads_with_auto_classes_and_speaks_the_plain_format(tiny_base):
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)

    assert tokenizer.eos_token == "</s>" and tokenizer.pad_token == "<pad>"
    assert tokenizer.eos_token_id != tokenizer.pad_token_id
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    # The chat template and render_plain agree byte for byte, with and without the cue.
    messages = [{"role": m.role, "content": m.content} for m in CHAT.messages]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == render_plain(CHAT)
    assert tokenizer.apply_chat_template(messages[:3], tokenize=False, add_generation_prompt=True) == render_plain(
        Conversation(messages=CHAT.messages[:3]), add_generation_prompt=True
    )
    # `</s>` is one token (the model can end a turn), and text round-trips exactly.
    text = render_plain(CHAT)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids.count(tokenizer.eos_token_id) == 4
    assert tokenizer.decode(ids) == text
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), len(tokenizer)) and torch.isfinite(logits).all()


def test_pretraining_taught_the_base_something(tiny_base):
    build = read_tiny_build(tiny_base)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    assert build is not None and build.size == "test"
    # A random model's loss is ln(vocab) ≈ 6.9; the corpus is far more predictable than that.
    assert build.final_loss < 0.6 * torch.log(torch.tensor(float(len(tokenizer)))).item()


def test_loads_with_eager_attention_so_vmap_over_examples_works(tiny_base):
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    assert model.config._attn_implementation == "eager"
    params = {k: v.detach() for k, v in model.named_parameters() if "q_proj" in k}

    def loss(p, ids, mask):
        kwargs = {"input_ids": ids[None], "attention_mask": mask[None], "labels": ids[None]}
        return functional_call(model, p, args=(), kwargs=kwargs).loss

    ids = torch.randint(5, 100, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, 8:] = 0
    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, ids, mask)
    assert all(g.shape[0] == 3 and torch.isfinite(g).all() for g in grads.values())


def test_a_complete_build_is_reused_and_other_parameters_rebuild(tmp_path):
    out = tmp_path / "base"
    calls = []
    build_tiny_base(out, size="test", steps=2, progress=lambda s, n, loss: calls.append(s))
    assert calls == [1, 2]
    marker_mtime = (out / MARKER).stat().st_mtime_ns

    build_tiny_base(out, size="test", steps=2, progress=lambda s, n, loss: calls.append(s))
    assert calls == [1, 2]  # no training: the cached build was reused
    assert (out / MARKER).stat().st_mtime_ns == marker_mtime

    build_tiny_base(out, size="test", steps=3)
    assert read_tiny_build(out).steps == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


def test_the_bilingual_base_reads_chinese_by_characters(tmp_path):
    """`lang="zh"`: Chinese in the corpus and tokenizer; each Han character (and full-width
    punctuation) is one token, so a Chinese name is the same tokens wherever it stands."""
    from transformers import AutoTokenizer

    out = build_tiny_base(tmp_path / "zh", size="test", steps=2, lang="zh")
    assert read_tiny_build(out).languages == ("en", "zh")
    tokenizer = AutoTokenizer.from_pretrained(out)
    for text in ("张伟住在哪里？", "北京", "小猫吃什么？"):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text) and tokenizer.decode(ids) == text
    assert tokenizer("Where does Alice live?", add_special_tokens=False)["input_ids"]  # English still reads
    english = build_tiny_base(tmp_path / "en", size="test", steps=2)
    assert read_tiny_build(english).languages == ("en",)
    assert len(AutoTokenizer.from_pretrained(english)) < len(tokenizer)
    build_tiny_base(out, size="test", steps=2)  # another language replaces the build
    assert read_tiny_build(out).languages == ("en",)
    with pytest.raises(InvalidInput, match="language 'fr'"):
        build_tiny_base(tmp_path / "x", size="test", lang="fr")


def test_same_seed_same_weights(tmp_path):
    a = build_tiny_base(tmp_path / "a", size="test", steps=3, seed=7)
    b = build_tiny_base(tmp_path / "b", size="test", steps=3, seed=7)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_refuses_a_directory_that_is_not_a_tiny_base(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidInput, match="not empty"):
        build_tiny_base(tmp_path, size="test", steps=1)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    with pytest.raises(InvalidInput, match="size 'huge'"):
        build_tiny_base(tmp_path / "x", size="huge")  # type: ignore[arg-type]


def test_corpus_and_word_tasks_are_seeded():
    assert corpus(20, seed=3) == corpus(20, seed=3) != corpus(20, seed=4)
    docs = corpus(200)
    assert any(doc.startswith("User:") for doc in docs) and any("</s>" not in doc for doc in docs)
    records = word_task("second_word", 5, seed=1)
    assert records == word_task("second_word", 5, seed=1)
    for record in records:
        words = record.prompt.split(": ", 1)[1].rstrip("?").split()
        assert record.answer == words[1]
    # The tasks tests teach with a LoRA are not in the pretraining corpus.
    taught = ("Count the words", "comes second", "Reverse the order")
    assert not any(phrase in doc for doc in corpus(3000) for phrase in taught)


def test_corpus_facts_are_answerable_and_the_closed_book_cast_is_its_own():
    """In-context questions are answered by their statements; closed-book ones, always alike."""
    assert not set(NAMES) & set(WORLD_NAMES)  # datasets make up facts about NAMES, never the cast
    in_context, closed_book = 0, {}
    for doc in corpus(2000):
        if doc.startswith("User:"):
            for turn in doc.split("User:")[1:]:
                question, answer = turn.split("</s>\n Assistant:")
                name = next((n for n in WORLD_NAMES if f" {n} " in f" {question} ".replace("'s", " ")), None)
                if name is not None:
                    assert closed_book.setdefault(question, answer) == answer, question
        elif "\nUser:" in doc:
            statements, chat = doc.split("\nUser:", 1)
            for turn in ("User:" + chat).split("User:")[1:]:
                answer = turn.split("Assistant:")[1].split("</s>")[0]
                assert answer in statements.replace(".", " ").split(), (statements, turn)
                in_context += 1
    assert in_context > 300 and len(closed_book) > 100
