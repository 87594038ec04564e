"""An OpenAI-compatible API for the service's own candidates: `GET /v1/models`,
`POST /v1/chat/completions`, `POST /v1/completions` (non-streaming and `stream: true`).

`model` is a candidate (or base) name. The official `openai` client works unchanged with
`base_url="http://HOST:PORT/v1"` and `api_key=` an API key; so does `RemoteBackend`, which
is how one service can generate through another.

Every route needs an API key (`Authorization: Bearer`: the admin token or one of
`ARENA_API_KEYS`), as vLLM's `--api-key` does: an answer from a named candidate is what a
reviewer would need to unmask a battle. Battle answers are sampled with a secret seed and
never go through the answer cache these routes read, so even a key holder cannot replay one.

Streaming sends the finished answer as SSE chunks (word-sized pieces, then the finish
reason, then `data: [DONE]`): the in-process backend batches every caller's rows together,
so it has no per-request token stream to forward. Errors therefore come before the stream
starts, with their real status code. Error bodies are the app's problem details plus the
`error` object OpenAI clients read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, JSONBody
from litestar.response import Stream

from service import openai_compat as oa
from service.errors import ArenaError, NotFound
from service.routes.auth import API_KEY

if TYPE_CHECKING:
    from service.serving import Serving

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@contextlib.contextmanager
def _openai_errors() -> Iterator[None]:
    """Add the OpenAI `error` object to an `ArenaError`'s problem details; keep its status,
    except that unusable input is 400 as OpenAI answers it (clients raise BadRequestError)."""
    try:
        yield
    except ArenaError as exc:
        if exc.status == 422:
            exc.status = 400
        exc.extra.setdefault("error", oa.openai_error(exc.status, exc.message, exc.extra.get("param")))
        raise


async def _model_entries(request: Request) -> list[dict]:
    serving: Serving = request.app.state.serving
    store = request.app.state.store
    if not serving.in_process:  # a service generating through another server lists what that serves
        return [oa.model_entry(name) for name in await serving.model_names()]
    bases = {b.name: b for b in await store.list_bases()}
    entries = [oa.model_entry(b.name, b.created_at, root=b.path, context_length=b.context_length) for b in bases.values()]
    for cand in await store.list_candidates():
        base = bases.get(cand.base)
        entries.append(oa.model_entry(cand.name, cand.created_at, parent=cand.base, root=cand.adapter_dir,
                                      context_length=base.context_length if base else None))
    return sorted(entries, key=lambda e: e["id"])


@get("/v1/models", summary="OpenAI-compatible: the candidates and bases that can be asked for answers", **API_KEY)
async def list_models(request: Request) -> dict:
    with _openai_errors():
        return {"object": "list", "data": await _model_entries(request)}


@get("/v1/models/{model:str}", summary="OpenAI-compatible: one model", **API_KEY)
async def get_model(request: Request, model: FromPath[str]) -> dict:
    with _openai_errors():
        entries = await _model_entries(request)
        for entry in entries:
            if entry["id"] == model:
                return entry
        names = [e["id"] for e in entries]
        raise NotFound(f"unknown model {model!r}; available: {', '.join(names) or 'none'}", available=names)


@post("/v1/chat/completions", summary="OpenAI-compatible chat completion from a candidate", status_code=200, **API_KEY)
async def chat_completions(request: Request, data: JSONBody[oa.ChatCompletionRequest]) -> Response:
    with _openai_errors():
        serving: Serving = request.app.state.serving
        item = oa.chat_item(data, serving.settings.max_new_tokens_cap)
        [gen] = await serving.generate([item], use_cache=oa.use_cache(data, item))
    reply = oa.Reply.new("chatcmpl", data.model)
    if data.stream:
        include_usage = bool(data.stream_options and data.stream_options.include_usage)
        return Stream(_sse(oa.chat_chunks(reply, gen, include_usage)), media_type="text/event-stream", headers=_SSE_HEADERS)
    return Response(oa.chat_response(reply, gen))


@post("/v1/completions", summary="OpenAI-compatible text completion from a candidate (prompt sent as is)", status_code=200, **API_KEY)
async def completions(request: Request, data: JSONBody[oa.CompletionRequest]) -> Response:
    with _openai_errors():
        serving: Serving = request.app.state.serving
        item = oa.completion_item(data, serving.settings.max_new_tokens_cap)
        [gen] = await serving.generate([item], use_cache=oa.use_cache(data, item))
    reply = oa.Reply.new("cmpl", data.model)
    if data.stream:
        include_usage = bool(data.stream_options and data.stream_options.include_usage)
        return Stream(_sse(oa.completion_chunks(reply, gen, include_usage)), media_type="text/event-stream", headers=_SSE_HEADERS)
    return Response(oa.completion_response(reply, gen))


def _sse(chunks: Iterable[dict]) -> Iterator[bytes]:
    for chunk in chunks:
        yield b"data: " + msgspec.json.encode(chunk) + b"\n\n"
    yield b"data: [DONE]\n\n"
