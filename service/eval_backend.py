"""The model behind the eval runner: the service's generation backend as the runner's
`ModelBackend` (`BackendModel`), and one shared backend per worker process."""

from __future__ import annotations

import threading
from typing import Any

from evaluators.records import Conversation
from evaluators.runner import GenRequest
from service.config import Settings
from service.errors import InvalidInput


class BackendModel:
    """The runner's `ModelBackend` over the service's generation backend.

    Adapter names are candidate names registered with the backend. Requests go through
    in one call, so an `InProcessBackend` batches every candidate together. The remote
    backend only generates; asking it for log-likelihoods raises `InvalidInput`."""

    #: The generation API refuses more stop strings; the runner cuts at the rest afterwards.
    MAX_STOPS = 16

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def generate(self, requests: list[GenRequest]) -> list[str]:
        from service.generation import GenerationParams, GenItem

        items = []
        for r in requests:
            stops = list(dict.fromkeys(s for s in r.stop if s))[: self.MAX_STOPS]
            params = GenerationParams(max_new_tokens=r.max_new_tokens, temperature=r.temperature, stop=stops)
            # A chat request goes as its conversation: the backend renders it with the
            # candidate's template and its special tokens, exactly as training did.
            prompt = Conversation(messages=r.messages) if r.messages else r.prompt
            items.append(GenItem(model=r.adapter, prompt=prompt, params=params))
        return [g.text for g in self.backend.generate(items)]

    def apply_chat_template(self, adapter: str, messages) -> str:
        """The text the in-process backend gives `adapter` for `messages`; a remote server
        applies its own template, so there the logs keep the plain rendering."""
        from evaluators.records import render_plain

        conversation = Conversation(messages=tuple(messages))
        render = getattr(self.backend, "render", None)  # only a backend that holds the tokenizers has it
        return render(adapter, conversation) if render else render_plain(conversation, add_generation_prompt=True)

    def _scorer(self, name: str):
        fn = getattr(self.backend, name, None)
        if fn is None:
            raise InvalidInput(f"the {type(self.backend).__name__} cannot score log-likelihoods; multiple_choice and "
                               "loglikelihood_rolling tasks need the in-process backend")
        return fn

    def loglikelihood(self, requests: list[tuple[str, str, str]]) -> list[tuple[float, bool]]:
        from service.generation import LoglikelihoodItem

        items = [LoglikelihoodItem(model=a, context=c, continuation=x) for a, c, x in requests]
        return [(r.logprob, r.is_greedy) for r in self._scorer("loglikelihood")(items)]

    def loglikelihood_rolling(self, requests: list[tuple[str, str]]) -> list[float]:
        from service.generation import RollingItem

        items = [RollingItem(model=a, text=t) for a, t in requests]
        return [r.logprob for r in self._scorer("loglikelihood_rolling")(items)]


_backends: dict[tuple, Any] = {}
_backends_lock = threading.Lock()


def shared_backend(settings: Settings) -> Any:
    """One generation backend per worker process and configuration: a base loaded for one
    eval stays loaded for the next."""
    from service.generation import backend_from_settings

    key = (settings.generation_url, settings.generation_api_key, settings.adapter_cache_size,
           settings.max_new_tokens_cap)
    with _backends_lock:
        if key not in _backends:
            _backends[key] = backend_from_settings(settings)
        return _backends[key]
