"""A battle's two answers as they are written, for the arena page to show side by side.

`record_answers` runs in the background of the request that dealt the battle: it reads the
two sides' `TextSink`s, appends each side's text to the store's answer log in whole words
(chunk boundaries would otherwise show how each model's tokenizer cuts words), then stores
the complete battle with its vote template, and only then appends `done` to both sides:
a page that saw both `done`s can vote. `answer_events` is what the answer endpoint sends.

Nothing in a log names a model: events are `{"text": ...}`, `{"done": true}` and
`{"failed": message}` (the anonymous message a reviewer may see), with ids 1, 2, ...
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from service.errors import ArenaError, InvalidInput, Unavailable
from service.generation.streaming import TextSink, whole_words

log = logging.getLogger("arena.battles")

SIDES = ("a", "b")
#: How long a reader waits on the log before it sends a keep-alive comment (ms).
KEEPALIVE_MS = 10_000
#: A log that stays silent this long (the dealing process died) ends the reader's stream.
MAX_SILENCE_S = 120.0

_running: set[asyncio.Task] = set()  # held so that answers being written are not collected


def start_recording(store, battle: dict[str, Any], sinks: list[TextSink], ttl_s: int, complete) -> asyncio.Task:
    """Run `record_answers` in the background; the task's result is the complete battle.
    An error nobody awaits is logged there, not lost."""
    task = asyncio.create_task(record_answers(store, battle, sinks, ttl_s, complete))
    _running.add(task)
    task.add_done_callback(_finished)
    return task


def _finished(task: asyncio.Task) -> None:
    _running.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: record_answers logged it already


async def record_answers(store, battle: dict[str, Any], sinks: list[TextSink], ttl_s: int, complete) -> dict[str, Any]:
    """Write both answers to the log as they come; then `await complete(battle, answers)`
    (which stores the finished battle and returns it) and append `done` to both sides.
    On failure, the battle is marked `failed`, both sides get `failed` with the anonymous
    message (`anonymous_error`) and that error is raised."""
    seqs = {side: 0 for side in SIDES}

    async def append(side: str, event: dict[str, Any]) -> None:
        seqs[side] += 1
        await store.append_answer_events(battle["id"], [(side, seqs[side], event)], ttl_s)

    async def follow(side: str, sink: TextSink) -> str:
        text = sent = ""
        async for delta in sink:
            text += delta
            words = whole_words(text)
            if len(words) > len(sent):
                await append(side, {"text": words[len(sent):]})
                sent = words
        if len(text) > len(sent):
            await append(side, {"text": text[len(sent):]})
        return text

    try:
        answers = await asyncio.gather(*(follow(side, sink) for side, sink in zip(SIDES, sinks)))
        finished = await complete(battle, answers)
    except BaseException as exc:
        for sink in sinks:
            sink.cancel()
        if isinstance(exc, asyncio.CancelledError):
            raise
        shown = anonymous_error(exc)
        await store.put_battle(battle["id"], {**battle, "failed": shown.message}, ttl_s, answering=True)
        await store.append_answer_events(battle["id"], [(side, seqs[side] + 1, {"failed": shown.message}) for side in SIDES],
                                         ttl_s)
        raise shown from None
    await store.append_answer_events(battle["id"], [(side, seqs[side] + 1, {"done": True}) for side in SIDES], ttl_s)
    return finished


def anonymous_error(exc: BaseException) -> ArenaError:
    """A generation error as a reviewer may see it: same status, but no model names (the
    generation errors name the model, and would tell the reviewer who was drawn). The
    original goes to the service log."""
    if not isinstance(exc, ArenaError):
        log.error("battle generation failed", exc_info=exc)
        exc = Unavailable(f"{type(exc).__name__}: {exc}")
    log.warning("battle generation failed: %s", exc.message)
    if isinstance(exc, InvalidInput) and "limit" in exc.extra:
        message = "the prompt is too long for the candidates drawn for this battle: shorten it and try again"
    else:
        message = "the candidates drawn for this battle could not answer (the service log says why); try again"
    return type(exc)(message)


async def answer_events(store, battle: dict[str, Any], side: str, after: int = 0) -> AsyncIterator[tuple[int, dict[str, Any] | None]]:
    """(seq, event) for one side's answer after `after`, until `done` or `failed`; (0, None)
    now and then while the log is silent (a keep-alive). A battle stored complete without a
    log (written before streaming, or by a tool) gives its whole answer at once."""
    if after == 0 and battle.get(f"answer_{side}") is not None:
        first = await store.read_answer_events(battle["id"], side, 0)
        if not first:
            yield 1, {"text": battle[f"answer_{side}"]}
            yield 2, {"done": True}
            return
    last = await store.last_answer_event(battle["id"], side)
    if last is not None and last[0] <= after and ("done" in last[1] or "failed" in last[1]):
        return  # the reader has every event already: nothing to wait for (a reconnect after `done`)
    quiet_since = time.monotonic()
    while True:
        events = await store.read_answer_events(battle["id"], side, after, block_ms=KEEPALIVE_MS)
        if not events:
            if time.monotonic() - quiet_since > MAX_SILENCE_S:
                yield after + 1, {"failed": "the answers stopped arriving; ask for a new battle"}
                return
            yield 0, None
            continue
        quiet_since = time.monotonic()
        for seq, event in events:
            after = seq
            yield seq, event
            if "done" in event or "failed" in event:
                return
