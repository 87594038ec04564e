"""What a caller may ask of a generation: how many tokens, how random, where to stop."""

from __future__ import annotations

import math

import msgspec

from service.errors import InvalidInput

#: More stop strings than this is almost always a client bug; OpenAI allows 4, vLLM more.
MAX_STOP_STRINGS = 16
#: Temperatures below this decode greedily (as vLLM does): dividing float32 logits by a
#: smaller number overflows to inf and the sampler would fail for the whole batch.
MIN_SAMPLING_TEMPERATURE = 1e-5
#: Smaller top_p values underflow to 0 in float32 and would cut every token.
MIN_TOP_P = 1e-6


class GenerationParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Sampling parameters for one generation.

    `temperature == 0` is greedy decoding (the default for benchmarks and the generation
    endpoints; battles sample, see `service.battles.battle_params`); `seed` fixes a sampled
    answer (it is ignored when greedy). Invalid values raise
    `InvalidInput` at construction and when decoded from JSON.
    """

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = []
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise InvalidInput(f"max_new_tokens={self.max_new_tokens!r}: expected an integer >= 1")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise InvalidInput(f"temperature={self.temperature!r}: expected a number >= 0 (0 is greedy)")
        if not math.isfinite(self.top_p) or not MIN_TOP_P <= self.top_p <= 1:
            raise InvalidInput(f"top_p={self.top_p!r}: expected a number in [{MIN_TOP_P}, 1]")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise InvalidInput(f"stop has {len(self.stop)} strings; at most {MAX_STOP_STRINGS} are allowed")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise InvalidInput("stop strings must be non-empty strings")

    @property
    def greedy(self) -> bool:
        """True when decoding is deterministic argmax (temperature 0, or below 1e-5)."""
        return self.temperature < MIN_SAMPLING_TEMPERATURE

    def check_cap(self, cap: int | None) -> GenerationParams:
        """Return self, or raise `InvalidInput` naming the limit when `max_new_tokens` exceeds `cap`.

        `cap` is the service's `ARENA_MAX_NEW_TOKENS_CAP`; `None` means no cap.
        """
        if cap is not None and self.max_new_tokens > cap:
            raise InvalidInput(
                f"max_new_tokens={self.max_new_tokens} is over the limit of {cap}; ask for {cap} or fewer",
                limit=cap,
            )
        return self

    def canonical(self) -> dict[str, object]:
        """The fields that change the output, normalised: greedy ignores `top_p` and `seed`,
        and the order of stop strings does not matter. Used for cache keys."""
        return {
            "max_new_tokens": int(self.max_new_tokens),
            "temperature": 0.0 if self.greedy else float(self.temperature),
            "top_p": 1.0 if self.greedy else float(self.top_p),
            "stop": sorted(set(self.stop)),
            "seed": None if self.greedy else self.seed,
        }
