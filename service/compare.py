"""Side by side: one prompt, every named candidate's answer, in one call.

`POST /api/compare` and `arena compare` both call `compare`. The candidates' rows share
generation batches (the in-process backend mixes adapters in one forward pass), and
answers come from the Redis cache when the same candidate already answered the same
rendered prompt with the same params, unless `no_cache`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec

from service.errors import InvalidInput

if TYPE_CHECKING:  # importing service.generation imports torch; the app starts without it
    from service.generation import GenerationParams
    from service.serving import Serving

#: More candidates than this in one comparison is a benchmark; use `arena eval`.
MAX_CANDIDATES = 16


class CompareRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`prompt` is one user turn, rendered with each candidate's own chat template.
    `params` are `GenerationParams` fields (greedy, 128 new tokens by default)."""

    prompt: str
    candidates: list[str]
    params: dict[str, object] = {}
    no_cache: bool = False


class Answer(msgspec.Struct, kw_only=True):
    candidate: str
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class Comparison(msgspec.Struct, kw_only=True):
    """Every candidate's answer, in the order asked, and how long the call took."""

    prompt: str
    params: dict[str, object]
    answers: list[Answer]
    wall_s: float


def generation_params(raw: dict[str, object]) -> GenerationParams:
    """`GenerationParams` from a JSON object; raises `InvalidInput` naming the bad field."""
    from service.generation import GenerationParams

    try:
        return msgspec.convert(raw, GenerationParams)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"params: {exc}") from None


async def compare(serving: Serving, request: CompareRequest) -> Comparison:
    """Each candidate's answer to `request.prompt`. Raises `NotFound` (listing the available
    names) for an unknown candidate and `InvalidInput` for an empty prompt, a repeated or
    missing candidate, bad params, or a prompt too long for a candidate's context."""
    from evaluators.records import user_turn
    from service.generation import GenItem

    if not request.prompt.strip():
        raise InvalidInput("prompt is empty")
    names = [name.strip() for name in request.candidates]
    if not names or not all(names):
        raise InvalidInput("candidates: name at least one candidate (no empty names)")
    if len(names) > MAX_CANDIDATES:
        raise InvalidInput(f"candidates: {len(names)} named; at most {MAX_CANDIDATES} can be compared in one call")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidInput(f"candidates: {', '.join(repeated)} named more than once")
    params = generation_params(request.params)
    conversation = user_turn(request.prompt)
    started = time.perf_counter()
    generations = await serving.generate(
        [GenItem(model=name, prompt=conversation, params=params) for name in names], use_cache=not request.no_cache
    )
    answers = [
        Answer(candidate=name, text=g.text, finish_reason=g.finish_reason, prompt_tokens=g.prompt_tokens,
               completion_tokens=g.completion_tokens)
        for name, g in zip(names, generations)
    ]
    return Comparison(prompt=request.prompt, params=msgspec.to_builtins(params),
                      answers=answers, wall_s=round(time.perf_counter() - started, 4))
