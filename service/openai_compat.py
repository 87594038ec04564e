"""The OpenAI wire format, translated to and from the service's generation types.

Requests (`ChatCompletionRequest`, `CompletionRequest`) become one `GenItem`; a `Generation`
becomes a response body, and a stream's text deltas become chunks. Only what changes an answer is honoured
(`temperature`, `top_p`, `max_tokens` / `max_completion_tokens`, `stop`, `seed`); asking for
something we cannot do (`n > 1`, logprobs, tools, penalties, `echo`) is a 400 naming the
field, never a silently different answer. Other fields a client sends (`user`, `metadata`,
...) are ignored, as vLLM does.

Defaults follow OpenAI, not the arena: `temperature` 1.0, `max_tokens` 16 for completions
and 128 for chat (OpenAI's is "the rest of the context", too slow a surprise on a CPU).
The routes live in `service/routes/openai.py`.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from evaluators.records import Conversation, Message
from service.errors import InvalidInput

if TYPE_CHECKING:  # importing service.generation imports torch; the app starts without it
    from service.generation import GenerationParams, GenItem, Generation

#: Default `max_tokens` when a request gives none (OpenAI's legacy completions default is 16).
CHAT_DEFAULT_MAX_TOKENS = 128
COMPLETION_DEFAULT_MAX_TOKENS = 16
#: OpenAI's own limit on stop sequences.
MAX_STOP = 4

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool = False


class ChatMessage(msgspec.Struct, kw_only=True):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class _Sampling(msgspec.Struct, kw_only=True):
    """Fields shared by both endpoints. `no_cache` is ours (send it with the openai
    client's `extra_body`): generate again even when the answer is cached."""

    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    #: A 64-bit integer, as torch's generator takes (a seed past it was a 500, or an error mid-stream).
    seed: Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)] | None = None
    n: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    no_cache: bool = False


class ChatCompletionRequest(_Sampling, kw_only=True):
    """`POST /v1/chat/completions`."""

    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(_Sampling, kw_only=True):
    """`POST /v1/completions`. `prompt` is one string (a list holding one string is accepted)."""

    prompt: str | list[Any]
    echo: bool | None = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None


# -- requests -> GenItem ------------------------------------------------------------------


def chat_item(request: ChatCompletionRequest, cap: int | None) -> GenItem:
    """The `GenItem` a chat request asks for. Raises `InvalidInput` naming the offending field."""
    from service.generation import GenItem

    _refuse(request, logprobs=bool(request.logprobs), top_logprobs=bool(request.top_logprobs), tools=bool(request.tools))
    kind = (request.response_format or {}).get("type", "text")
    if kind != "text":  # answering free text to a client that parses JSON would fail it later, and far away
        raise InvalidInput(f"response_format type {kind!r} is not supported by this server (no constrained decoding); "
                           "ask for text", param="response_format")
    max_tokens = request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
    field = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    params = _params(request, max_tokens, field, CHAT_DEFAULT_MAX_TOKENS, cap)
    return GenItem(model=request.model, prompt=_conversation(request.messages), params=params)


def completion_item(request: CompletionRequest, cap: int | None) -> GenItem:
    """The `GenItem` a completions request asks for; the prompt is sent to the model as is."""
    from service.generation import GenItem

    _refuse(request, echo=bool(request.echo), logprobs=request.logprobs is not None,
            best_of=request.best_of not in (None, 1), suffix=bool(request.suffix))
    prompt = request.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise InvalidInput("prompt: expected one string (batches of prompts and token ids are not supported)", param="prompt")
        prompt = prompt[0]
    if not prompt:
        raise InvalidInput("prompt is empty", param="prompt")
    params = _params(request, request.max_tokens, "max_tokens", COMPLETION_DEFAULT_MAX_TOKENS, cap)
    return GenItem(model=request.model, prompt=prompt, params=params)


def use_cache(request: _Sampling, item: GenItem) -> bool:
    """Whether the answer may come from (and go to) the cache: a repeatable answer (greedy or
    seeded) unless the request says `no_cache`. An unseeded sampled answer is drawn anew each
    time, as an OpenAI client expects."""
    return not request.no_cache and (item.params.greedy or item.params.seed is not None)


def _refuse(request: _Sampling, **asked: bool) -> None:
    asked |= {
        "frequency_penalty": bool(request.frequency_penalty),
        "presence_penalty": bool(request.presence_penalty),
        "logit_bias": bool(request.logit_bias),
    }
    if request.n not in (None, 1):
        raise InvalidInput(f"n={request.n}: only n=1 is supported; send n requests instead", param="n")
    for name, value in asked.items():
        if value:
            raise InvalidInput(f"{name} is not supported by this server; leave it out", param=name)


def _params(request: _Sampling, max_tokens: int | None, field: str, default: int, cap: int | None) -> GenerationParams:
    from service.generation import GenerationParams

    if max_tokens is None:
        max_tokens = default if cap is None else min(default, cap)
    if cap is not None and max_tokens > cap:
        raise InvalidInput(f"{field}={max_tokens} is over the limit of {cap}; ask for {cap} or fewer", param=field, limit=cap)
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if len(stop) > MAX_STOP:
        raise InvalidInput(f"stop has {len(stop)} sequences; at most {MAX_STOP} are allowed", param="stop")
    try:
        return GenerationParams(
            max_new_tokens=max_tokens,
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            stop=stop,
            seed=request.seed,
        )
    except InvalidInput as exc:  # say it in the client's field names
        raise InvalidInput(exc.message.replace("max_new_tokens", field), **exc.extra) from None


def _conversation(messages: list[ChatMessage]) -> Conversation:
    if not messages:
        raise InvalidInput("messages is empty: send at least one user message", param="messages")
    turns = []
    for n, message in enumerate(messages):
        role = _ROLES.get(message.role)
        if role is None:
            raise InvalidInput(
                f"messages[{n}].role={message.role!r}: expected one of {', '.join(_ROLES)} (tool turns are not supported)",
                param=f"messages[{n}].role",
            )
        if message.content is None and role != "assistant":
            raise InvalidInput(f"messages[{n}].content is null: a {message.role} message needs its text",
                               param=f"messages[{n}].content")
        turns.append(Message(role, _text(message.content, n)))
    if turns[-1].role == "assistant":
        raise InvalidInput("the last message is an assistant turn; end with a user turn (continuing an answer is not supported)",
                           param="messages")
    return Conversation(messages=tuple(turns))


def _text(content: str | list[dict[str, Any]] | None, n: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise InvalidInput(f"messages[{n}].content: only text parts are supported, got type {part.get('type')!r}",
                               param=f"messages[{n}].content")
        parts.append(part["text"])
    return "".join(parts)


# -- Generation -> responses --------------------------------------------------------------


class Reply(msgspec.Struct, frozen=True):
    """What every response and chunk of one answer shares."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, prefix: str, model: str) -> Reply:
        return cls(id=f"{prefix}-{uuid.uuid4().hex}", created=int(time.time()), model=model)


def usage(gen: Generation) -> dict[str, int]:
    return {
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": gen.completion_tokens,
        "total_tokens": gen.prompt_tokens + gen.completion_tokens,
    }


def chat_response(reply: Reply, gen: Generation) -> dict[str, Any]:
    """A `chat.completion` object."""
    return {
        "id": reply.id,
        "object": "chat.completion",
        "created": reply.created,
        "model": reply.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text},
                     "finish_reason": gen.finish_reason, "logprobs": None}],
        "usage": usage(gen),
    }


def completion_response(reply: Reply, gen: Generation) -> dict[str, Any]:
    """A `text_completion` object."""
    return {
        "id": reply.id,
        "object": "text_completion",
        "created": reply.created,
        "model": reply.model,
        "choices": [{"index": 0, "text": gen.text, "finish_reason": gen.finish_reason, "logprobs": None}],
        "usage": usage(gen),
    }


def chat_chunk(reply: Reply, delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
    """One `chat.completion.chunk`: the first carries the role, then text deltas, then the
    finish reason with an empty delta."""
    return {"id": reply.id, "object": "chat.completion.chunk", "created": reply.created, "model": reply.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}


def completion_chunk(reply: Reply, text: str, finish: str | None = None) -> dict[str, Any]:
    """One streamed `text_completion` chunk."""
    return {"id": reply.id, "object": "text_completion", "created": reply.created, "model": reply.model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}


def usage_chunk(reply: Reply, obj: str, gen: Generation) -> dict[str, Any]:
    """The last chunk with `stream_options.include_usage`: no choices, the usage."""
    return {"id": reply.id, "object": obj, "created": reply.created, "model": reply.model, "choices": [], "usage": usage(gen)}


def error_event(message: str) -> dict[str, Any]:
    """What a stream sends when the answer fails after it started (the status is already
    200): an `error` object, which the official client raises as `APIError`, as vLLM does."""
    return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}


def model_entry(name: str, created: float = 0, *, parent: str | None = None, root: str | None = None,
                context_length: int | None = None) -> dict[str, Any]:
    """One `/v1/models` entry, with vLLM's extra fields (`root`, `parent`, `max_model_len`),
    which `RemoteBackend.context_length` reads."""
    entry: dict[str, Any] = {"id": name, "object": "model", "created": int(created), "owned_by": "adapter-arena",
                             "root": root or name, "parent": parent}
    if context_length:
        entry["max_model_len"] = context_length
    return entry


def openai_error(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """The `error` object OpenAI clients read from a failed response."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    code = {404: "model_not_found", 401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)
    return {"message": message, "type": kind, "param": param, "code": code}
