"""Battles and votes: create a battle, record the one vote on it, export and import the log.

A battle is stored (with a TTL) under an unguessable id: the prompt, the two models in
their randomised sides, both answers (sampled with a secret seed, never cached) and the
reviewer it was dealt to. It is stored as soon as it is dealt; its answers are written in
the background (`service.battle_answers`, which the arena page follows as they grow) and
it takes a vote only once both are complete. What a reviewer sees before voting
(`public_view`) has no model names; `cast_vote` records the vote atomically (the store's
vote script checks every rule: first vote wins, the battle's own reviewer, answers
complete, not excluded, minimum time to vote, rate limits per reviewer and per address;
then counts it into the human board) and only then returns the names.

The log keeps FastChat's battle fields (`model_a`, `model_b`, `winner`, `judge` = the
reviewer, `tstamp`, `anony`, `question_id`, `conversation_a/b`, and for imported public
data `language`, `category_tag`, `conv_metadata`) plus ours at the top level (`reviewer`,
`battle_id`, `reason`, `time_to_vote_s`, `category`, `source`, `categories`: the battle's
category tags, see `service.prompt_categories`, ...). Export and import of the log are in
`service.battle_files` (re-exported here).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Iterable
from typing import Any

import msgspec

from arena.judge import CHOICES, WINNER_OF, match_id
from arena.markdown import render_markdown
from arena.matchmaking import choose_pair
from service import battle_answers
from service.battle_answers import anonymous_error
from service.config import Settings
from service.errors import ArenaError, Conflict, InvalidInput, RateLimited
from service.prompts import ArenaPrompt, check_prompt_text

#: How long a battle waits for its vote (seconds).
BATTLE_TTL_S = 24 * 3600
#: Tokens per answer; the service's `ARENA_MAX_NEW_TOKENS_CAP` lowers it if smaller.
ANSWER_TOKENS = 256
MAX_REASON_CHARS = 1000
_rng = random.SystemRandom()  # which side is A must not be predictable from the battles a client has seen


class Reveal(msgspec.Struct, kw_only=True):
    """What a vote returns: the choice, FastChat's winner and, now, the names."""

    battle_id: str
    choice: str
    winner: str
    model_a: str
    model_b: str
    vote_id: str


# --- which models compete ---------------------------------------------------------------


async def servable_models(store, settings: Settings) -> list[str]:
    """Names the service can generate with: candidates and bases, and, with a remote
    generation server (`ARENA_GENERATION_URL`), the models it lists."""
    import asyncio

    names = {c.name for c in await store.list_candidates()} | {b.name for b in await store.list_bases()}
    if settings.generation_url:
        from service.generation import RemoteBackend

        def remote() -> list[str]:
            with RemoteBackend(settings.generation_url, api_key=settings.generation_api_key, retries=0) as backend:
                return backend.models()

        names |= set(await asyncio.to_thread(remote))
    return sorted(names)


async def check_servable(store, settings: Settings, names: Iterable[str]) -> None:
    """Raise `NotFound` naming every model in `names` the service cannot serve."""
    from service.errors import NotFound

    names = list(names)
    known = await servable_models(store, settings)
    missing = [n for n in names if n not in known]
    if missing:
        raise NotFound(f"unknown model{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; servable: {', '.join(known) or 'none'}")


class ActiveModels(msgspec.Struct, kw_only=True):
    """The competing models after a change, and what the generation server said when it
    could not unload a retired adapter (the arena stopped matching it all the same)."""

    active: list[str]
    warnings: list[str] = msgspec.field(default_factory=list)


async def set_active(store, settings: Settings, names: Iterable[str], active: bool) -> ActiveModels:
    """Mark models as competing (or not) in the arena. Activating checks that each model can
    be served and, with a remote generation server, loads the candidates' adapters there
    first: when the server refuses one, nothing is marked active and its error (naming the
    server and what it said) is raised. Deactivating unloads them there; one the server
    could not be told to unload is kept as a pending unload, retried, and warned about."""
    from service.adapter_sync import register_candidates, unregister_candidates

    names = list(names)
    if active:
        await check_servable(store, settings, names)
        await register_candidates(store, settings, names)
    for name in names:
        await store.set_active(name, active)
        if active:  # the server has it on purpose now: an unload still pending from its retirement is off
            await store.drop_pending_unload(name)
    warnings = [] if active else await unregister_candidates(store, settings, names)
    return ActiveModels(active=await store.active_models(), warnings=warnings)


# --- creating ---------------------------------------------------------------------------


async def deal_battle(store, serving, settings: Settings, *, reviewer: str, prompt_text: str | None = None,
                      rng: random.Random | None = None, address: str | None = None) -> tuple[dict[str, Any], asyncio.Task]:
    """Pick a prompt (the reviewer's, else one from the pool) and a pair (matchmaking over
    the active candidates), start sampling both answers (`battle_params`, a secret
    per-battle seed, no answer cache) and store the battle, bound to `reviewer`, with no
    answers yet. Returns (the stored record, the task writing the answers): the record
    holds the model names and the seed, so show callers `public_view` of it; the task's
    result is the complete record (`battle_answers.record_answers`), its error anonymous.

    Raises `Conflict` when fewer than two candidates are active or the pool is empty and
    no prompt was typed; `RateLimited` past `ARENA_BATTLES_PER_MINUTE_PER_ADDRESS` battles
    dealt to the client `address` this minute; the anonymous form of a generation error
    refused up front."""
    from service.generation import GenItem
    from service.leaderboards import model_states

    limit = settings.battles_per_minute_per_address
    if address is not None and limit > 0 and await store.count_deal(address) > limit:
        raise RateLimited(f"too many new battles from this address ({limit} a minute): vote on the one you have, "
                          "or wait a minute")
    rng = rng or _rng
    active = await store.active_models()
    if len(active) < 2:  # a count only: reviewers never learn which candidates compete
        raise Conflict(
            f"the arena needs at least two active candidates, it has {len(active)}: "
            "an admin activates them with `arena activate NAME...`"
        )
    if prompt_text is not None:
        prompt = ArenaPrompt(text=check_prompt_text(prompt_text), category="typed", source="reviewer")
    else:
        count = await store.prompt_count()
        if count == 0:
            raise Conflict("the prompt pool is empty: type a prompt, or an admin adds some with `arena prompts add FILE`")
        prompt = msgspec.convert(await store.prompt_at(rng.randrange(count)), ArenaPrompt)
    states, fought = await model_states(store, active)
    # A new fit means a new plan (well under a second even for 100 models): off the event loop.
    matchup = await asyncio.to_thread(choose_pair, states, rng, pair_battles=fought)
    # Sampled as the public arena does, with a seed only the server knows, and never through
    # the answer cache: nobody can reproduce a battle's answers with a named model's output.
    seed = secrets.randbits(63)
    asked = prompt.conversation()
    try:
        sinks = await serving.stream([
            GenItem(model=matchup.model_a, prompt=asked, params=battle_params(settings, seed)),
            GenItem(model=matchup.model_b, prompt=asked, params=battle_params(settings, seed ^ 1)),
        ], use_cache=False)
    except ArenaError as exc:
        raise anonymous_error(exc) from None
    battle = {
        "id": secrets.token_urlsafe(16),  # 128 random bits: the id is the capability to vote
        "question_id": match_id(prompt.text, matchup.model_a, matchup.model_b),
        "prompt": prompt.text,
        "context": prompt.context or None,  # the turns before the prompt (system, history)
        "reference": prompt.reference,
        "category": prompt.category,
        "source": prompt.source,
        "categories": prompt.tags(),  # from the prompt alone: set now, counted with the vote
        "model_a": matchup.model_a,
        "model_b": matchup.model_b,
        "answer_a": None,  # written by `battle_answers.record_answers`
        "answer_b": None,
        "created_at": time.time(),
        "reviewer": reviewer,
        "seed": seed,  # never shown: with it, the answers could be reproduced
    }
    try:
        await store.put_battle(battle["id"], battle, BATTLE_TTL_S, answering=True)
    except BaseException:
        for sink in sinks:
            sink.cancel()
        raise
    return battle, battle_answers.start_recording(store, battle, sinks, BATTLE_TTL_S, _complete(store))


def _complete(store):
    async def complete(battle: dict[str, Any], answers: list[str]) -> dict[str, Any]:
        # The time to vote counts from here, when both answers are shown in full.
        finished = {**battle, "answer_a": answers[0], "answer_b": answers[1], "created_at": time.time()}
        await store_battle(store, finished)
        return finished

    return complete


async def create_battle(store, serving, settings: Settings, *, reviewer: str, prompt_text: str | None = None,
                        rng: random.Random | None = None, address: str | None = None) -> dict[str, Any]:
    """`deal_battle`, waiting for both answers: the complete record (see `deal_battle`).
    A caller that goes away does not stop the answers (the reviewer may still open the battle)."""
    _, answers = await deal_battle(store, serving, settings, reviewer=reviewer, prompt_text=prompt_text, rng=rng,
                                   address=address)
    return await asyncio.shield(answers)


def battle_params(settings: Settings, seed: int):
    """How a battle's answers are sampled: `ARENA_BATTLE_TEMPERATURE` (0.7) and
    `ARENA_BATTLE_TOP_P` (1.0), as the public arena does, with `seed`."""
    from service.generation import GenerationParams

    return GenerationParams(max_new_tokens=min(ANSWER_TOKENS, settings.max_new_tokens_cap),
                            temperature=settings.battle_temperature, top_p=settings.battle_top_p, seed=seed)


async def store_battle(store, battle: dict[str, Any]) -> None:
    """Store a battle record (as `create_battle` builds it) with its vote template, for
    `BATTLE_TTL_S` seconds."""
    await store.put_battle(battle["id"], battle, BATTLE_TTL_S, vote_base=vote_base(battle))


def public_view(battle: dict[str, Any]) -> dict[str, Any]:
    """The battle as a reviewer sees it before voting: no model names, answers as text and
    as safe HTML (escaped, then basic markdown). While they are being written, `complete`
    is false and the answers are None (follow them at `/api/battles/{id}/answers/{side}`);
    `failed` says why they never will be."""
    complete = battle["answer_a"] is not None and battle["answer_b"] is not None
    return {
        "id": battle["id"],
        "prompt": battle["prompt"],
        "prompt_html": render_markdown(battle["prompt"]),
        "context": [{**t, "html": render_markdown(t["content"])} for t in battle.get("context") or []],
        "answer_a": battle["answer_a"],
        "answer_b": battle["answer_b"],
        "answer_a_html": render_markdown(battle["answer_a"]) if complete else None,
        "answer_b_html": render_markdown(battle["answer_b"]) if complete else None,
        "complete": complete,
        "failed": battle.get("failed"),
        "category": battle.get("category"),
        "source": battle.get("source"),
        "created_at": battle["created_at"],
        "expires_in_s": max(0, int(battle["created_at"] + BATTLE_TTL_S - time.time())),
    }


# --- voting -----------------------------------------------------------------------------


async def cast_vote(store, settings: Settings, battle_id: str, choice: str, *, reviewer: str, reason: str | None = None,
                    address: str | None = None) -> Reveal:
    """Record `choice` ("a", "b", "tie", "both_bad") on the battle and reveal the names.
    `address` is the client's (`reviewers.client_address`), for the per-address limit.

    Raises `NotFound` (unknown or expired battle), `Conflict` (it already has a vote: the
    first one counts), `Forbidden` (the battle was dealt to another reviewer, or this one
    is excluded), `RateLimited` (sooner than `ARENA_MIN_VOTE_S` after the battle was dealt,
    or the reviewer's or the address's votes per minute are used up)."""
    if choice not in CHOICES:
        raise InvalidInput(f"choice {choice!r}: expected one of {', '.join(CHOICES)}")
    if reason is not None and len(reason) > MAX_REASON_CHARS:
        raise InvalidInput(f"reason: {len(reason)} characters is over the limit of {MAX_REASON_CHARS}")
    # One round trip: the store checks, assembles the record from the battle's vote
    # template and these fields, logs and counts it, and returns the names.
    vote_id, model_a, model_b = await store.record_battle_vote(
        battle_id, choice, vote_fields(choice, reviewer=reviewer, reason=reason, tstamp=time.time()), board="human",
        reviewer=reviewer, rules=vote_rules(settings, address),
    )
    return Reveal(battle_id=battle_id, choice=choice, winner=WINNER_OF[choice], model_a=model_a, model_b=model_b, vote_id=vote_id)


def vote_rules(settings: Settings, address: str | None):
    """The limits the store's vote script enforces, from the settings."""
    from service.store import VoteRules

    return VoteRules(rate_limit=settings.votes_per_minute, rate_window_s=60, min_vote_s=settings.min_vote_s,
                     address=address, address_limit=settings.votes_per_minute_per_address)


def vote_base(battle: dict[str, Any]) -> dict[str, Any]:
    """The fields of a human vote that depend only on the battle (FastChat's + ours)."""
    asked = [*(battle.get("context") or []), {"role": "user", "content": battle["prompt"]}]
    base = {
        "model_a": battle["model_a"],
        "model_b": battle["model_b"],
        "anony": True,
        "question_id": battle["question_id"],
        "turn": 1,
        "conversation_a": [*asked, {"role": "assistant", "content": battle["answer_a"]}],
        "conversation_b": [*asked, {"role": "assistant", "content": battle["answer_b"]}],
        "battle_id": battle["id"],
        "category": battle.get("category"),
        "source": battle.get("source"),
        "categories": battle.get("categories") or None,
        "battle_tstamp": battle["created_at"],
    }
    return {k: v for k, v in base.items() if v is not None}


def vote_fields(choice: str, *, reviewer: str, reason: str | None, tstamp: float) -> dict[str, Any]:
    """The fields a vote adds to its battle's `vote_base` (the store adds `time_to_vote_s`)."""
    fields = {"winner": WINNER_OF[choice], "choice": choice, "judge": reviewer, "reviewer": reviewer, "tstamp": tstamp}
    if reason:
        fields["reason"] = reason
    return fields


async def reveal_if_voted(store, battle: dict[str, Any]) -> dict[str, Any] | None:
    """The names and the recorded winner when the battle already has its vote, else None."""
    vote_id = await store.battle_vote_id(battle["id"])
    if vote_id is None:
        return None
    return {"model_a": battle["model_a"], "model_b": battle["model_b"], "vote_id": vote_id}


# Export and import live in their own module; their names stay importable from here.
from service.battle_files import (  # noqa: E402,F401
    OUR_FIELDS, export_battles, from_battle, import_battles, import_file, import_loaded, to_battle,
)
