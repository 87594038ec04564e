"""Answers as they are generated: a `TextSink` per streamed item, fed by the backend's
generation thread, read by one asyncio consumer.

A backend calls `sink.accept()` once it has taken the item (the prompt fits, the upstream
answered 200), `sink.update(text_so_far)` whenever the answer grows and `sink.finish(gen)`
(or `sink.fail(exc)`) at the end; the consumer iterates the sink and gets text deltas whose
concatenation is exactly `gen.text`. A backend sends only text that will not change:
`settled_text` holds back an incomplete UTF-8 character and any tail that could begin a
stop string, since the final answer is cut before the stop string.

The in-process backend streams a whole mixed-adapter batch through `_batch.RowStreamer`, a
transformers streamer (`generate(streamer=...)`) that hands each row's new token to that
row's sink; `transformers.TextIteratorStreamer` takes one row only, and the battle's two
sides (and concurrent `/v1` callers) share batches. It lives with the batch code, so that
this module (which the API imports) never imports transformers.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import AsyncIterator, Sequence

from service.generation.items import Generation

log = logging.getLogger("arena.generation")

#: What a byte-level decoder writes for an incomplete UTF-8 sequence.
_REPLACEMENT = "\ufffd"


class TextSink:
    """One answer's text as it grows. Thread-safe on the writing side; one asyncio consumer.

    Create it on the event loop that reads it. `cancel()` (the reader went away) asks the
    backend to stop this answer; a cancelled answer's `generation` must not be cached.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        self._lock = threading.Lock()
        self._sent = ""
        self._closed = False
        self._accepted: asyncio.Future[None] = self._loop.create_future()
        self.cancelled = threading.Event()
        self.generation: Generation | None = None

    @property
    def text(self) -> str:
        """The text sent so far."""
        return self._sent

    def accept(self) -> None:
        """The backend took the item: what could be refused up front was not."""
        self._resolve(None)

    async def accepted(self) -> None:
        """Wait until the backend took the item (or sent text, or finished); raises the
        error it refused the item with."""
        await asyncio.shield(self._accepted)

    def _resolve(self, exc: BaseException | None) -> None:
        def resolve() -> None:
            if not self._accepted.done():
                if exc is None:
                    self._accepted.set_result(None)
                else:
                    self._accepted.set_exception(exc)
                    self._accepted.exception()  # the iteration raises it too: never "unretrieved"

        try:
            self._loop.call_soon_threadsafe(resolve)
        except RuntimeError:  # the event loop is closed
            pass

    def update(self, text: str) -> None:
        """The answer so far (the whole text, not a delta). What extends the text already
        sent is sent; a text that would rewrite it is ignored (`finish` settles it)."""
        with self._lock:
            if self._closed or len(text) <= len(self._sent) or not text.startswith(self._sent):
                return
            delta, self._sent = text[len(self._sent):], text
        self._resolve(None)
        self._send("text", delta)

    def finish(self, generation: Generation) -> None:
        """The answer is complete: send the rest of `generation.text`, then the end."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if generation.text.startswith(self._sent):
                delta = generation.text[len(self._sent):]
            else:  # cannot happen with `settled_text`; say so rather than send a wrong tail
                log.warning("a streamed answer's final text does not extend what was sent; sending no tail")
                delta = ""
            self._sent += delta
            self.generation = generation
        self._resolve(None)
        if delta:
            self._send("text", delta)
        self._send("done", generation)

    def fail(self, exc: BaseException) -> None:
        """The answer will not be completed: the reader gets `exc` raised."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._resolve(exc)
        self._send("error", exc)

    def cancel(self) -> None:
        """The reader is gone: the backend may stop generating this answer."""
        self.cancelled.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def _send(self, kind: str, value: object) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is closed: nobody is reading any more
            pass

    async def __aiter__(self) -> AsyncIterator[str]:
        """The text deltas, as they come; raises the backend's error if it failed."""
        while True:
            kind, value = await self._queue.get()
            if kind == "text":
                yield value  # type: ignore[misc]
            elif kind == "error":
                raise value  # type: ignore[misc]
            else:
                return


_PIECE = re.compile(r"\S+\s*|\s+")
_LAST_SPACE = re.compile(r"\s(?=\S*$)")


def word_pieces(text: str) -> list[str]:
    """The text cut into word-sized pieces (each with its trailing spaces); joined, they are
    the text again."""
    return _PIECE.findall(text)


def whole_words(text: str) -> str:
    """The text up to its last whitespace (inclusive): the words that are complete. Streaming
    whole words hides how the model's tokenizer cut them."""
    match = _LAST_SPACE.search(text)
    return text[: match.end()] if match else ""


def settled_text(text: str, stop: Sequence[str]) -> str:
    """The part of a partial answer that the final answer will start with: cut at a stop
    string, without a trailing incomplete character or a tail that could begin a stop string."""
    for s in stop:
        at = text.find(s)
        if at >= 0:
            text = text[:at]
    text = text.rstrip(_REPLACEMENT)
    hold = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:n]):
                hold = n
                break
    return text[: len(text) - hold]
