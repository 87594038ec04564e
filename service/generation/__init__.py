"""Generation: answers from candidates (base + LoRA adapter), in process or from a remote
OpenAI-compatible server, behind one interface (`GenerationBackend`).

    backend = InProcessBackend(max_adapters=8)
    backend.register("cand-1", base_dir, adapter_dir)
    [answer] = backend.generate([GenItem(model="cand-1", prompt=user_turn("hi"))])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.generation.cache import cache_key
from service.generation.items import (
    FinishReason,
    GenerationBackend,
    Generation,
    GenItem,
    Loglikelihood,
    LoglikelihoodItem,
    RollingItem,
    RollingLoglikelihood,
)
from service.generation.params import GenerationParams
from service.generation.remote import RemoteBackend

if TYPE_CHECKING:
    from service.config import Settings
    from service.generation.inprocess import InProcessBackend


def __getattr__(name: str):
    # The in-process backend imports torch and transformers (~400 MB, seconds): only when
    # asked for, so an API with a remote backend, or that never generates, never pays it.
    if name == "InProcessBackend":
        from service.generation.inprocess import InProcessBackend

        return InProcessBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "FinishReason",
    "GenItem",
    "Generation",
    "GenerationBackend",
    "GenerationParams",
    "InProcessBackend",
    "Loglikelihood",
    "LoglikelihoodItem",
    "RemoteBackend",
    "RollingItem",
    "RollingLoglikelihood",
    "backend_from_settings",
    "cache_key",
]


def backend_from_settings(settings: Settings) -> InProcessBackend | RemoteBackend:
    """The backend the settings ask for: `RemoteBackend` when `ARENA_GENERATION_URL` is set,
    else an `InProcessBackend` keeping `ARENA_ADAPTER_CACHE_SIZE` adapters in memory. Both
    enforce `ARENA_MAX_NEW_TOKENS_CAP`; candidates are registered by the caller."""
    if settings.generation_url:
        return RemoteBackend(
            settings.generation_url,
            api_key=settings.generation_api_key,
            max_new_tokens_cap=settings.max_new_tokens_cap,
        )
    from service.generation.inprocess import InProcessBackend

    return InProcessBackend(
        max_adapters=settings.adapter_cache_size, max_new_tokens_cap=settings.max_new_tokens_cap
    )
