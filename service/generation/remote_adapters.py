"""Runtime LoRA adapters on a vLLM OpenAI server: list, load, unload.

vLLM started with `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` offers
`POST /v1/load_lora_adapter {"lora_name", "lora_path"}` and
`POST /v1/unload_lora_adapter {"lora_name"}`; both answer 200 with plain text, and errors
as JSON (`{"error": {"message", "type", "code"}}`, older versions the same fields at the top
level). `GET /v1/models` lists each loaded adapter with its path as `root`. vLLM forgets
runtime adapters when it restarts, and refuses (400) to load a name it already has: that
is success here only when the path is the same one.
"""

from __future__ import annotations

from service.errors import ArenaError, Conflict, InvalidInput, Unavailable
from service.generation.remote import RemoteBackend, error_message

_RUNTIME_LORA_HINT = ("start vLLM with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or serve the adapter "
                      "yourself (--lora-modules NAME=PATH)")


class RemoteAdapters:
    """The runtime-adapter calls of the server behind `backend` (its URL, key and retries).
    Synchronous: async callers run them in a thread."""

    def __init__(self, backend: RemoteBackend) -> None:
        self.backend = backend

    @property
    def where(self) -> str:
        return f"generation server {self.backend.base_url}"

    def loaded(self) -> dict[str, str | None]:
        """Every model the server lists, name → its `root` (an adapter's path; None when
        the server does not say)."""
        return {e["id"]: e.get("root") if isinstance(e.get("root"), str) else None
                for e in self.backend.model_entries()}

    def load(self, name: str, path: str, *, _again: bool = True) -> bool:
        """Load the adapter at `path` (as the server sees it) under `name`. Returns True when
        it was loaded now, False when the server already had `name` from this `path`.

        Raises `Conflict` when the server has `name` from another path, `InvalidInput` when
        it refuses (its message quoted: a rank over `--max-lora-rank`, a path it cannot read,
        runtime loading off), `Unavailable` when it cannot be reached or fails."""
        response = self.backend.exchange("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
        if response.status_code < 400:
            return True
        said = error_message(response)
        if response.status_code == 400 and "already been loaded" in said:
            listed = self.loaded()
            if serves_from(listed, name, path):
                return False
            if name in listed:
                raise Conflict(f"{self.where} already serves {name!r} from {listed[name]}, not from {path}; unload it there "
                               "or rename the candidate", remote=self.backend.base_url)
            if _again:  # unloaded in between: try once more
                return self.load(name, path, _again=False)
        raise self._refused(f"refused to load adapter {name!r} from {path}", response, said)

    def unload(self, name: str) -> bool:
        """Unload `name`. Returns False when the server did not have it (nothing to do)."""
        response = self.backend.exchange("POST", "/v1/unload_lora_adapter", {"lora_name": name})
        if response.status_code < 400:
            return True
        said = error_message(response)
        if response.status_code == 404 and not _route_missing(response):
            return False
        raise self._refused(f"refused to unload adapter {name!r}", response, said)

    def _refused(self, what: str, response, said: str) -> ArenaError:
        status = response.status_code
        if _route_missing(response):
            return InvalidInput(f"{self.where} has no runtime LoRA loading ({status} on {response.request.url.path}): "
                                f"{_RUNTIME_LORA_HINT}", remote=self.backend.base_url)
        if status in (401, 403):
            return Unavailable(f"{self.where} refused the credentials ({status}: {said}); check ARENA_GENERATION_API_KEY",
                               remote=self.backend.base_url)
        if status >= 500 or status in (408, 429):
            return Unavailable(f"{self.where} {what} ({status}: {said})", remote=self.backend.base_url)
        return InvalidInput(f"{self.where} {what} ({status}: {said}); check ARENA_REMOTE_ADAPTER_ROOT and the "
                            "server's --max-lora-rank", remote=self.backend.base_url)


def serves_from(listed: dict[str, str | None], name: str, path: str) -> bool:
    """Whether a server's listing (`RemoteAdapters.loaded`) has `name` from `path` (or
    without saying from where): ours to keep, or to unload."""
    return name in listed and listed[name] in (None, path)


def _route_missing(response) -> bool:
    """FastAPI's own 404 (no such route), as opposed to vLLM's 404 for an unknown adapter."""
    if response.status_code not in (404, 405):
        return False
    try:
        return response.json() == {"detail": "Not Found"} or response.status_code == 405
    except ValueError:
        return True
