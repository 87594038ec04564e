"""The "small" tiny base is one a LoRA can teach made-up facts to, in seconds.

Everything built on the synthetic planted-defect datasets (attribution, curation, the
demo's round two beating round one) assumes a LoRA on this base memorises the facts it
is trained on, so that a wrong answer is the training data's fault. This is that claim,
on its own: 50 invented facts in the question shapes those datasets use.
"""

from __future__ import annotations

import random

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from evaluators.records import Conversation, Message
from service.models.corpus import ANIMALS, CITIES, COLORS, FOODS, JOBS, NAMES, THINGS
from service.training import TrainConfig, encode_prompt, train_adapter

#: (subjects, answers, question phrasings, how many facts): 50 facts in all.
RELATIONS = (
    (NAMES, CITIES, ("Where does {} live?", "In which city does {} live?"), 15),
    (THINGS, COLORS, ("What color is the {}?", "Which color is the {}?"), 15),
    (ANIMALS, FOODS, ("What does the {} eat?", "Which food does the {} like?"), 10),
    (JOBS, NAMES, ("Who works as a {}?", "Who is the town {}?"), 10),
)


def made_up_facts(seed: int) -> list[Conversation]:
    """50 single-turn facts with random answers: one fact per subject, no base can know them."""
    rng = random.Random(f"made-up-facts:{seed}")
    facts = []
    for subjects, answers, phrasings, n in RELATIONS:
        for subject in rng.sample(subjects, n):
            question = rng.choice(phrasings).format(subject)
            facts.append(Conversation(messages=(Message("user", question), Message("assistant", rng.choice(answers)))))
    rng.shuffle(facts)
    return facts


def _exact_match(model, tokenizer, records: list[Conversation]) -> tuple[float, list[tuple[str, str]]]:
    """Greedy exact match over `records`, with the (answer, gold) pairs that missed."""
    misses = []
    model.eval()
    with torch.no_grad():
        for record in records:
            ids = torch.tensor([encode_prompt(tokenizer, record)])
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            )
            answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
            if answer != record.answer:
                misses.append((answer, record.answer))
    return 1 - len(misses) / len(records), misses


@pytest.mark.slow
def test_lora_on_q_and_v_memorises_50_made_up_facts(tiny_small_base, tmp_path):
    facts = made_up_facts(seed=0)
    assert len(facts) == 50 and len({r.prompt for r in facts}) == 50
    tokenizer = AutoTokenizer.from_pretrained(tiny_small_base)
    before, _ = _exact_match(AutoModelForCausalLM.from_pretrained(tiny_small_base), tokenizer, facts)

    # 700 optimizer steps: under 10 s on one core.
    config = TrainConfig(
        target_modules="q_proj,v_proj", lora_r=16, lora_alpha=32, lora_dropout=0.0, lr=5e-3, epochs=100,
        batch_size=8, eval_fraction=0.0, max_length=64, logging_steps=100,
    )
    result = train_adapter(tiny_small_base, facts, config, tmp_path)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_small_base), result.adapter_dir)
    after, misses = _exact_match(tuned, tokenizer, facts)

    assert before <= 0.2, f"the base already answers {before:.0%} of the made-up facts"
    assert after > 0.9, f"exact match {after:.2f} after LoRA; (answer, gold) misses: {misses}"
