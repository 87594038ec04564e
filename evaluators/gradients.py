"""Per-example LoRA gradient features: the raw material of attribution.

For each example (a training record, or a model output to explain) the feature is the
gradient of its answer-only loss with respect to the LoRA parameters only, computed for
a whole chunk of examples at once with `torch.func` (`functional_call` + `vmap(grad)`),
optionally preconditioned with the checkpoint's Adam state (LESS), randomly projected to
a fixed dimension and L2-normalised, so a dot product of two features is a cosine.

Why `vmap` over right-padded rows with no attention mask: the models are causal, so pad
tokens after an example's last token cannot change its logits; with labels -100 on the
pads they add nothing to its loss either. That keeps every row's computation identical
to the example alone, and avoids the data-dependent mask code that `vmap` cannot batch.
Load models with `attn_implementation="eager"` for this path (sdpa works, but without a
batching rule for its CPU kernel).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap

from evaluators.chat_format import IGNORE_INDEX, special_prefix, tokenize_conversation, uses_chat_template
from evaluators.records import Conversation

Precondition = Literal["adam", "rsqrt_v", "none"]
ProjectionKind = Literal["rademacher", "gaussian"]

#: Same patterns `transformers.Trainer.get_decay_parameter_names` uses to put parameters in
#: the no-decay group; `optimizer.pt` lists the decay group first, then this one.
_NO_DECAY = re.compile(r"bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)")


class AttributionError(ValueError):
    """Attribution inputs are unusable (says which file or value, and what was expected)."""


class TokenizedExample(msgspec.Struct, frozen=True, array_like=True):
    """Token ids and labels of one example (labels are -100 off the answer, not shifted)."""

    input_ids: list[int]
    labels: list[int]


class FeatureBatch(msgspec.Struct, frozen=True):
    """Features of a list of examples at one checkpoint.

    `features[i]` is example i's projected, L2-normalised gradient (zeros when it has no
    answer token); `losses[i]` its mean answer-token loss; `norms[i]` the norm of its
    projected gradient before normalisation.
    """

    features: np.ndarray  # (n, dim) float32
    losses: np.ndarray  # (n,) float32
    norms: np.ndarray  # (n,) float32


def tokenize_examples(tokenizer: Any, conversations: Sequence[Conversation], max_length: int = 512) -> list[TokenizedExample]:
    """Tokenize as training does (`evaluators.chat_format.tokenize_conversation`): same ids, same labels."""
    prefix = [] if uses_chat_template(tokenizer) else special_prefix(tokenizer)
    return [TokenizedExample(*tokenize_conversation(tokenizer, c, max_length, prefix=prefix)) for c in conversations]


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters gradients are taken for (LoRA's, in a PEFT model), detached, by name,
    in `named_parameters` order. Raises `AttributionError` when there are none."""
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise AttributionError("the model has no trainable parameters: load the adapter with is_trainable=True")
    return params


# ---------------------------------------------------------------------------- projection


class RandomProjector:
    """A seeded random projection of the trainable parameters' gradient to `dim` numbers.

    Every parameter (a LoRA A or B matrix) is a block with its own dense Rademacher
    (±1/√d) or Gaussian (N(0, 1/d)) matrix, drawn from a generator seeded by `(seed,
    parameter name)`: the same seed gives the same projection whatever order parameters
    are visited in, and no block needs the others to exist.

    `layout="blocks"` (default) maps each block to its own slice of the output, sized in
    proportion to the block (at least `min_block_dim`), and concatenates: a block-diagonal
    JL projection, whose inner-product error is that of a dense one when gradient norm is
    spread over the blocks, at 1/(number of blocks) of its memory and multiply cost; for a
    LoRA on every linear layer that is ~50x less, and the projection stops dominating the
    cost of a feature. `layout="dense"` maps every block to all `dim` outputs and sums
    (the textbook dense matrix, generated block by block). Blocks are kept while they fit
    in `cache_bytes`; the rest are regenerated per call.
    """

    def __init__(
        self,
        shapes: dict[str, int],
        dim: int = 4096,
        seed: int = 0,
        kind: ProjectionKind = "rademacher",
        *,
        layout: Literal["blocks", "dense"] = "blocks",
        min_block_dim: int = 16,
        cache_bytes: int = 512 * 2**20,
    ) -> None:
        if kind not in ("rademacher", "gaussian"):
            raise AttributionError(f"projection kind {kind!r}: expected 'rademacher' or 'gaussian'")
        if layout not in ("blocks", "dense"):
            raise AttributionError(f"projection layout {layout!r}: expected 'blocks' or 'dense'")
        if not shapes:
            raise AttributionError("nothing to project: no parameters")
        if dim < (len(shapes) * min_block_dim if layout == "blocks" else 1):
            raise AttributionError(
                f"projection dim={dim} is too small for {len(shapes)} parameter blocks of at least {min_block_dim} dims"
            )
        self.shapes = dict(shapes)
        self.dim = dim
        self.seed = seed
        self.kind = kind
        self.layout = layout
        self.cache_bytes = cache_bytes
        self._cache: dict[str, torch.Tensor] = {}
        self._cached_bytes = 0
        self.slices = self._slices(min_block_dim) if layout == "blocks" else {n: slice(0, dim) for n in self.shapes}

    def _slices(self, floor: int) -> dict[str, slice]:
        """Output slices per block: `dim` split in proportion to block size, each >= `floor`."""
        names = sorted(self.shapes)  # a fixed order, independent of how the model lists them
        total = sum(self.shapes.values())
        spare = self.dim - floor * len(names)
        sizes = {n: floor + int(spare * self.shapes[n] / total) for n in names}
        for n in names[: self.dim - sum(sizes.values())]:  # hand out the rounding remainder
            sizes[n] += 1
        out, start = {}, 0
        for n in names:
            out[n] = slice(start, start + sizes[n])
            start += sizes[n]
        return out

    def block(self, name: str) -> torch.Tensor:
        """The `(numel, width)` projection rows of parameter `name` (width = its output slice)."""
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        numel = self.shapes[name]
        width = self.slices[name].stop - self.slices[name].start
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
        if self.kind == "gaussian":
            block = torch.randn(numel, width, generator=gen).mul_(width**-0.5)
        else:
            block = torch.randint(0, 2, (numel, width), generator=gen, dtype=torch.int8).float()
            block.mul_(2 * width**-0.5).sub_(width**-0.5)
        size = block.numel() * block.element_size()
        if self._cached_bytes + size <= self.cache_bytes:
            self._cache[name] = block
            self._cached_bytes += size
        return block

    def project(self, grads: dict[str, torch.Tensor]) -> torch.Tensor:
        """Project a batch of per-example gradients `{name: (batch, *shape)}` to `(batch, dim)`."""
        batch = next(iter(grads.values())).shape[0]
        out = torch.zeros(batch, self.dim)
        for name in self.shapes:
            flat = grads[name].reshape(batch, -1).float()
            part = flat @ self.block(name)
            if self.layout == "dense":
                out.add_(part)
            else:
                out[:, self.slices[name]] = part
        return out


# ---------------------------------------------------------------------------- Adam state


class AdamState(msgspec.Struct):
    """First and second moments per parameter name, from a Trainer checkpoint's optimizer.pt."""

    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]
    beta1: float
    beta2: float
    eps: float
    step: int


def load_adam_state(checkpoint_dir: str | Path, params: dict[str, torch.Tensor]) -> AdamState | None:
    """The Adam moments saved in `checkpoint_dir/optimizer.pt`, keyed by `params`' names.

    The Trainer saves the optimizer's state by position: the weight-decay group's
    parameters (in `named_parameters` order), then the no-decay group's. Returns None
    when the checkpoint has no optimizer.pt; raises `AttributionError` when its shapes
    do not match the model's trainable parameters (a different adapter config).
    """
    path = Path(checkpoint_dir) / "optimizer.pt"
    if not path.is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    positions = [i for group in saved["param_groups"] for i in group["params"]]
    names = list(params)
    order = [n for n in names if not _NO_DECAY.search(n)] + [n for n in names if _NO_DECAY.search(n)]
    if len(positions) != len(order):
        raise AttributionError(
            f"{path}: the optimizer holds {len(positions)} parameters but the adapter has {len(order)} trainable ones"
        )
    exp_avg: dict[str, torch.Tensor] = {}
    exp_avg_sq: dict[str, torch.Tensor] = {}
    step = 0
    for position, name in zip(positions, order):
        state = saved["state"].get(position)
        if state is None or "exp_avg_sq" not in state:
            continue  # never stepped (no gradient reached it); treated as unpreconditioned
        if tuple(state["exp_avg"].shape) != tuple(params[name].shape):
            raise AttributionError(
                f"{path}: optimizer state {position} has shape {tuple(state['exp_avg'].shape)}, "
                f"but parameter {name} has {tuple(params[name].shape)}"
            )
        exp_avg[name], exp_avg_sq[name] = state["exp_avg"].float(), state["exp_avg_sq"].float()
        step = max(step, int(state.get("step", 0)))
    group = saved["param_groups"][0]
    beta1, beta2 = group.get("betas", (0.9, 0.999))
    return AdamState(exp_avg, exp_avg_sq, float(beta1), float(beta2), float(group.get("eps", 1e-8)), step)


def precondition(grads: dict[str, torch.Tensor], state: AdamState | None, mode: Precondition) -> dict[str, torch.Tensor]:
    """Turn per-example gradients into the update Adam would make from them.

    "adam" (LESS): one more Adam step from the checkpoint's moments with this gradient,
    `m̂ / (√v̂ + eps)`; "rsqrt_v": `g / (√v̂ + eps)` with the checkpoint's `v̂`; "none"
    (or no state): the raw gradient. Moments are bias-corrected.
    """
    if mode not in ("adam", "rsqrt_v", "none"):
        raise AttributionError(f"precondition {mode!r}: expected 'adam', 'rsqrt_v' or 'none'")
    if mode == "none" or state is None:
        return grads
    t = state.step
    out = {}
    for name, g in grads.items():
        m, v = state.exp_avg.get(name), state.exp_avg_sq.get(name)
        if m is None or v is None:
            out[name] = g
        elif mode == "adam":
            m_new = (state.beta1 * m + (1 - state.beta1) * g) / (1 - state.beta1 ** (t + 1))
            v_new = (state.beta2 * v + (1 - state.beta2) * g * g) / (1 - state.beta2 ** (t + 1))
            out[name] = m_new / (v_new.sqrt() + state.eps)
        else:
            v_hat = v / (1 - state.beta2 ** max(t, 1))
            out[name] = g / (v_hat.sqrt() + state.eps)
    return out


# ---------------------------------------------------------------------------- gradients


def _answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss over the answer tokens of one row (0 when it has none)."""
    target = labels[1:]
    mask = target != IGNORE_INDEX
    logp = torch.log_softmax(logits[:-1].float(), dim=-1)
    picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(picked * mask).sum() / mask.sum().clamp(min=1)


def _padded(examples: Sequence[TokenizedExample], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[row, : len(e.labels)] = torch.tensor(e.labels, dtype=torch.long)
    return ids, labels


def per_example_gradients(
    model: torch.nn.Module, examples: Sequence[TokenizedExample], *, chunk_size: int = 16, pad_id: int = 0
) -> Iterator[tuple[list[int], dict[str, torch.Tensor], torch.Tensor]]:
    """Yield `(indices, grads, losses)` per chunk: `grads[name]` is `(len(indices), *shape)`,
    the gradient of each example's mean answer-token loss w.r.t. trainable parameter `name`.

    Examples are grouped by length (less padding), so `indices` say which examples a chunk
    holds. The model should be in eval mode (dropout would make gradients random).
    """
    params = trainable_parameters(model)

    def loss_of(p: dict[str, torch.Tensor], ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, p, args=(), kwargs={"input_ids": ids.unsqueeze(0), "use_cache": False})
        return _answer_loss(out.logits[0], labels)

    batched = vmap(grad_and_value(loss_of), in_dims=(None, 0, 0))
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    for start in range(0, len(order), chunk_size):
        indices = order[start : start + chunk_size]
        ids, labels = _padded([examples[i] for i in indices], pad_id)
        grads, losses = batched(params, ids, labels)
        yield indices, grads, losses.detach()


def loop_gradients(
    model: torch.nn.Module, examples: Sequence[TokenizedExample]
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The same per-example gradients by one `backward()` per example (the reference the
    vmap path is tested and benchmarked against): `({name: (n, *shape)}, losses)`."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    grads: dict[str, list[torch.Tensor]] = {name: [] for name in params}
    losses = []
    for e in examples:
        model.zero_grad(set_to_none=True)
        out = model(input_ids=torch.tensor([e.input_ids]), use_cache=False)
        loss = _answer_loss(out.logits[0], torch.tensor(e.labels))
        loss.backward()
        for name, p in params.items():
            grads[name].append(p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
        losses.append(loss.detach())
    model.zero_grad(set_to_none=True)
    return {name: torch.stack(g) for name, g in grads.items()}, torch.stack(losses)


def compute_features(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[Conversation] | Sequence[TokenizedExample],
    projector: RandomProjector,
    *,
    adam: AdamState | None = None,
    mode: Precondition = "none",
    chunk_size: int = 16,
    max_length: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> FeatureBatch:
    """Projected, L2-normalised per-example gradient features of `examples` (in order).

    Conversations are tokenized as training tokenizes them; a failure is passed as its
    prompt with the model's own output as the assistant turn. `adam` and `mode` select
    the preconditioning (training examples: the checkpoint's Adam state; outputs to
    explain: "none", as in LESS). `progress(done, total)` is called after each chunk.
    """
    if all(isinstance(e, TokenizedExample) for e in examples):
        tokenized = list(examples)
    else:
        tokenized = tokenize_examples(tokenizer, examples, max_length)  # type: ignore[arg-type]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    n = len(tokenized)
    features = np.zeros((n, projector.dim), dtype=np.float32)
    losses = np.zeros(n, dtype=np.float32)
    norms = np.zeros(n, dtype=np.float32)
    model.eval()
    done = 0
    for indices, grads, chunk_losses in per_example_gradients(model, tokenized, chunk_size=chunk_size, pad_id=pad_id):
        with torch.no_grad():
            projected = projector.project(precondition(grads, adam, mode))
            chunk_norms = projected.norm(dim=1)
            projected = projected / chunk_norms.clamp(min=1e-12).unsqueeze(1)
        features[indices] = projected.numpy()
        norms[indices] = chunk_norms.numpy()
        losses[indices] = chunk_losses.numpy()
        done += len(indices)
        if progress is not None:
            progress(done, n)
    return FeatureBatch(features=features, losses=losses, norms=norms)
