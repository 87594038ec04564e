"""Generation from any OpenAI-compatible server, e.g. vLLM started with `--enable-lora
--lora-modules cand-1=/path/to/adapter ...`, where the request's `model` selects the adapter
(adapters loaded at runtime instead: `remote_adapters`).

Conversations go to `/v1/chat/completions` (the server applies the base's chat template);
raw strings to `/v1/completions`. An item with a `TextSink` is asked for with `stream: true`
and each upstream delta goes to the sink as it arrives (a server that answers with one JSON
body instead is read as such); an error event in the middle of the stream fails the item. 429, 5xx, timeouts and connection errors are retried with
exponential backoff (honouring `Retry-After`); what still fails becomes an `ArenaError`
saying what to check.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import msgspec

from evaluators.records import Conversation
from service.errors import ArenaError, InvalidInput, NotFound, Unavailable
from service.generation.items import GenItem, Generation
from service.generation.streaming import TextSink

_RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
_MAX_RETRY_AFTER_S = 30.0


class RemoteBackend:
    """Send generations to an OpenAI-compatible server at `base_url` (with or without `/v1`).

    `generate` is synchronous and sends up to `concurrency` requests at once; `agenerate`
    is its asyncio twin. Each attempt has `timeout` seconds; `retries` more attempts follow
    a retryable failure, `backoff_s * 2**attempt` seconds apart. Call `close()` when done.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        *,
        concurrency: int = 8,
        backoff_s: float = 0.5,
        max_new_tokens_cap: int | None = None,
    ) -> None:
        url = base_url.rstrip("/")
        self.base_url = url[: -len("/v1")] if url.endswith("/v1") else url
        self.retries = retries
        self.backoff_s = backoff_s
        self.concurrency = concurrency
        self.max_new_tokens_cap = max_new_tokens_cap
        self._client_args: dict[str, Any] = {
            "base_url": self.base_url,
            "timeout": timeout,
            "headers": {"Authorization": f"Bearer {api_key}"} if api_key else {},
        }
        self._client = httpx.Client(**self._client_args)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="remote-generation")

    def close(self) -> None:
        """Close the HTTP connections and the sending threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def __enter__(self) -> RemoteBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- models -----------------------------------------------------------------------

    def models(self) -> list[str]:
        """The model (adapter) names the server lists at `/v1/models`, sorted."""
        return sorted(entry["id"] for entry in self.model_entries())

    def context_length(self, model: str) -> int | None:
        """The server's `max_model_len` for `model` (vLLM reports it), or None if not reported.
        Raises `NotFound` listing the server's models when `model` is not among them."""
        entries = self.model_entries()
        for entry in entries:
            if entry.get("id") == model:
                value = entry.get("max_model_len")
                return int(value) if isinstance(value, int) else None
        raise self._not_found(model, sorted(e["id"] for e in entries))

    def render(self, model: str, prompt: Conversation | str) -> str:
        """What identifies the prompt for caching: a string as is; a conversation as canonical
        JSON of its messages (the server applies its own chat template)."""
        if isinstance(prompt, str):
            return prompt
        return msgspec.json.encode(_messages(prompt)).decode()

    def model_entries(self) -> list[dict[str, Any]]:
        """The entries of the server's `/v1/models` (each with an `id`; vLLM adds `root`, `parent`, `max_model_len`)."""
        data = self._send("GET", "/v1/models", None, model=None)
        return [entry for entry in data.get("data", []) if isinstance(entry, dict) and "id" in entry]

    # -- generation -------------------------------------------------------------------

    def generate(self, items: Sequence[GenItem], sinks: Sequence[TextSink | None] | None = None) -> list[Generation]:
        """Answers for `items`, in order, requested concurrently. Raises the first item's
        error: `NotFound` (listing the server's models), `Unavailable`, `InvalidInput`.
        With `sinks` (one per item, or None), each item's text is streamed to its sink and
        the sink is finished with the answer or failed with the error — except a `NotFound`
        before any text, which leaves the sink open for the caller: `Serving` loads the
        adapter a restarted server forgot and asks again, and fails the sink otherwise."""
        sinks = list(sinks) if sinks is not None else [None] * len(items)
        try:
            for item in items:
                item.params.check_cap(self.max_new_tokens_cap)
        except ArenaError as exc:
            for sink in sinks:
                if sink is not None:
                    sink.fail(exc)
            raise
        futures = [self._pool.submit(self._generate_one, item, sink) for item, sink in zip(items, sinks)]
        # Every request runs to its end before the first error is raised: a caller that fails
        # the other items' sinks on that error must not fail one the server is still taking.
        results, error = [], None
        for future in futures:
            try:
                results.append(future.result())
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others
                error = error or exc
        if error is not None:
            raise error
        return results

    async def agenerate(self, items: Sequence[GenItem]) -> list[Generation]:
        """`generate` for asyncio callers: the same requests, retries and errors."""
        for item in items:
            item.params.check_cap(self.max_new_tokens_cap)
        limit = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(**self._client_args) as client:

            async def one(item: GenItem) -> Generation:
                path, body = _request(item)
                async with limit:
                    data = await self._asend(client, "POST", path, body, item.model)
                return _generation(item, data)

            return list(await asyncio.gather(*(one(item) for item in items)))

    def _generate_one(self, item: GenItem, sink: TextSink | None = None) -> Generation:
        path, body = _request(item)
        if sink is None:
            return _generation(item, self._send("POST", path, body, item.model))
        try:
            generation = self._stream_one(item, path, body, sink)
        except NotFound:
            if sink.text:  # cannot happen (the model is found before any text), but never retry sent text
                raise AssertionError("NotFound after text was streamed") from None
            raise  # the sink stays open: see `generate`
        except BaseException as exc:
            sink.fail(exc)
            raise
        sink.finish(generation)
        return generation

    def _stream_one(self, item: GenItem, path: str, body: dict[str, Any], sink: TextSink) -> Generation:
        """One streamed answer: retried like `_send` until the upstream starts answering;
        after that, each delta goes to `sink`. Stops reading (closing the connection, which
        makes vLLM abort the request) once the sink is cancelled."""
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        for attempt in range(self.retries + 1):
            failed = None
            try:
                with self._client.stream("POST", path, json=body) as response:
                    if response.status_code < 400:
                        sink.accept()
                        return self._read_stream(item, response, sink)
                    response.read()
                    failed = response
                    if response.status_code not in _RETRY_STATUSES or attempt == self.retries:
                        if _is_missing_model(response):
                            raise self._not_found(item.model, self.models())
                        raise self._http_error(response, item.model)
            except httpx.TransportError as exc:
                if sink.text:  # text already sent cannot be taken back: no retry
                    raise Unavailable(f"the connection to generation server {self.base_url} broke in the middle of "
                                      f"the answer ({type(exc).__name__}: {exc})") from exc
                if attempt == self.retries:
                    raise self._unreachable(exc) from exc
            time.sleep(self._delay(attempt, failed))
        raise AssertionError("unreachable")

    def _read_stream(self, item: GenItem, response: httpx.Response, sink: TextSink) -> Generation:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            response.read()
            generation = _generation(item, _json(response))
            sink.update(generation.text)
            return generation
        text, finish, usage = "", "stop", {}
        for line in response.iter_lines():
            if sink.cancelled.is_set():
                break
            if not line.startswith("data:"):
                continue
            data = line[len("data:"):].strip()
            if data == "[DONE]":
                break
            try:
                chunk = msgspec.json.decode(data)
            except msgspec.DecodeError:
                raise Unavailable(f"generation server streamed a line that is not JSON for {item.model!r}: {data[:200]!r}") from None
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk:
                error = chunk["error"]
                detail = error.get("message") if isinstance(error, dict) else error
                raise Unavailable(f"generation server {self.base_url} (model {item.model!r}) failed in the middle of "
                                  f"the answer: {str(detail)[:300]}")
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                piece = choice.get("text") if isinstance(item.prompt, str) else delta.get("content")
                if piece:
                    text += piece
                    sink.update(text)
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
        return Generation(model=item.model, text=text, finish_reason="length" if finish == "length" else "stop",
                          prompt_tokens=int(usage.get("prompt_tokens") or 0),
                          completion_tokens=int(usage.get("completion_tokens") or 0))

    # -- HTTP with retries ----------------------------------------------------------------

    def exchange(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        """The server's final response to one request, after retrying transport errors and
        retryable statuses (`Unavailable` when it stays unreachable). Any status comes back:
        the caller reads it (the runtime-adapter calls answer plain text on success)."""
        for attempt in range(self.retries + 1):
            response = None
            try:
                response = self._client.request(method, path, json=body)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise self._unreachable(exc) from exc
            else:
                if response.status_code < 400 or response.status_code not in _RETRY_STATUSES or attempt == self.retries:
                    return response
            time.sleep(self._delay(attempt, response))
        raise AssertionError("unreachable")

    def _send(self, method: str, path: str, body: dict | None, model: str | None) -> dict[str, Any]:
        response = self.exchange(method, path, body)
        if response.status_code < 400:
            return _json(response)
        if model is not None and _is_missing_model(response):
            raise self._not_found(model, self.models())
        raise self._http_error(response, model)

    async def _asend(
        self, client: httpx.AsyncClient, method: str, path: str, body: dict | None, model: str | None
    ) -> dict[str, Any]:
        for attempt in range(self.retries + 1):
            response = None
            try:
                response = await client.request(method, path, json=body)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise self._unreachable(exc) from exc
            else:
                if response.status_code < 400:
                    return _json(response)
                if response.status_code not in _RETRY_STATUSES or attempt == self.retries:
                    if model is not None and _is_missing_model(response):
                        listing = await self._asend(client, "GET", "/v1/models", None, None)
                        raise self._not_found(model, sorted(e["id"] for e in listing.get("data", [])))
                    raise self._http_error(response, model)
            await asyncio.sleep(self._delay(attempt, response))
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            try:
                return min(float(response.headers["retry-after"]), _MAX_RETRY_AFTER_S)
            except (KeyError, ValueError):
                pass
        return self.backoff_s * 2**attempt

    # -- errors ---------------------------------------------------------------------------

    def _unreachable(self, exc: Exception) -> Unavailable:
        return Unavailable(
            f"generation server {self.base_url} is unreachable after {self.retries + 1} attempts "
            f"({type(exc).__name__}: {exc}); check that it is running and ARENA_GENERATION_URL"
        )

    def _not_found(self, model: str, available: list[str]) -> NotFound:
        return NotFound(
            f"model {model!r} is not served by {self.base_url}; available: {', '.join(available) or 'none'}",
            available=available,
        )

    def _http_error(self, response: httpx.Response, model: str | None) -> ArenaError:
        status = response.status_code
        where = f"generation server {self.base_url}" + (f" (model {model!r})" if model else "")
        detail = error_message(response)
        if status in (401, 403):
            return Unavailable(f"{where} refused the credentials ({status}: {detail}); check ARENA_GENERATION_API_KEY")
        if status in _RETRY_STATUSES or status >= 500:
            return Unavailable(f"{where} failed after {self.retries + 1} attempts ({status}: {detail})")
        return InvalidInput(f"{where} rejected the request ({status}: {detail})")


def _messages(conversation: Conversation) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in conversation.prompt_messages]


def _request(item: GenItem) -> tuple[str, dict[str, Any]]:
    params = item.params
    body: dict[str, Any] = {
        "model": item.model,
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
    }
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None and not params.greedy:
        body["seed"] = params.seed
    if isinstance(item.prompt, str):
        body["prompt"] = item.prompt
        return "/v1/completions", body
    body["messages"] = _messages(item.prompt)
    return "/v1/chat/completions", body


def _generation(item: GenItem, data: dict[str, Any]) -> Generation:
    try:
        choice = data["choices"][0]
        text = choice["text"] if isinstance(item.prompt, str) else (choice["message"].get("content") or "")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise Unavailable(f"generation server answered for {item.model!r} without choices: {str(data)[:200]}") from None
    usage = data.get("usage") or {}
    return Generation(
        model=item.model,
        text=text,
        finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise Unavailable(f"generation server answered {response.url} with non-JSON: {response.text[:200]!r}") from None
    if not isinstance(data, dict):
        raise Unavailable(f"generation server answered {response.url} with {type(data).__name__}, not an object")
    return data


def error_message(response: httpx.Response) -> str:
    """What a server said in an error response: OpenAI's `error.message`, vLLM's older
    top-level `message`, FastAPI's `detail`, else the text."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            return str(error.get("message") or error.get("detail") or error)[:300]
        return str(error)[:300]
    return str(data)[:300]


def _is_missing_model(response: httpx.Response) -> bool:
    """vLLM answers 404 for an unknown model; some servers 400 with "does not exist"."""
    if response.status_code == 404:
        return True
    return response.status_code == 400 and "does not exist" in error_message(response).lower()
