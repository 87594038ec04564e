"""How a training batch is laid out: padded, packed (padding-free) or length-grouped.

Every layout collates the same `batch_size` sequences per micro-batch that the plain
padded path would, so the optimizer steps, the examples per step and (with
`num_items_in_batch`, a sum over answer tokens) the loss of each step are the padded
path's; only the compute spent on padding changes.

- **packed**: the batch's sequences are laid end to end in rows no wider than the
  longest of them (first-fit decreasing), `position_ids` restart at 0 for each sequence
  and no attention mask is passed. transformers (`masking_utils.find_packed_sequence_indices`)
  then builds a block-diagonal causal mask for eager and SDPA attention, so no token sees
  another sequence; the first label of each sequence is -100, so no token is trained to
  predict the next sequence's start. `packs_cleanly` checks this on the loaded model
  before it is relied on.
- **grouped**: padded batches of similar lengths (Trainer's `group_by_length` sampler):
  less padding, but batches other than the padded path's.
- **padded**: `DataCollatorForSeq2Seq`, padded to the longest sequence of each batch.

Why not `DataCollatorWithFlattening`: it lays the whole batch in ONE row, and without a
variable-length attention kernel (flash-attention's, GPU only) the masked attention over
that row costs (Σ lengths)², more than the padding it saves (measured on CPU: no faster
than padded with eager attention). Rows bounded by the longest sequence keep attention at
or below the padded cost and drop nearly all the padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from transformers import Trainer

from evaluators.chat_format import IGNORE_INDEX
from service.train_config import InvalidTrainingInput

Packing = Literal["auto", "padded", "packed", "grouped"]

#: Key of the real-token count a packed batch carries (popped before the model sees it).
REAL_TOKENS = "num_real_tokens"

#: "auto" groups by length when random batches would be at least this much padding.
GROUPING_PAD_FRACTION = 0.2


def pack_rows(lengths: Sequence[int]) -> list[list[int]]:
    """Indices of `lengths` grouped into rows no longer than `max(lengths)`, first-fit
    decreasing: the fewest rows this simple rule finds, longest sequences first."""
    width = max(lengths)
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        n = lengths[index]
        row = next((r for r, free in enumerate(room) if free >= n), None)
        if row is None:
            rows.append([index])
            room.append(width - n)
        else:
            rows[row].append(index)
            room[row] -= n
    return rows


class PackedCollator:
    """Collates features (`input_ids`, `labels`) into packed rows: `input_ids`, `labels`,
    `position_ids`, and `REAL_TOKENS` (the batch's tokens, filler excluded).

    A row's unused tail is filler: `filler_id` tokens with label -100 whose positions
    restart at 0, so they form a block of their own that no real token attends to.
    """

    def __init__(self, filler_id: int) -> None:
        self.filler_id = filler_id

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        rows = pack_rows(lengths)
        width = max(lengths)
        input_ids = torch.full((len(rows), width), self.filler_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        for r, members in enumerate(rows):
            at = 0
            for index in members:
                n = lengths[index]
                input_ids[r, at : at + n] = torch.as_tensor(features[index]["input_ids"])
                labels[r, at : at + n] = torch.as_tensor(features[index]["labels"])
                labels[r, at] = IGNORE_INDEX  # the previous sequence's last token predicts nothing
                position_ids[r, at : at + n] = torch.arange(n)
                at += n
            position_ids[r, at:] = torch.arange(width - at)
        return {
            "input_ids": input_ids,
            "labels": labels,
            "position_ids": position_ids,
            REAL_TOKENS: torch.tensor(sum(lengths)),
        }


def packs_cleanly(model: Any, examples: Sequence[Sequence[int]], *, atol: float = 1e-4) -> bool:
    """True when `model` keeps packed sequences apart: the logits of two token sequences
    laid in one row (positions restarting at 0, no attention mask) equal their logits
    computed alone. False for an attention implementation that ignores packed position
    ids (it would let each sequence see the ones before it)."""
    device = next(model.parameters()).device
    first, second = (torch.as_tensor(list(ids[:8]), dtype=torch.long, device=device)
                     for ids in (examples[0], examples[-1]))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = torch.cat([model(input_ids=ids[None]).logits[0] for ids in (first, second)])
            packed = model(
                input_ids=torch.cat([first, second])[None],
                position_ids=torch.cat([torch.arange(len(first)), torch.arange(len(second))]).to(device)[None],
            ).logits[0]
    finally:
        model.train(was_training)
    return bool(torch.allclose(alone, packed, atol=atol, rtol=1e-3))


def padding_fraction(lengths: Sequence[int], batch_size: int, seed: int) -> float:
    """The share of padding in batches of `batch_size` drawn in a seeded random order,
    each padded to its longest sequence: what packing or grouping could save."""
    order = np.random.default_rng(seed).permutation(len(lengths))
    values = np.asarray(lengths)[order]
    padded = sum(int(values[i : i + batch_size].max()) * len(values[i : i + batch_size])
                 for i in range(0, len(values), batch_size))
    return 1.0 - float(values.sum()) / padded


def choose_packing(
    requested: Packing, model: Any, examples: Sequence[Sequence[int]], batch_size: int, seed: int
) -> Literal["padded", "packed", "grouped"]:
    """The layout a run uses: `requested` unless it is "auto"; "auto" packs when the model
    keeps packed sequences apart (`packs_cleanly`), else groups by length when random
    batches would be ≥ `GROUPING_PAD_FRACTION` padding, else pads. Raises
    `InvalidTrainingInput` when "packed" is asked of a model that would mix the sequences."""
    if requested == "packed" and not packs_cleanly(model, examples):
        raise InvalidTrainingInput(
            "packing='packed': this base's attention lets packed sequences see each other "
            "(it ignores restarting position ids); use packing='grouped' or 'padded'"
        )
    if requested != "auto":
        return requested
    if packs_cleanly(model, examples):
        return "packed"
    lengths = [len(ids) for ids in examples]
    if padding_fraction(lengths, batch_size, seed) >= GROUPING_PAD_FRACTION:
        return "grouped"
    return "padded"


class PackingTrainer(Trainer):
    """`Trainer` that counts a packed batch's real tokens (`REAL_TOKENS`; Trainer's own
    "non_padding" count needs an attention mask, which packing must not pass) and keeps
    that count away from the model."""

    def compute_loss(self, model, inputs, *args, **kwargs):
        real = inputs.pop(REAL_TOKENS, None)
        if real is not None and model.training:
            self.state.num_input_tokens_seen += int(real)
        return super().compute_loss(model, inputs, *args, **kwargs)
