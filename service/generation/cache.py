"""Cache keys for generated answers (the Redis cache itself lives in `service.store`)."""

from __future__ import annotations

import hashlib

import msgspec

from service.generation.params import GenerationParams

#: Bump when the meaning of a cached answer changes (e.g. a new decoding rule).
_KEY_VERSION = "gen/v1"


def cache_key(candidate_id: str, rendered_prompt: str, params: GenerationParams) -> str:
    """Hex sha256 identifying one answer: the same candidate, rendered prompt and
    (normalised) params give the same key across processes and versions of Python.

    Pass the prompt as the backend renders it (`backend.render(model, prompt)`), so a change
    of chat template is a different key. An unseeded sampled answer has a key too: caching
    it memoises one draw. Battles never use this cache (their answers must not be
    reproducible through the generation endpoints that read it).
    """
    payload = [_KEY_VERSION, candidate_id, rendered_prompt, params.canonical()]
    return hashlib.sha256(msgspec.json.encode(payload, order="sorted")).hexdigest()
