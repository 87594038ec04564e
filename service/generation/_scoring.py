"""Log-likelihood scoring for benchmarks: token pairs in, summed log-probabilities out.

The tokenization follows lm-evaluation-harness (`HFLM._encode_pair`, rolling windows) so
scores are comparable with lm-eval runs of the same model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from service.errors import InvalidInput

TokenPair = tuple[list[int], list[int]]


def encode_pair(encode: Callable[[str], list[int]], context: str, continuation: str) -> TokenPair:
    """Context and continuation token ids, split where lm-eval splits them: trailing spaces of
    the context move to the continuation, and the pair is encoded whole so merges across the
    boundary match what the model saw in training."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation = context[-spaces:] + continuation
        context = context[:-spaces]
    whole = encode(context + continuation)
    ctx = encode(context)
    return ctx, whole[len(ctx):]


def rolling_windows(ids: Sequence[int], prefix_id: int, max_len: int) -> list[TokenPair]:
    """Disjoint windows covering every token once (lm-eval's `get_rolling_token_windows` with
    context_len=1): the first predicts from `prefix_id`, each later window from the token
    before it, so each window's input fits in `max_len`."""
    pairs: list[TokenPair] = []
    for start in range(0, len(ids), max_len):
        ctx = [prefix_id] if start == 0 else [ids[start - 1]]
        pairs.append((ctx, list(ids[start : start + max_len])))
    return pairs


def fit_to_context(pair: TokenPair, max_len: int, prefix_id: int, what: str) -> TokenPair:
    """Cut the context from the left so the scored input (context + continuation minus its
    last token) fits in `max_len`; an empty context becomes `[prefix_id]`."""
    ctx, cont = pair
    if not cont:
        raise InvalidInput(f"{what}: the continuation is empty; nothing to score")
    if len(cont) > max_len:
        raise InvalidInput(f"{what}: the continuation is {len(cont)} tokens; the limit is {max_len}")
    ctx = ctx or [prefix_id]
    keep = max_len + 1 - len(cont)
    return ctx[-keep:], cont


def score_pairs(
    forward: Callable[..., torch.Tensor],
    pairs: Sequence[TokenPair],
    adapter_names: Sequence[str] | None,
    pad_id: int,
    device: torch.device,
) -> list[tuple[float, bool]]:
    """(sum log p(continuation | context), greedy match) per pair, in one forward pass.

    Rows are left-padded so every continuation ends at the last position and only
    the last `max(len(continuation))` logits are computed (`logits_to_keep`).
    """
    inputs = [ctx + cont[:-1] for ctx, cont in pairs]
    width = max(len(x) for x in inputs)
    keep = max(len(cont) for _, cont in pairs)
    input_ids = torch.full((len(inputs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(inputs), width), dtype=torch.long)
    for row, ids in enumerate(inputs):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        mask[row, width - len(ids) :] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    kwargs = {"adapter_names": list(adapter_names)} if adapter_names is not None else {}
    logits = forward(
        input_ids=input_ids.to(device),
        attention_mask=mask.to(device),
        position_ids=position_ids.to(device),
        logits_to_keep=keep,
        **kwargs,
    )
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    out = []
    for row, (_, cont) in enumerate(pairs):
        target = torch.tensor(cont, device=logprobs.device)
        rows = logprobs[row, keep - len(cont) :]
        total = rows.gather(-1, target[:, None]).sum().item()
        greedy = bool((rows.argmax(-1) == target).all().item())
        out.append((total, greedy))
    return out
