"""Training checkpoints as the trace reads them: their step, the learning rate logged at it,
the base with a checkpoint's adapter loaded trainable, and swapping in another checkpoint's
adapter weights."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from evaluators.gradients import AttributionError



def checkpoint_step(path: str | Path) -> int:
    """The training step of a checkpoint directory (`checkpoint-N`, else its trainer_state.json)."""
    path = Path(path)
    match = re.fullmatch(r"checkpoint-(\d+)", path.name)
    if match:
        return int(match.group(1))
    state = path / "trainer_state.json"
    if state.is_file():
        return int(json.loads(state.read_text()).get("global_step", 0))
    raise AttributionError(f"{path}: not a checkpoint (expected checkpoint-N or a trainer_state.json)")


def lr_at(path: Path, step: int) -> float | None:
    """The learning rate logged closest before `step` in the checkpoint's trainer_state.json."""
    state = path / "trainer_state.json"
    if not state.is_file():
        return None
    logged = [
        (e["step"], e["learning_rate"])
        for e in json.loads(state.read_text()).get("log_history", [])
        if "learning_rate" in e
    ]
    before = [lr for s, lr in logged if s <= step]
    return float(before[-1]) if before else None


def load_checkpoint_model(base_dir: str | Path, adapter_dir: str | Path) -> tuple[Any, Any]:
    """`(model, tokenizer)`: the base at `base_dir` with the LoRA adapter of `adapter_dir`
    loaded trainable (so its parameters get gradients), eager attention, float32, eval mode."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=True)
    model.eval()
    return model, tokenizer


def load_adapter_weights(model: Any, adapter_dir: Path) -> None:
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    result = set_peft_model_state_dict(model, load_peft_weights(str(adapter_dir), device="cpu"))
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise AttributionError(f"{adapter_dir}: adapter weights do not fit the first checkpoint's adapter: {unexpected[:3]}")
