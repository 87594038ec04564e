"""Battles and votes: create a battle, vote once, export and import the log (FastChat format)."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from typing import Annotated, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.params import Parameter
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from service import battle_answers, battles, reviewers
from service.csrf import check_same_origin
from service.errors import Forbidden, InvalidInput, RateLimited
from service.routes.auth import ADMIN, ADMIN_BULK
from service.store import Store


class BattleRequest(msgspec.Struct, forbid_unknown_fields=True):
    """`prompt`: the reviewer's own prompt; omitted, one comes from the prompt pool."""

    prompt: str | None = None


class VoteRequest(msgspec.Struct, forbid_unknown_fields=True):
    choice: Literal["a", "b", "tie", "both_bad"]
    reason: str | None = None


@post("/api/battles", summary="Create a battle: a prompt, two anonymous answers (Model A / Model B)", status_code=201)
async def create_battle(request: Request, store: Store, data: BattleRequest | None = None) -> Response:
    settings = request.app.state.settings
    check_same_origin(request)
    reviewer = await reviewers.identify(request, store, settings)
    battle = await battles.create_battle(
        store, request.app.state.serving, settings, reviewer=reviewer.id, prompt_text=data.prompt if data else None,
        address=reviewers.client_address(request, settings),
    )
    return Response(battles.public_view(battle), status_code=201, cookies=list(reviewer.cookies))


@get("/api/battles/{battle_id:str}", summary="A battle as a reviewer sees it; names only once it has its vote")
async def get_battle(store: Store, battle_id: str) -> dict:
    battle = await store.get_battle(battle_id)
    view = battles.public_view(battle)
    view["reveal"] = await battles.reveal_if_voted(store, battle)
    return view


#: Live readers of battle answers one API process serves per battle, per reviewer and in
#: all: each holds a connection and a Redis read (from the store's reader pool, which votes
#: never wait on), so an unbounded number is a cheap way to exhaust the server.
MAX_ANSWER_READERS_PER_BATTLE = 8
MAX_ANSWER_READERS_PER_REVIEWER = 24
MAX_ANSWER_READERS = 512
#: The largest `Last-Event-ID` taken (an answer has far fewer events; Redis ids stop at 2^64).
MAX_EVENT_ID = 1 << 32
_readers: dict[str, int] = {}


class _ReaderSlot:
    """One live reader counted under each of `keys` (its battle, its reviewer, and "": the
    process), released exactly once: when its stream ends, or when the stream object is
    dropped unstarted (a client that hung up before the first byte: the stream's own
    `finally` never runs then)."""

    def __init__(self, *keys: str) -> None:
        self.keys = keys
        for key in keys:
            _readers[key] = _readers.get(key, 0) + 1

    def release(self) -> None:
        keys, self.keys = self.keys, ()
        for key in keys:
            _readers[key] -= 1
            if not _readers[key]:
                del _readers[key]


@get("/api/battles/{battle_id:str}/answers/{side:str}",
     summary="One side's answer as it is written (server-sent events), for the reviewer the battle was dealt to")
async def battle_answer(request: Request, store: Store, battle_id: str, side: Literal["a", "b"]) -> ServerSentEvent:
    """Events `text` ({"text": more}), then `done` (both answers are complete: the battle
    takes its vote) or `failed` ({"message": why}); ids count 1, 2, ... so a reconnecting
    `EventSource` resumes where it was (`Last-Event-ID`). Only the reviewer the battle was
    dealt to may read it (401 without an identity, 403 for anyone else): the same identity
    the vote needs, from the same cookie or token. Nothing in it names a model."""
    settings = request.app.state.settings
    battle = await store.get_battle(battle_id)
    reviewer = await reviewers.identify(request, store, settings, new=False)
    if battle.get("reviewer") and battle["reviewer"] != reviewer.id:
        raise Forbidden("this battle was dealt to another reviewer: only they can read its answers; ask for your own battle")
    try:
        after = max(0, int(request.headers.get("last-event-id") or 0))
        if after > MAX_EVENT_ID:
            raise ValueError
    except ValueError:
        raise InvalidInput("Last-Event-ID: expected the number of the last event received") from None
    by_battle, by_reviewer = f"battle:{battle_id}", f"reviewer:{reviewer.id}"
    if _readers.get(by_battle, 0) >= MAX_ANSWER_READERS_PER_BATTLE:
        raise RateLimited("this battle's answers already have the most live readers this server serves; close other tabs")
    if _readers.get(by_reviewer, 0) >= MAX_ANSWER_READERS_PER_REVIEWER or _readers.get("", 0) >= MAX_ANSWER_READERS:
        raise RateLimited("too many answer streams are open; close other tabs or try again later")
    slot = _ReaderSlot(by_battle, by_reviewer, "")

    async def events() -> AsyncIterator[ServerSentEventMessage]:
        try:
            async for seq, event in battle_answers.answer_events(store, battle, side, after):
                if event is None:
                    yield ServerSentEventMessage(comment="keep-alive")
                elif "text" in event:
                    yield ServerSentEventMessage(event="text", id=seq, data=msgspec.json.encode({"text": event["text"]}).decode())
                elif "done" in event:
                    yield ServerSentEventMessage(event="done", id=seq, data="{}")
                else:
                    yield ServerSentEventMessage(event="failed", id=seq,
                                                 data=msgspec.json.encode({"message": event["failed"]}).decode())
        finally:
            slot.release()

    stream = events()
    weakref.finalize(stream, slot.release)
    return ServerSentEvent(stream, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@post("/api/battles/{battle_id:str}/vote", summary="Vote once on your own battle (a, b, tie, both_bad); reveals the models", status_code=200)
async def vote(request: Request, store: Store, battle_id: str, data: VoteRequest) -> Response:
    settings = request.app.state.settings
    check_same_origin(request)
    reviewer = await reviewers.identify(request, store, settings, new=False)
    reveal = await battles.cast_vote(store, settings, battle_id, data.choice, reviewer=reviewer.id, reason=data.reason,
                                     address=reviewers.client_address(request, settings))
    return Response(msgspec.to_builtins(reveal), cookies=list(reviewer.cookies))


@get("/api/battles/export", summary="Every logged vote as FastChat battles (JSON array)", **ADMIN)
async def export_battles(
    store: Store,
    board: Literal["human", "judge", "all"] = "all",
    include_excluded: Annotated[bool, Parameter(description="Keep excluded reviewers' votes")] = False,
) -> list[dict]:
    boards = ("human", "judge") if board == "all" else (board,)
    return [msgspec.to_builtins(b) for b in await battles.export_battles(store, boards=boards, include_excluded=include_excluded)]


@post("/api/battles/import", summary="Log and count FastChat battles (a JSON array) as observations", status_code=201, **ADMIN_BULK)
async def import_battles(request: Request, store: Store, board: Literal["human", "judge"] | None = None, skip_invalid: bool = False) -> dict:
    try:
        records = msgspec.json.decode(await request.body())
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"body: not valid JSON ({exc})") from None
    except RecursionError:
        raise InvalidInput("body: nested too deeply to read") from None
    if not isinstance(records, list):
        raise InvalidInput("body: expected a JSON array of FastChat battles")
    return await battles.import_battles(store, records, board=board, skip_invalid=skip_invalid)
