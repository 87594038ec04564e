"""Battles, votes and pair counts.

A vote is appended to the votes stream (the durable, ordered log, in FastChat's battle
schema plus our fields) and counted into its board's pair counts in ONE Lua call, which
also enforces "first vote wins" and the reviewer's rate limit: no vote can be logged
without being counted, or counted twice. `rebuild_pair_counts` recomputes the counts
from the log (skipping excluded reviewers) and swaps them in atomically.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import msgspec

from service.errors import Conflict, InvalidInput, NotFound, RateLimited

_enc = msgspec.json.Encoder()
SEP = "\x1f"

# KEYS: battle, voted flag, stream, board counts, rate counter
# ARGV: vote JSON, count field, voted-flag TTL, rate limit (0 = none), rate window (s)
_VOTE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, ''} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {-2, redis.call('GET', KEYS[2])} end
local limit = tonumber(ARGV[4])
if limit > 0 then
  local n = redis.call('INCR', KEYS[5])
  if n == 1 then redis.call('EXPIRE', KEYS[5], tonumber(ARGV[5])) end
  if n > limit then return {-3, tostring(redis.call('TTL', KEYS[5]))} end
end
local id = redis.call('XADD', KEYS[3], '*', 'v', ARGV[1])
redis.call('SET', KEYS[2], id, 'EX', tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[4], ARGV[2], 1)
return {1, id}
"""

# KEYS: stream, board counts; ARGV: vote JSON, count field
_OBSERVATION_LUA = """
local id = redis.call('XADD', KEYS[1], '*', 'v', ARGV[1])
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
return id
"""

WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")


def count_field(model_a: str, model_b: str, winner: str) -> str:
    """The pair-count field for a vote: models in sorted order, outcome relative to that order."""
    if winner not in WINNERS:
        raise InvalidInput(f"winner {winner!r}: expected one of {', '.join(WINNERS)}")
    if SEP in model_a or SEP in model_b:
        raise InvalidInput("model names must not contain control characters")
    if model_a == model_b:
        raise InvalidInput(f"a battle needs two different models, got {model_a!r} twice")
    lo, hi = sorted((model_a, model_b))
    if winner == "model_a":
        outcome = "lo" if model_a == lo else "hi"
    elif winner == "model_b":
        outcome = "lo" if model_b == lo else "hi"
    else:
        outcome = "tie" if winner == "tie" else "bothbad"
    return f"{lo}{SEP}{hi}{SEP}{outcome}"


def parse_counts(raw: dict[bytes, bytes]) -> dict[tuple[str, str], list[int]]:
    """Pair-count hash → {(lo, hi): [wins_lo, wins_hi, ties, bothbad]}."""
    slots = {"lo": 0, "hi": 1, "tie": 2, "bothbad": 3}
    out: dict[tuple[str, str], list[int]] = {}
    for field, value in raw.items():
        lo, hi, outcome = field.decode().split(SEP)
        out.setdefault((lo, hi), [0, 0, 0, 0])[slots[outcome]] += int(value)
    return out


class ArenaStore:
    redis: object
    keys: object
    _vote_script = None
    _obs_script = None

    # --- battles -------------------------------------------------------------------------

    async def put_battle(self, battle_id: str, battle: dict[str, Any], ttl_s: int) -> None:
        await self.redis.set(self.keys.battle(battle_id), _enc.encode(battle), ex=ttl_s)

    async def get_battle(self, battle_id: str) -> dict[str, Any]:
        raw = await self.redis.get(self.keys.battle(battle_id))
        if raw is None:
            raise NotFound("no such battle (unknown id, or it expired)")
        return msgspec.json.decode(raw)

    async def battle_vote_id(self, battle_id: str) -> str | None:
        raw = await self.redis.get(self.keys.battle_voted(battle_id))
        return raw.decode() if raw else None

    # --- votes ---------------------------------------------------------------------------

    async def record_vote(self, battle_id: str, vote: dict[str, Any], *, board: str = "human", reviewer: str | None = None,
                          rate_limit: int = 0, rate_window_s: int = 60, voted_ttl_s: int = 30 * 86400) -> str:
        """Log and count one vote on a battle, atomically. Returns the stream id.

        Raises NotFound (unknown or expired battle), Conflict (already voted: the first
        vote wins), RateLimited (the reviewer's votes per window are used up)."""
        if self._vote_script is None:
            self._vote_script = self.redis.register_script(_VOTE_LUA)
        field = count_field(vote["model_a"], vote["model_b"], vote["winner"])
        rate_key = self.keys.reviewer_rate(reviewer or "anonymous")
        status, value = await self._vote_script(
            keys=[self.keys.battle(battle_id), self.keys.battle_voted(battle_id), self.keys.votes, self.keys.board_counts(board), rate_key],
            args=[_enc.encode({**vote, "board": board}), field, voted_ttl_s, rate_limit, rate_window_s],
        )
        value = value.decode() if isinstance(value, bytes) else str(value)
        if status == -1:
            raise NotFound("no such battle (unknown id, or it expired)")
        if status == -2:
            raise Conflict("this battle already has a vote; the first vote counts")
        if status == -3:
            raise RateLimited(f"too many votes: the limit is {rate_limit} per {rate_window_s} s; try again in {value} s")
        return value

    async def record_observation(self, vote: dict[str, Any], *, board: str) -> str:
        """Log and count one vote that has no battle (e.g. an LLM judge's verdict, an import)."""
        if self._obs_script is None:
            self._obs_script = self.redis.register_script(_OBSERVATION_LUA)
        field = count_field(vote["model_a"], vote["model_b"], vote["winner"])
        raw = await self._obs_script(keys=[self.keys.votes, self.keys.board_counts(board)], args=[_enc.encode({**vote, "board": board}), field])
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def pair_counts(self, board: str) -> dict[tuple[str, str], list[int]]:
        """{(lo, hi): [wins_lo, wins_hi, ties, bothbad]} for a board ("human" or "judge")."""
        return parse_counts(await self.redis.hgetall(self.keys.board_counts(board)))

    async def iter_votes(self, after: str = "-", batch: int = 5000):
        """All logged votes in order, as (stream id, vote dict)."""
        start = after
        while True:
            entries = await self.redis.xrange(self.keys.votes, min=start, max="+", count=batch)
            if start != "-" and entries and entries[0][0].decode() == start:
                entries = entries[1:]
            if not entries:
                return
            for entry_id, fields in entries:
                yield entry_id.decode(), msgspec.json.decode(fields[b"v"])
            start = entries[-1][0].decode()

    async def vote_count(self) -> int:
        return int(await self.redis.xlen(self.keys.votes))

    async def rebuild_pair_counts(self, boards: Iterable[str] = ("human", "judge")) -> dict[str, int]:
        """Recompute every board's counts from the log, skipping excluded reviewers, and swap
        them in atomically. Returns votes counted per board."""
        excluded = {r.decode() for r in await self.redis.smembers(self.keys.excluded_reviewers)}
        fields: dict[str, dict[str, int]] = {b: {} for b in boards}
        counted = {b: 0 for b in boards}
        async for _, vote in self.iter_votes():
            board = vote.get("board", "human")
            if board not in fields or vote.get("reviewer") in excluded:
                continue
            field = count_field(vote["model_a"], vote["model_b"], vote["winner"])
            fields[board][field] = fields[board].get(field, 0) + 1
            counted[board] += 1
        stamp = f"{time.time_ns()}"
        async with self.redis.pipeline(transaction=True) as pipe:
            for board, values in fields.items():
                tmp = f"{self.keys.board_counts(board)}:rebuild:{stamp}"
                if values:
                    pipe.hset(tmp, mapping=values)
                    pipe.rename(tmp, self.keys.board_counts(board))
                else:
                    pipe.delete(self.keys.board_counts(board))
            await pipe.execute()
        return counted

    # --- reviewers -----------------------------------------------------------------------

    async def create_invite(self, token_hash: str, reviewer: str) -> None:
        await self.redis.hset(self.keys.reviewer_tokens, token_hash, reviewer)

    async def reviewer_for_token(self, token_hash: str) -> str | None:
        raw = await self.redis.hget(self.keys.reviewer_tokens, token_hash)
        return raw.decode() if raw else None

    async def exclude_reviewer(self, reviewer: str) -> None:
        await self.redis.sadd(self.keys.excluded_reviewers, reviewer)

    async def include_reviewer(self, reviewer: str) -> None:
        await self.redis.srem(self.keys.excluded_reviewers, reviewer)

    async def excluded_reviewers(self) -> set[str]:
        return {r.decode() for r in await self.redis.smembers(self.keys.excluded_reviewers)}

    # --- active candidates and prompt pool ------------------------------------------------

    async def set_active(self, name: str, active: bool) -> None:
        if active:
            await self.redis.sadd(self.keys.active_models, name)
        else:
            await self.redis.srem(self.keys.active_models, name)

    async def active_models(self) -> list[str]:
        return sorted(m.decode() for m in await self.redis.smembers(self.keys.active_models))

    async def add_prompts(self, prompts: list[dict[str, Any]]) -> int:
        """Append prompts ({text, reference?, category?, source?}) to the pool; returns the pool size."""
        if not prompts:
            return int(await self.redis.llen(self.keys.prompts))
        return int(await self.redis.rpush(self.keys.prompts, *[_enc.encode(p) for p in prompts]))

    async def prompts(self, start: int = 0, end: int = -1) -> list[dict[str, Any]]:
        return [msgspec.json.decode(p) for p in await self.redis.lrange(self.keys.prompts, start, end)]

    async def prompt_count(self) -> int:
        return int(await self.redis.llen(self.keys.prompts))

    async def prompt_at(self, index: int) -> dict[str, Any] | None:
        raw = await self.redis.lindex(self.keys.prompts, index)
        return msgspec.json.decode(raw) if raw else None

    # --- generation cache -----------------------------------------------------------------

    async def cache_get(self, key: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.keys.generation_cache(key))
        return msgspec.json.decode(raw) if raw else None

    async def cache_put(self, key: str, value: dict[str, Any], ttl_s: int = 30 * 86400) -> None:
        await self.redis.set(self.keys.generation_cache(key), _enc.encode(value), ex=ttl_s)
