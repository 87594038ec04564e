"""LoRA training: answer-only loss, determinism, failures, cancellation, resume, and that it learns."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from evaluators.chat_format import IGNORE_INDEX
from evaluators.records import Conversation, Message, render_plain, user_turn
from service.checkpoints import attribution_steps, spread_steps
from service.models.corpus import word_task
from service.training import (
    InvalidTrainingInput,
    RunConflict,
    TrainConfig,
    TrainingCancelled,
    TrainingDiverged,
    TrainResult,
    encode_prompt,
    load_train_result,
    render_prompt,
    tokenize_conversation,
    train_adapter,
)

MULTI_TURN = Conversation(
    messages=(
        Message("system", "Be brief."),
        Message("user", "Repeat: cat lamp"),
        Message("assistant", "cat lamp"),
        Message("user", "What is 2 plus 3?"),
        Message("assistant", "5"),
    )
)
# Small, fast runs: 24 records, batch 8, one epoch = 3 steps.
FAST = TrainConfig(epochs=2, batch_size=8, lr=5e-3, eval_fraction=0.0, logging_steps=1, seed=0)


def _weights(adapter_dir: str | Path) -> dict[str, torch.Tensor]:
    return load_file(Path(adapter_dir) / "adapter_model.safetensors")


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- formatting and masking -----------------------------------------------------------------


def test_masking_trains_every_assistant_turn_and_nothing_else(tiny_base):
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    ids, labels = tokenize_conversation(tokenizer, MULTI_TURN, max_length=512)

    assert len(ids) == len(labels)
    assert tokenizer.decode(ids) == render_plain(MULTI_TURN)
    trained = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    assert all(labels[i] == ids[i] for i in trained)
    # Exactly the two answers and their end-of-turn markers carry loss.
    assert tokenizer.decode([ids[i] for i in trained]) == "cat lamp</s>5</s>"
    runs = [i for i in trained if i - 1 not in trained]
    assert len(runs) == 2
    # Every token before the first answer is a prompt token, and it is exactly what
    # generation feeds the model for the first question.
    first_prompt = Conversation(messages=MULTI_TURN.messages[:2])
    assert ids[: trained[0]] == encode_prompt(tokenizer, first_prompt)
    assert all(label == IGNORE_INDEX for label in labels[: trained[0]])


def test_masking_follows_truncation(tiny_base):
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    full_ids, _ = tokenize_conversation(tokenizer, MULTI_TURN, max_length=512)
    ids, labels = tokenize_conversation(tokenizer, MULTI_TURN, max_length=len(full_ids) - 3)
    assert ids == full_ids[: len(full_ids) - 3] and len(labels) == len(ids)


def test_render_prompt_uses_the_template_or_the_plain_format(tiny_base):
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    prompt = render_prompt(tokenizer, MULTI_TURN)
    assert prompt == render_plain(Conversation(messages=MULTI_TURN.messages[:-1]), add_generation_prompt=True)
    assert prompt.endswith("User:What is 2 plus 3?</s>\n Assistant:")
    assert render_prompt(tokenizer, user_turn("hi")) == "User:hi</s>\n Assistant:"

    # A base without a chat template gets the plain format and its tokenizer's usual specials.
    tokenizer.chat_template = None
    assert render_prompt(tokenizer, user_turn("hi")) == "User:hi</s>\n Assistant:"


def test_a_base_without_template_gets_its_usual_leading_specials(tiny_base):
    """A Llama-style tokenizer that adds BOS to plain text: training and prompts both start with it."""
    from tokenizers.processors import TemplateProcessing

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    tokenizer.chat_template = None
    bos = tokenizer.bos_token_id
    tokenizer._tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])

    ids, labels = tokenize_conversation(tokenizer, MULTI_TURN, max_length=512)
    assert ids[0] == bos and ids.count(bos) == 1 and labels[0] == IGNORE_INDEX
    assert tokenizer.decode(ids[1:]) == render_plain(MULTI_TURN)
    trained = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    assert tokenizer.decode([ids[i] for i in trained]) == "cat lamp</s>5</s>"
    prompt_ids = encode_prompt(tokenizer, Conversation(messages=MULTI_TURN.messages[:2]))
    assert prompt_ids[0] == bos and ids[: trained[0]] == prompt_ids


# --- a trained adapter ----------------------------------------------------------------------


def test_trained_adapter_is_in_peft_format_with_its_record(trained_adapter: TrainResult, tiny_base):
    result = trained_adapter
    adapter = result.adapter_dir
    config = json.loads((Path(adapter) / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert _weights(adapter)

    # Every checkpoint is kept (one per epoch), with the optimizer state attribution needs.
    assert [c.step for c in result.checkpoints] == [6, 12]
    for checkpoint in result.checkpoints:
        for name in ("optimizer.pt", "scheduler.pt", "adapter_model.safetensors", "trainer_state.json"):
            assert (Path(checkpoint.path) / name).is_file()

    # The loss curve has train and eval losses at logging steps, and went down.
    assert [p.step for p in result.loss_curve] == [2, 4, 6, 8, 10, 12]
    assert all(p.loss is not None and p.eval_loss is not None for p in result.loss_curve)
    assert result.loss_curve[-1].loss < result.loss_curve[0].loss
    assert len(result.eval_indices) == 6 and len(result.train_indices) == 42
    assert not set(result.eval_indices) & set(result.train_indices)
    assert result.train_tokens > 0 and result.tokens_per_s > 0 and result.trainable_params < result.total_params

    # metrics.json holds the same result, and the adapter loads over the base.
    assert load_train_result(result.out_dir) == result
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), adapter)
    assert model.active_adapter == "default"


def test_on_log_reports_each_logging_step(tiny_base, tmp_path):
    logs: list[dict] = []
    records = word_task("second_word", 30, seed=2)
    config = msgspec.structs.replace(FAST, eval_fraction=0.2, logging_steps=2, epochs=1)
    result = train_adapter(tiny_base, records, config, tmp_path, on_log=logs.append)
    assert [log["step"] for log in logs] == [2, 3]  # every 2 steps, and the last step
    assert all(set(log) == {"step", "max_steps", "loss", "eval_loss", "lr", "epoch"} for log in logs)
    assert all(log["max_steps"] == 3 and log["eval_loss"] is not None and log["loss"] > 0 for log in logs)
    assert [log["loss"] for log in logs] == [p.loss for p in result.loss_curve]


def test_same_seed_same_adapter_other_seed_other_adapter(tiny_base, tmp_path):
    records = word_task("reverse", 24, seed=3)
    a = train_adapter(tiny_base, records, FAST, tmp_path / "a")
    b = train_adapter(tiny_base, records, FAST, tmp_path / "b")
    c = train_adapter(tiny_base, records, msgspec.structs.replace(FAST, seed=1), tmp_path / "c")
    assert _same(_weights(a.adapter_dir), _weights(b.adapter_dir))
    assert not _same(_weights(a.adapter_dir), _weights(c.adapter_dir))
    assert [p.loss for p in a.loss_curve] == [p.loss for p in b.loss_curve]


# --- failures -------------------------------------------------------------------------------


def test_fails_fast_with_a_clear_message(tiny_base, tmp_path):
    records = word_task("reverse", 24, seed=3)
    with pytest.raises(InvalidTrainingInput, match="empty"):
        train_adapter(tiny_base, [], FAST, tmp_path / "a")
    with pytest.raises(InvalidTrainingInput, match=r"\['w_proj'\] not found.*q_proj.*v_proj"):
        train_adapter(tiny_base, records, msgspec.structs.replace(FAST, target_modules="q_proj,w_proj"), tmp_path / "b")
    with pytest.raises(InvalidTrainingInput, match="batch_size × grad_accum = 32"):
        train_adapter(tiny_base, records, msgspec.structs.replace(FAST, batch_size=16, grad_accum=2), tmp_path / "c")
    with pytest.raises(InvalidTrainingInput, match="record 5: .*no assistant turn"):
        train_adapter(tiny_base, records[:5] + [user_turn("hello")] + records[5:], FAST, tmp_path / "d")
    with pytest.raises(InvalidTrainingInput, match="config.lr=-1"):
        TrainConfig(lr=-1)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"lora_rank": 8}, TrainConfig)  # unknown fields are refused, not ignored
    # Bad input is refused before the output directory is touched.
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_nan_loss_stops_at_its_step(tiny_base, tmp_path):
    records = word_task("reverse", 24, seed=3)
    # Absurd steps: after the first update the activations overflow to inf, then NaN.
    config = msgspec.structs.replace(FAST, lr=1e38, max_grad_norm=1e30)
    with pytest.raises(TrainingDiverged, match=r"NaN or infinite at step 2 of 6") as caught:
        train_adapter(tiny_base, records, config, tmp_path)
    assert caught.value.extra["step"] == 2
    assert not (tmp_path / "adapter").exists()


# --- cancellation and resume ----------------------------------------------------------------


def test_should_stop_cancels_within_a_step_and_writes_no_adapter(tiny_base, tmp_path):
    records = word_task("reverse", 24, seed=3)
    polls = []

    def should_stop() -> bool:
        polls.append(1)
        return len(polls) > 2

    with pytest.raises(TrainingCancelled, match="step 2 of 6"):
        train_adapter(tiny_base, records, FAST, tmp_path, should_stop=should_stop)
    assert not (tmp_path / "adapter").exists() and load_train_result(tmp_path) is None


def test_a_killed_run_resumes_from_its_last_checkpoint_to_the_same_adapter(tiny_base, tmp_path):
    records = word_task("reverse", 24, seed=3)
    config = msgspec.structs.replace(FAST, save_steps=2, lora_dropout=0.0)
    whole = train_adapter(tiny_base, records, config, tmp_path / "whole")

    steps_done = []

    def stop_after_step_3() -> bool:
        steps_done.append(1)
        return len(steps_done) > 3

    with pytest.raises(TrainingCancelled):
        train_adapter(tiny_base, records, config, tmp_path / "resumed", should_stop=stop_after_step_3)
    resumed = train_adapter(tiny_base, records, config, tmp_path / "resumed")

    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-2")
    assert [c.step for c in resumed.checkpoints] == [2, 4, 6]
    assert torch.allclose(
        torch.cat([v.flatten() for v in _weights(resumed.adapter_dir).values()]),
        torch.cat([v.flatten() for v in _weights(whole.adapter_dir).values()]),
        atol=1e-6,
    )
    # The loss curve spans the whole run, not only the resumed part.
    assert [p.step for p in resumed.loss_curve] == [p.step for p in whole.loss_curve]

    # A finished run is returned as stored, without training again.
    again = train_adapter(tiny_base, records, config, tmp_path / "resumed")
    assert again == resumed
    # Another run may not reuse its checkpoints.
    with pytest.raises(RunConflict, match="checkpoints of another run"):
        train_adapter(tiny_base, records, msgspec.structs.replace(config, lr=1e-3), tmp_path / "resumed")


# --- the proof ------------------------------------------------------------------------------


def _greedy_answers(model, tokenizer, records: list[Conversation]) -> list[str]:
    """Greedy answers to each record's prompt, one record at a time."""
    answers = []
    model.eval()
    with torch.no_grad():
        for record in records:
            ids = torch.tensor([encode_prompt(tokenizer, record)])
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=8,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            answers.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    return answers


def _exact_match(answers: list[str], records: list[Conversation]) -> float:
    return sum(a == r.answer for a, r in zip(answers, records, strict=True)) / len(records)


@pytest.mark.slow
def test_lora_learns_a_rule_that_holds_on_unseen_records(tiny_small_base, tmp_path):
    """The claim behind every candidate: training on records teaches the task, not the records.

    The task (answer how many words follow, as a word) is absent from the base's corpus,
    so the base scores ~0; held-out records are word lists the adapter never saw.
    """
    train = word_task("count_words", 192, seed=1, min_words=2, max_words=7)
    seen = {r.prompt for r in train}
    held_out = [r for r in word_task("count_words", 60, seed=999, min_words=2, max_words=7) if r.prompt not in seen]
    assert len(held_out) >= 55
    tokenizer = AutoTokenizer.from_pretrained(tiny_small_base)
    base = AutoModelForCausalLM.from_pretrained(tiny_small_base)
    before = _exact_match(_greedy_answers(base, tokenizer, held_out), held_out)

    config = TrainConfig(
        target_modules="all-linear", lr=5e-3, epochs=6, batch_size=8, eval_fraction=0.0, logging_steps=24
    )
    result = train_adapter(tiny_small_base, train, config, tmp_path)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_small_base), result.adapter_dir)
    answers = _greedy_answers(tuned, tokenizer, held_out)
    after = _exact_match(answers, held_out)

    assert before <= 0.05
    pairs = list(zip(answers, [r.answer for r in held_out]))
    assert after >= 0.8, f"held-out exact match {after:.2f}; (answer, gold): {pairs[:10]}"
    # Right for every count, not one answer that happens to be common.
    for gold in {r.answer for r in held_out}:
        rows = [a == r.answer for a, r in zip(answers, held_out) if r.answer == gold]
        assert sum(rows) / len(rows) >= 0.5, gold


def test_a_long_run_keeps_a_bounded_spread_of_checkpoints(tiny_base, tmp_path):
    records = word_task("reverse", 24, seed=3)
    # 3 steps an epoch, 8 epochs: 8 epoch saves, more than the 5 kept for attribution.
    config = msgspec.structs.replace(FAST, epochs=8, batch_size=8, eval_fraction=0.0, attribution_checkpoints=5)
    seen: list[int] = []
    result = train_adapter(tiny_base, records, config, tmp_path / "run",
                           on_log=lambda _: seen.append(len(list((tmp_path / "run" / "checkpoints").glob("checkpoint-*")))))
    assert result.global_step == 24
    assert [c.step for c in result.checkpoints] == spread_steps(24, 5) == [5, 10, 15, 20, 24]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        f"checkpoint-{s}" for s in (10, 15, 20, 24, 5)]
    for checkpoint in result.checkpoints:  # each with the optimizer state attribution reads
        assert (Path(checkpoint.path) / "optimizer.pt").is_file()
    assert max(seen) <= 5 + 1  # never more than the kept ones and the newest save, while training

    # Short runs keep their epoch saves (LESS's checkpoints); null keeps every save.
    assert attribution_steps(12, 6, 5) == [6, 12] and attribution_steps(24, 3, 5) == [5, 10, 15, 20, 24]
    every = train_adapter(tiny_base, records, msgspec.structs.replace(config, attribution_checkpoints=None),
                          tmp_path / "every")
    assert [c.step for c in every.checkpoints] == [3, 6, 9, 12, 15, 18, 21, 24]
    # A new request may not ask for both bounds; a stored config from before the bound may hold
    # save_total_limit alone and must still decode (its run keeps Trainer's newest-N rule).
    with pytest.raises(InvalidTrainingInput, match="save_total_limit and config.attribution_checkpoints"):
        TrainConfig.check_request({"save_total_limit": 2, "attribution_checkpoints": 5})
    TrainConfig.check_request({"save_total_limit": 2, "attribution_checkpoints": 0})
    old = msgspec.json.decode(b'{"lora_r": 8, "save_total_limit": 2}', type=TrainConfig)
    assert old.attribution_limit is None and TrainConfig().attribution_limit == 5
    assert TrainConfig(attribution_checkpoints=0).attribution_limit is None
