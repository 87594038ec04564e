"""A DPO candidate from simulated votes: export the votes, train from the SFT candidate with
TRL's DPOTrainer through `arena train --method dpo`, and measure that the preferred
answers gained log-likelihood over the rejected ones."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from evaluators.chat_format import IGNORE_INDEX, tokenize_conversation
from evaluators.records import Conversation, Message
from service.bases import make_base
from service.domain import Candidate
from service.models.corpus import word_task
from service.store import SyncStore
from tests.redis_fixtures import settings_env
from tests.service.test_preferences import cast_votes

pytestmark = pytest.mark.slow


def voted_pairs(n: int = 16) -> list[tuple[str, str, str]]:
    """(prompt, right answer, wrong answer) of the "second word" task: the reviewers
    prefer the second word to the last one."""
    out = []
    for record in word_task("second_word", n, seed=11):
        prompt, right = record.messages[0].content, record.messages[1].content
        wrong = prompt.rstrip("?").split()[-1]
        out.append((prompt, right, wrong))
    return out


def margins(base: Path, adapter_dir: str, pairs: list[tuple[str, str, str]]) -> list[float]:
    """log p(right | prompt) − log p(wrong | prompt) per pair, summed over the answer tokens
    (answer and end-of-turn marker), in the format the candidate was trained in."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter_dir).eval()

    def loglik(prompt: str, answer: str) -> float:
        ids, labels = tokenize_conversation(
            tokenizer, Conversation(messages=(Message("user", prompt), Message("assistant", answer))), 512)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
        targets = torch.tensor(labels[1:])
        keep = targets != IGNORE_INDEX
        return float(torch.log_softmax(logits[keep], -1).gather(1, targets[keep, None]).sum())

    return [loglik(p, right) - loglik(p, wrong) for p, right, wrong in pairs]


def test_dpo_from_simulated_votes_grows_the_preferred_answers_margin(settings, tiny_base, trained_adapter, tmp_path):
    store = SyncStore(settings.redis_url, settings.key_prefix)
    store.put_base(make_base("tiny", tiny_base, "tiny"))
    store.add_candidate(Candidate(name="sft", base="tiny", dataset="words@1", dataset_id="0" * 16, run_id="run_" + "0" * 16,
                                  adapter_dir=trained_adapter.adapter_dir, config={}, metrics={}, created_at=time.time()))
    pairs = voted_pairs()
    # Sides alternate, so the preferred answer is A in half the battles and B in the rest.
    votes = [(p, right, wrong, "a", "ann") if i % 2 == 0 else (p, wrong, right, "b", "bob")
             for i, (p, right, wrong) in enumerate(pairs)]
    cast_votes(settings, votes + [(pairs[0][0], "x", "y", "tie", "ann"), (pairs[1][0], "x", "y", "both_bad", "bob")])

    env = settings_env(settings)

    def arena(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "service.cli", *args], env=env, capture_output=True, text=True, timeout=600)

    prefs = tmp_path / "prefs.jsonl"
    out = arena("battles", "export", str(prefs), "--format", "dpo")
    assert out.returncode == 0 and "wrote 16 preference pairs" in out.stdout, out.stderr
    out = arena("train", "--method", "dpo", "--base", "tiny", "--from", "sft", "--preferences", str(prefs), "--name", "sft-dpo",
                "--max-steps", "24", "--batch-size", "4", "--lr", "5e-3", "--beta", "0.1", "--logging-steps", "1", "--wait",
                "--json")
    assert out.returncode == 0, out.stderr
    (final,) = json.loads(out.stdout)
    assert final["status"] == "succeeded", final["error"]
    assert final["result"]["steps"] == 24 and final["result"]["reward_accuracy"] > 0.9

    # Lineage: base, parent, the preference file's hash, method and config.
    cand = store.get_candidate("sft-dpo")
    assert (cand.method, cand.parent, cand.base, cand.dataset) == ("dpo", "sft", "tiny", "words@1")
    assert cand.preferences == {"source": "file prefs.jsonl", "sha256": hashlib.sha256(prefs.read_bytes()).hexdigest(),
                                "pairs": 16}
    assert cand.config["beta"] == 0.1 and cand.config["lr"] == 5e-3
    # Progress as SFT runs report it, with DPO's reward margin; at the first step the policy
    # IS its reference (the SFT adapter), so the margin starts at exactly zero.
    events = [e for _, e in store.read_job_events(cand.run_id, count=1000) if e.get("type") == "progress" and "loss" in e]
    assert [e["step"] for e in events] == list(range(1, 25))
    assert events[0]["reward_margin"] == pytest.approx(0.0, abs=1e-6) and events[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    # TRL's reward margin is β × (log-ratio of chosen − of rejected): 0.1 here is one nat.
    assert events[-1]["reward_margin"] > 0.1
    run_dir = settings.data_dir / "runs" / cand.run_id
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir())[-1] == "checkpoint-24"
    assert not (Path(cand.adapter_dir) / "ref").exists()  # the frozen reference copy is not part of the candidate
    store.close()

    before = margins(tiny_base, trained_adapter.adapter_dir, pairs)
    after = margins(tiny_base, cand.adapter_dir, pairs)
    gained = [b - a for a, b in zip(before, after)]
    assert sum(after) / len(after) > sum(before) / len(before) + 1.0, (before, after)
    assert sum(g > 0 for g in gained) >= 14, gained


def test_a_dpo_run_resumes_from_its_checkpoint_and_refuses_another_runs_directory(tiny_base, trained_adapter, tmp_path):
    from service.dpo import DPOTrainConfig, train_dpo
    from service.preferences import PreferencePair
    from service.train_config import RunConflict, TrainingCancelled

    pairs = [PreferencePair(prompt=[Message("user", p)], chosen=[Message("assistant", right)],
                            rejected=[Message("assistant", wrong)]) for p, right, wrong in voted_pairs(8)]
    config = DPOTrainConfig(max_steps=6, save_steps=3, batch_size=4, lr=5e-3, logging_steps=1)
    out = tmp_path / "run"
    steps: list[int] = []
    with pytest.raises(TrainingCancelled):  # a worker told to stop at step 4 leaves checkpoint-3
        train_dpo(tiny_base, trained_adapter.adapter_dir, pairs, config, out, on_log=lambda e: steps.append(e["step"]),
                  should_stop=lambda: len(steps) >= 4)
    assert not (out / "adapter").exists()
    result = train_dpo(tiny_base, trained_adapter.adapter_dir, pairs, config, out)
    assert result.resumed_from.endswith("checkpoint-3") and result.global_step == 6
    assert [p.step for p in result.loss_curve] == [1, 2, 3, 4, 5, 6] and [c.step for c in result.checkpoints] == [3, 6]
    assert train_dpo(tiny_base, trained_adapter.adapter_dir, pairs, config, out) == result  # finished: not trained again
    with pytest.raises(RunConflict):
        train_dpo(tiny_base, trained_adapter.adapter_dir, pairs, DPOTrainConfig(max_steps=6, beta=0.5, batch_size=4), out)
