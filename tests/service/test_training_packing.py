"""Packed (padding-free) training: the same loss and gradients as padding, no record seeing
another, and the layout "auto" picks."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq

from evaluators.chat_format import IGNORE_INDEX, tokenize_conversation
from service.models.corpus import word_task
from service.packing import REAL_TOKENS, PackedCollator, choose_packing, pack_rows, padding_fraction
from service.training import InvalidTrainingInput, TrainConfig, train_adapter


def _features(tokenizer, n: int = 8) -> list[dict[str, list[int]]]:
    """`n` records of clearly different lengths (1 to 12 words to reverse)."""
    records = word_task("reverse", n, seed=5, min_words=1, max_words=12)
    out = []
    for record in records:
        ids, labels = tokenize_conversation(tokenizer, record, max_length=512)
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return out


def _lora(tiny_base: Path, attn: str = "sdpa"):
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32, attn_implementation=attn)
    model.config.use_cache = False
    torch.manual_seed(0)
    # init_lora_weights=False: B is random too, so the adapter changes the outputs and A gets gradients.
    config = LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0, init_lora_weights=False)
    return get_peft_model(model, config)


def _per_token_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of every position against its shifted label (0 where untrained)."""
    inputs = {k: v for k, v in batch.items() if k not in ("labels", REAL_TOKENS)}
    logits = model(**inputs).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return loss.view(labels.shape)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_a_packed_batch_has_the_padded_batch_loss_and_gradients(tiny_base, attn):
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    features = _features(tokenizer)
    padded = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=IGNORE_INDEX)(features)
    packed = PackedCollator(filler_id=tokenizer.pad_token_id)(features)
    assert packed["input_ids"].shape[0] < len(features)  # several records share a row
    assert packed["input_ids"].shape[1] == max(len(f["input_ids"]) for f in features)
    assert int(packed[REAL_TOKENS]) == sum(len(f["input_ids"]) for f in features)

    model = _lora(tiny_base, attn)
    losses, grads = [], []
    for batch in (padded, packed):
        model.zero_grad()
        out = model(**{k: v for k, v in batch.items() if k != REAL_TOKENS})
        out.loss.backward()
        losses.append(out.loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]))
    assert torch.allclose(losses[0], losses[1], atol=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-4)
    assert grads[0].abs().max() > 1e-3  # real gradients, not zeros compared with zeros


def test_packed_records_never_see_each_other(tiny_base):
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    features = _features(tokenizer)
    collate = PackedCollator(filler_id=tokenizer.pad_token_id)
    model = _lora(tiny_base).eval()
    with torch.no_grad():
        packed = _per_token_loss(model, collate(features))
        # Each record alone gives the per-token loss it has inside the packed batch.
        alone = [_per_token_loss(model, collate([f]))[0] for f in features]
        trained = packed[packed != 0]
        assert torch.allclose(trained.sort().values, torch.cat([a[a != 0] for a in alone]).sort().values, atol=1e-5)

        # Changing one record's tokens leaves every other record's loss untouched, the
        # records packed after it in its row included.
        rows = pack_rows([len(f["input_ids"]) for f in features])
        victim = next(row for row in rows if len(row) >= 2)[0]
        changed = [dict(f) for f in features]
        changed[victim]["input_ids"] = [(t + 7) % model.config.vocab_size for t in features[victim]["input_ids"]]
        changed[victim]["labels"] = [IGNORE_INDEX] * len(features[victim]["labels"])
        after = _per_token_loss(model, collate(changed))
    assert rows == pack_rows([len(f["input_ids"]) for f in changed])  # the same layout
    untouched = after != 0
    assert untouched.sum() == (packed != 0).sum() - sum(1 for label in features[victim]["labels"][1:] if label != -100)
    assert torch.allclose(after[untouched], packed[untouched], atol=1e-5)


def test_packed_labels_stop_at_each_record_boundary(tiny_base):
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    features = _features(tokenizer)
    # A record whose first token is trained (as a template might have it) still gets -100 there.
    features[0] = {**features[0], "labels": list(features[0]["input_ids"])}
    batch = PackedCollator(filler_id=tokenizer.pad_token_id)(features)
    starts = batch["position_ids"] == 0
    assert (batch["labels"][starts] == IGNORE_INDEX).all()
    assert int(starts.sum()) >= len(features)  # one start per record, plus each row's filler
    for row in pack_rows([5, 1, 3, 3, 2]):
        assert sum([5, 1, 3, 3, 2][i] for i in row) <= 5
    assert sorted(i for row in pack_rows([5, 1, 3, 3, 2]) for i in row) == [0, 1, 2, 3, 4]


def test_auto_falls_back_when_the_attention_mixes_packed_records(tiny_base):
    class IgnoresPositions(torch.nn.Module):
        """A model whose attention ignores restarting position ids: packed records would mix."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, position_ids=None, **kwargs):
            return self.inner(input_ids=input_ids, **kwargs)

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = _lora(tiny_base)
    varied = [f["input_ids"] for f in _features(tokenizer, 32)]
    uniform = [varied[0]] * 32
    assert choose_packing("auto", model, varied, 8, 0) == "packed"
    assert choose_packing("auto", IgnoresPositions(model), varied, 8, 0) == "grouped"
    assert padding_fraction([len(ids) for ids in varied], 8, 0) > 0.2
    assert choose_packing("auto", IgnoresPositions(model), uniform, 8, 0) == "padded"
    assert choose_packing("grouped", model, varied, 8, 0) == "grouped"
    with pytest.raises(InvalidTrainingInput, match="packed sequences see each other"):
        choose_packing("packed", IgnoresPositions(model), varied, 8, 0)
    with pytest.raises(InvalidTrainingInput, match="config.packing='tight'"):
        TrainConfig(packing="tight")


def test_a_packed_run_trains_like_a_padded_run(tiny_base, tmp_path):
    """Same steps on the same batches: the loss curve, eval loss, token count and adapter agree
    to float rounding. (With LoRA dropout they would not: its masks are drawn over
    differently shaped tensors, so only their distribution is the same.)"""
    records = word_task("reverse", 40, seed=3, min_words=1, max_words=12)
    config = TrainConfig(epochs=2, batch_size=8, lr=5e-3, eval_fraction=0.2, logging_steps=1, lora_dropout=0.0)
    padded = train_adapter(tiny_base, records, msgspec.structs.replace(config, packing="padded"), tmp_path / "pad")
    auto = train_adapter(tiny_base, records, config, tmp_path / "auto")
    grouped = train_adapter(tiny_base, records, msgspec.structs.replace(config, packing="grouped"), tmp_path / "grp")

    assert (padded.packing, auto.packing, grouped.packing) == ("padded", "packed", "grouped")
    assert auto.global_step == padded.global_step == grouped.global_step == 8
    assert auto.train_tokens == padded.train_tokens == grouped.train_tokens  # real tokens, filler not counted
    assert [p.step for p in auto.loss_curve] == [p.step for p in padded.loss_curve]
    for a, b in zip(auto.loss_curve, padded.loss_curve, strict=True):
        assert a.loss == pytest.approx(b.loss, abs=1e-5) and a.eval_loss == pytest.approx(b.eval_loss, abs=1e-5)
    weights_auto, weights_padded = load_file(Path(auto.adapter_dir) / "adapter_model.safetensors"), load_file(
        Path(padded.adapter_dir) / "adapter_model.safetensors")
    for name, value in weights_padded.items():
        assert torch.allclose(weights_auto[name], value, atol=1e-5), name
    # Checkpoints with optimizer state (what attribution reads) are kept the same way.
    assert [c.step for c in auto.checkpoints] == [c.step for c in padded.checkpoints] == [4, 8]
    assert all((Path(c.path) / "optimizer.pt").is_file() for c in auto.checkpoints)
