"""Per-row decoding rules for mixed batches: each row keeps its own sampling parameters,
seed, stop strings and token budget while sharing forward passes with the other rows.

`transformers.generate` takes one sampling config per call, so sampling is done here, in a
logits processor that draws each sampled row's token from that row's own `torch.Generator`
and leaves only that token possible; `generate` then runs greedy (argmax), which picks it.
A seeded item thus gives the same answer alone or in any batch.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor, StoppingCriteria

from service.generation.params import GenerationParams


class RowSampler(LogitsProcessor):
    """Temperature / top-p sampling per row; greedy rows pass through untouched."""

    def __init__(self, params: Sequence[GenerationParams]) -> None:
        self._params = list(params)
        self._seeds = [p.seed if p.seed is not None else secrets.randbits(63) for p in self._params]
        self._generators: list[torch.Generator | None] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._generators is None:
            self._generators = [
                None if p.greedy else torch.Generator(device=scores.device).manual_seed(seed)
                for p, seed in zip(self._params, self._seeds)
            ]
        for row, (p, generator) in enumerate(zip(self._params, self._generators)):
            if generator is None:
                continue
            probs = torch.softmax(scores[row].float() / p.temperature, dim=-1)
            if p.top_p < 1.0:
                sorted_probs, order = torch.sort(probs, descending=True)
                # Keep the smallest prefix whose mass reaches top_p (always at least one token).
                outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= p.top_p
                sorted_probs[outside] = 0.0
                probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
            token = torch.multinomial(probs, 1, generator=generator)
            scores[row] = float("-inf")
            scores[row, token] = 0.0
        return scores


class RowStops(StoppingCriteria):
    """Stops each row at eos, at one of its stop strings, at its own `max_new_tokens`, or
    once its `cancelled` event is set (a streaming reader went away), and records where and
    why. `generate` stops early once every row is done.

    Stop strings are searched in the decoded tail of the new tokens (a window long enough
    to hold the longest stop string); the final text is cut on the full decode.
    """

    def __init__(
        self,
        prompt_width: int,
        params: Sequence[GenerationParams],
        eos_ids: frozenset[int],
        decode,
        cancelled: Sequence[threading.Event | None] | None = None,
    ) -> None:
        self._width = prompt_width
        self._cancelled = list(cancelled) if cancelled is not None else [None] * len(params)
        self._params = list(params)
        self._eos = eos_ids
        self._decode = decode
        # A character is at most 4 bytes and a byte-level token at least one, plus slack
        # for tokenizers that drop a leading space when decoding a slice.
        self._windows = [4 * max((len(s) for s in p.stop), default=0) + 8 for p in self._params]
        self.finished_at: list[int | None] = [None] * len(self._params)
        self.reasons: list[str | None] = [None] * len(self._params)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        new = input_ids.shape[1] - self._width
        last = input_ids[:, -1].tolist()
        done = []
        for row, p in enumerate(self._params):
            if self.finished_at[row] is None:
                reason = None
                if last[row] in self._eos:
                    reason = "stop"
                elif p.stop and self._has_stop(input_ids[row], new, row):
                    reason = "stop"
                elif new >= p.max_new_tokens:
                    reason = "length"
                elif self._cancelled[row] is not None and self._cancelled[row].is_set():
                    reason = "cancelled"
                if reason is not None:
                    self.finished_at[row], self.reasons[row] = new, reason
            done.append(self.finished_at[row] is not None)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _has_stop(self, ids: torch.Tensor, new: int, row: int) -> bool:
        start = self._width + max(0, new - self._windows[row])
        tail = self._decode(ids[start:].tolist())
        return any(s in tail for s in self._params[row].stop)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
