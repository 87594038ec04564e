"""An OpenAI-compatible API for the service's own candidates: `GET /v1/models`,
`POST /v1/chat/completions`, `POST /v1/completions` (non-streaming and `stream: true`).

`model` is a candidate (or base) name. The official `openai` client works unchanged with
`base_url="http://HOST:PORT/v1"` and `api_key=` an API key; so does `RemoteBackend`, which
is how one service can generate through another.

Every route needs an API key (`Authorization: Bearer`: the admin token or one of
`ARENA_API_KEYS`), as vLLM's `--api-key` does: an answer from a named candidate is what a
reviewer would need to unmask a battle. Battle answers are sampled with a secret seed and
never go through the answer cache these routes read, so even a key holder cannot replay one.

Streaming (`stream: true`) sends the text as it is generated: the in-process backend's
streamer hands each row of a mixed batch its tokens as they come, a remote backend's
upstream deltas are forwarded as they arrive (under this server's id and model name). The
response starts once the backend has taken the request, so refusals keep their real
status code; a failure after that is an `error` event (the official client raises
it). A client that disconnects stops its answer's generation. A cached answer streams at
once, in word-sized pieces. Error bodies are the app's problem details plus the `error`
object OpenAI clients read.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, JSONBody
from litestar.response import ServerSentEvent

from service import openai_compat as oa
from service.errors import ArenaError, NotFound
from service.routes.auth import API_KEY, API_KEY_JSON

if TYPE_CHECKING:
    from service.generation import GenItem, Generation
    from service.serving import Serving

log = logging.getLogger("arena.openai")

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


@post("/v1/chat/completions", summary="OpenAI-compatible chat completion from a candidate", status_code=200, **API_KEY_JSON)
async def chat_completions(request: Request, data: JSONBody[oa.ChatCompletionRequest]) -> Response:
    with _openai_errors():
        serving: Serving = request.app.state.serving
        item = oa.chat_item(data, serving.settings.max_new_tokens_cap)
        reply = oa.Reply.new("chatcmpl", data.model)
        if data.stream:
            return await _stream(serving, item, data, "chat.completion.chunk",
                                 lambda text: oa.chat_chunk(reply, {"content": text}),
                                 lambda gen: oa.chat_chunk(reply, {}, gen.finish_reason),
                                 start=oa.chat_chunk(reply, {"role": "assistant", "content": ""}), reply=reply)
        [gen] = await serving.generate([item], use_cache=oa.use_cache(data, item))
    return Response(oa.chat_response(reply, gen))


@post("/v1/completions", summary="OpenAI-compatible text completion from a candidate (prompt sent as is)", status_code=200, **API_KEY_JSON)
async def completions(request: Request, data: JSONBody[oa.CompletionRequest]) -> Response:
    with _openai_errors():
        serving: Serving = request.app.state.serving
        item = oa.completion_item(data, serving.settings.max_new_tokens_cap)
        reply = oa.Reply.new("cmpl", data.model)
        if data.stream:
            return await _stream(serving, item, data, "text_completion",
                                 lambda text: oa.completion_chunk(reply, text),
                                 lambda gen: oa.completion_chunk(reply, "", gen.finish_reason), start=None, reply=reply)
        [gen] = await serving.generate([item], use_cache=oa.use_cache(data, item))
    return Response(oa.completion_response(reply, gen))


async def _stream(serving: Serving, item: GenItem, data: oa._Sampling, obj: str, text_chunk: Callable[[str], dict],
                  finish_chunk: Callable[[Generation], dict], *, start: dict | None, reply: oa.Reply) -> ServerSentEvent:
    """The SSE response of a streamed answer, begun once the backend has taken it (an error
    before that is raised here, with its status)."""
    [sink] = await serving.stream([item], use_cache=oa.use_cache(data, item))
    include_usage = bool(data.stream_options and data.stream_options.include_usage)

    async def events() -> AsyncIterator[str]:
        try:
            if start is not None:
                yield _sse(start)
            async for text in sink:
                yield _sse(text_chunk(text))
            gen = sink.generation
            yield _sse(finish_chunk(gen))
            if include_usage:
                yield _sse(oa.usage_chunk(reply, obj, gen))
        except ArenaError as exc:
            yield _sse(oa.error_event(exc.message))
        except Exception:  # noqa: BLE001 - the status is sent already: say it in the stream
            log.exception("streamed answer failed")
            yield _sse(oa.error_event("generation failed in the middle of the answer (the service log says why)"))
        finally:
            if not sink.closed:  # the client went away mid-answer: stop generating it
                sink.cancel()
        yield "[DONE]"

    return ServerSentEvent(events(), headers=_SSE_HEADERS)


def _sse(chunk: dict[str, Any]) -> str:
    """One event's data: the chunk as JSON (one line, as OpenAI clients read it)."""
    return msgspec.json.encode(chunk).decode()
