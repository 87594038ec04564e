"""Requests and results shared by every generation backend."""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

from evaluators.records import Conversation
from service.generation.params import GenerationParams

FinishReason = Literal["stop", "length"]


class GenItem(msgspec.Struct, frozen=True, kw_only=True):
    """One answer to generate.

    `prompt` is a `Conversation` (rendered with the candidate's chat template; a final
    assistant turn is dropped) or a raw string sent as is (the `/v1/completions` case).
    """

    model: str
    prompt: Conversation | str
    params: GenerationParams = msgspec.field(default_factory=GenerationParams)


class Generation(msgspec.Struct, frozen=True, kw_only=True):
    """One generated answer. `finish_reason` is "stop" (eos or a stop string; the text is cut
    before the stop string) or "length" (`max_new_tokens` reached)."""

    model: str
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


class LoglikelihoodItem(msgspec.Struct, frozen=True, kw_only=True):
    """Score `continuation` given `context` (lm-eval's `loglikelihood` request); a
    `Conversation` context is rendered with the candidate's chat template."""

    model: str
    context: Conversation | str
    continuation: str


class Loglikelihood(msgspec.Struct, frozen=True):
    """Sum of log-probabilities of the continuation tokens, and whether greedy decoding
    would have produced exactly those tokens (lm-eval's `(logprob, is_greedy)`)."""

    logprob: float
    is_greedy: bool
    tokens: int


class RollingItem(msgspec.Struct, frozen=True, kw_only=True):
    """Score a whole text (lm-eval's `loglikelihood_rolling`, for perplexity)."""

    model: str
    text: str


class RollingLoglikelihood(msgspec.Struct, frozen=True):
    """Total log-probability of the text and the number of tokens it was scored over."""

    logprob: float
    tokens: int


class GenerationBackend(Protocol):
    """What the service needs from a backend; `InProcessBackend` and `RemoteBackend` both fit."""

    def models(self) -> list[str]: ...

    def context_length(self, model: str) -> int | None: ...

    def render(self, model: str, prompt: Conversation | str) -> str: ...

    def generate(self, items: list[GenItem]) -> list[Generation]: ...
