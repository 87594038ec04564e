"""Battles, votes and pair counts.

A vote is appended to the votes stream (the durable, ordered log, in FastChat's battle
schema plus our fields) and counted into the leaderboards' aggregates in ONE Lua call,
which also enforces the vote rules (`service.store.vote_scripts`: first vote wins, the
battle's own reviewer only, no excluded reviewer, a minimum time to vote, rate limits per
reviewer and per address): no vote can be logged without being counted, or counted twice.
The aggregates, their reads and their rebuild from the log are in
`service.store.aggregates`.

Each stream entry holds the vote JSON (`v`) and, for the rebuild, its count field (`c`),
board (`b`) and reviewer (`r`).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import msgspec
from redis import exceptions as redis_errors

from service.errors import InvalidInput, NotFound, Unavailable
from service.store.aggregates import SEP, AggregateStore
from service.store.vote_scripts import BATTLE_VOTE_LUA, OBSERVATION_LUA, VOTE_LUA, VoteRules, raise_refused_vote

_enc = msgspec.json.Encoder()


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


#: How long a vote waits for its fsync before the request fails (it is usually < 10 ms).
WAITAOF_TIMEOUT_MS = 5000


class ArenaStore(AggregateStore):
    redis: object
    keys: object
    _vote_script = None
    _obs_script = None
    _battle_vote_script = None
    _aof: bool | None = None
    _fsync_always = False

    # --- durability -----------------------------------------------------------------------

    async def votes_durable(self) -> bool:
        """Whether the server keeps an append-only file, so a vote can be confirmed on disk
        before it is acknowledged (asked once per store, with its fsync policy)."""
        if self._aof is None:
            info = await self.redis.info("persistence")
            aof = bool(int(info.get("aof_enabled", 0)))
            self._fsync_always = False
            if aof:
                try:
                    policy = await self.redis.config_get("appendfsync")
                except redis_errors.ResponseError:  # CONFIG renamed or refused (a managed Redis): keep WAITAOF
                    policy = {}
                value = policy.get(b"appendfsync", policy.get("appendfsync", b""))
                self._fsync_always = (value.decode() if isinstance(value, bytes) else value) == "always"
            self._aof = aof
        return self._aof

    async def _run_vote_script(self, script, keys: list[str], args: list[Any]) -> Any:
        """Run a vote script so that its reply means the vote is on disk when the server
        keeps an AOF. Under `appendfsync always` (the embedded server's setting) the server
        writes and fsyncs the AOF before it sends any reply, so the script's own reply says
        so and the script runs alone. Otherwise `WAITAOF 1 0` goes in the same round trip
        (same connection: it waits for that connection's writes) and under `everysec` waits
        for the next fsync. Raises `Unavailable` when the fsync is not confirmed in time:
        the vote may still count, but it was not acknowledged as durable."""
        if not await self.votes_durable() or self._fsync_always:
            return await script(keys=keys, args=args)
        # EVALSHA straight into the pipeline: a Script object in a pipeline makes redis-py
        # ask SCRIPT EXISTS first, one more round trip per vote. A server that lost the
        # script (restarted, flushed) answers NOSCRIPT without running anything: load it, retry.
        for attempt in (1, 2):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                pipe.execute_command("WAITAOF", 1, 0, WAITAOF_TIMEOUT_MS)
                try:
                    result, fsynced = await pipe.execute()
                    break
                except redis_errors.NoScriptError:
                    if attempt == 2:
                        raise
                    await self.redis.script_load(script.script)
        refused = isinstance(result, list) and result and isinstance(result[0], int) and result[0] < 0
        if not refused and int(fsynced[0]) < 1:
            raise Unavailable(f"the vote was not confirmed on disk within {WAITAOF_TIMEOUT_MS} ms; it may have counted, "
                              "do not vote again on this battle")
        return result

    # --- battles -------------------------------------------------------------------------

    async def put_battle(self, battle_id: str, battle: dict[str, Any], ttl_s: int, *, vote_base: dict[str, Any] | None = None,
                         answering: bool = False) -> None:
        """Store a battle for `ttl_s` seconds. With `vote_base` (the static fields of a vote
        on it, including `model_a`/`model_b`) and `battle["created_at"]`, it can take
        `record_battle_vote`, which needs one round trip. A battle with a `reviewer` takes
        only that reviewer's vote. While `answering` (its answers are being written, or
        failed) it takes no vote; storing it again with its `vote_base` ends that."""
        mapping: dict[str, Any] = {"json": _enc.encode(battle)}
        if answering:
            mapping["answering"] = "1"
        if vote_base is not None:
            mapping.update(vote_base=_enc.encode(vote_base), created_at=repr(float(battle["created_at"])),
                           model_a=vote_base["model_a"], model_b=vote_base["model_b"],
                           agg=_enc.encode({k: vote_base.get(k) for k in ("model_a", "model_b", "category", "source", "question_id",
                                                                           "categories")}))
            for choice, winner in (("a", "model_a"), ("b", "model_b"), ("tie", "tie"), ("both_bad", "tie (bothbad)")):
                mapping[f"count:{choice}"] = count_field(vote_base["model_a"], vote_base["model_b"], winner)
        if battle.get("reviewer"):
            mapping["reviewer"] = battle["reviewer"]  # only they may vote on it
        key = self.keys.battle(battle_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            if vote_base is not None:
                pipe.hdel(key, "answering")
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, ttl_s)
            await pipe.execute()

    async def get_battle(self, battle_id: str) -> dict[str, Any]:
        raw = await self.redis.hget(self.keys.battle(battle_id), "json")
        if raw is None:
            raise NotFound("no such battle (unknown id, or it expired)")
        return msgspec.json.decode(raw)

    async def set_pending_battle(self, reviewer: str, battle_id: str, ttl_s: int) -> None:
        """Remember the battle the arena page showed `reviewer`, so a reload shows it again."""
        await self.redis.set(self.keys.pending_battle(reviewer), battle_id, ex=ttl_s)

    async def pending_battle(self, reviewer: str) -> dict[str, Any] | None:
        """The battle last shown to `reviewer`, while it exists and has no vote; else None."""
        raw = await self.redis.get(self.keys.pending_battle(reviewer))
        if raw is None or await self.battle_vote_id(raw.decode()) is not None:
            return None
        try:
            return await self.get_battle(raw.decode())
        except NotFound:
            return None

    async def battle_vote_id(self, battle_id: str) -> str | None:
        raw = await self.redis.get(self.keys.battle_voted(battle_id))
        return raw.decode() if raw else None

    # --- votes ---------------------------------------------------------------------------

    def _vote_keys(self, battle_id: str, board: str, reviewer: str | None, rules: VoteRules) -> list[str]:
        return [self.keys.battle(battle_id), self.keys.battle_voted(battle_id), self.keys.votes, self.keys.aggregates_current,
                self.keys.reviewer_rate(reviewer or "anonymous"), self.keys.address_rate(rules.address or "unknown"),
                self.keys.excluded_reviewers]

    async def record_vote(self, battle_id: str, vote: dict[str, Any], *, board: str = "human", reviewer: str | None = None,
                          rules: VoteRules = VoteRules(), voted_ttl_s: int = 30 * 86400) -> str:
        """Log and count one vote on a battle, atomically. Returns the stream id.

        Raises NotFound (unknown or expired battle), Conflict (already voted: the first
        vote wins), Forbidden (the battle was dealt to another reviewer, or this one is
        excluded), RateLimited (too soon after the battle was dealt, or the reviewer's or
        the address's votes per window are used up)."""
        if self._vote_script is None:
            self._vote_script = self.redis.register_script(VOTE_LUA)
        field = count_field(vote["model_a"], vote["model_b"], vote["winner"])
        status, value = await self._run_vote_script(
            self._vote_script,
            keys=self._vote_keys(battle_id, board, reviewer, rules),
            args=[_enc.encode({**vote, "board": board}), field, voted_ttl_s, rules.rate_limit, rules.rate_window_s, board,
                  vote.get("reviewer") or reviewer or "", repr(time.time()), repr(float(rules.min_vote_s)), rules.address_limit,
                  self.keys.aggregates],
        )
        value = value.decode() if isinstance(value, bytes) else str(value)
        raise_refused_vote(status, value, rules)
        return value

    async def record_battle_vote(self, battle_id: str, choice: str, fields: dict[str, Any], *, board: str = "human",
                                 reviewer: str | None = None, rules: VoteRules = VoteRules(),
                                 voted_ttl_s: int = 30 * 86400) -> tuple[str, str, str]:
        """`record_vote` for a battle stored with `vote_base`: the logged vote is its vote
        base + `fields` (which must hold `tstamp`) + `time_to_vote_s`. `choice` is "a", "b",
        "tie" or "both_bad". Returns (stream id, model_a, model_b); raises as `record_vote`."""
        if self._battle_vote_script is None:
            self._battle_vote_script = self.redis.register_script(BATTLE_VOTE_LUA)
        if choice not in ("a", "b", "tie", "both_bad"):
            raise InvalidInput(f"choice {choice!r}: expected one of a, b, tie, both_bad")
        result = await self._run_vote_script(
            self._battle_vote_script,
            keys=self._vote_keys(battle_id, board, reviewer, rules),
            args=[choice, _enc.encode({**fields, "board": board}), repr(float(fields["tstamp"])), voted_ttl_s, rules.rate_limit,
                  rules.rate_window_s, board, reviewer or "", repr(float(rules.min_vote_s)), rules.address_limit,
                  self.keys.aggregates],
        )
        status = result[0]
        value = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
        raise_refused_vote(status, value, rules)
        if status == -4:
            raise InvalidInput("this battle was stored without its vote template; vote with record_vote")
        return value, result[2].decode(), result[3].decode()

    async def record_observation(self, vote: dict[str, Any], *, board: str) -> str:
        """Log and count one vote that has no battle (e.g. an LLM judge's verdict, an import).
        An excluded reviewer's is logged but not counted, as `rebuild_aggregates` would."""
        if self._obs_script is None:
            self._obs_script = self.redis.register_script(OBSERVATION_LUA)
        field = count_field(vote["model_a"], vote["model_b"], vote["winner"])
        raw = await self._obs_script(
            keys=[self.keys.votes, self.keys.aggregates_current, self.keys.excluded_reviewers],
            args=[_enc.encode({**vote, "board": board}), field, board, vote.get("reviewer") or "", self.keys.aggregates],
        )
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def record_observations(self, votes: list[dict[str, Any]], *, board: str, batch: int = 1000) -> int:
        """`record_observation` for many votes (an import), pipelined; each vote is still
        logged and counted atomically. Every vote is validated before any is written.
        Returns how many were recorded."""
        if self._obs_script is None:
            self._obs_script = self.redis.register_script(OBSERVATION_LUA)
        fields = [count_field(v["model_a"], v["model_b"], v["winner"]) for v in votes]
        for start in range(0, len(votes), batch):
            async with self.redis.pipeline(transaction=False) as pipe:
                for vote, field in zip(votes[start : start + batch], fields[start : start + batch]):
                    await self._obs_script(
                        keys=[self.keys.votes, self.keys.aggregates_current, self.keys.excluded_reviewers],
                        args=[_enc.encode({**vote, "board": board}), field, board, vote.get("reviewer") or "", self.keys.aggregates],
                        client=pipe,
                    )
                await pipe.execute()
        return len(votes)

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

    async def read_votes_raw(self, after: str = "", count: int = 10000) -> list[tuple[str, bytes]]:
        """Up to `count` logged votes after stream id `after` ('' = from the start), as
        (stream id, vote JSON bytes): for readers that decode into their own types."""
        entries = await self.redis.xrange(self.keys.votes, min=f"({after}" if after else "-", max="+", count=count)
        return [(entry_id.decode(), fields[b"v"]) for entry_id, fields in entries]

    async def vote_count(self) -> int:
        return int(await self.redis.xlen(self.keys.votes))

    # --- reviewers -----------------------------------------------------------------------

    async def create_invite(self, token_hash: str, reviewer: str) -> None:
        await self.redis.hset(self.keys.reviewer_tokens, token_hash, reviewer)

    async def reviewer_for_token(self, token_hash: str) -> str | None:
        raw = await self.redis.hget(self.keys.reviewer_tokens, token_hash)
        return raw.decode() if raw else None

    async def exchange_invite(self, token_hash: str, session_hash: str) -> str | None:
        """Atomically retire the invite token `token_hash` and let `session_hash` identify its
        reviewer instead (a link is single-use: the browser keeps the session in a cookie).
        None when the token is unknown, revoked or already used."""
        raw = await self.redis.eval(_EXCHANGE_INVITE, 1, self.keys.reviewer_tokens, token_hash, session_hash)
        return raw.decode() if raw else None

    async def count_deal(self, address: str, window_s: int = 60) -> int:
        """Count one battle dealt to `address` in the current `window_s` window; returns how
        many it has had in the window, this one included (the key expires with it)."""
        key = self.keys.address_deals(address, int(time.time() // window_s))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window_s * 2)
            count, _ = await pipe.execute()
        return int(count)

    async def revoke_invites(self, reviewer: str) -> int:
        """Forget every invite token of `reviewer`, so none identifies them again. Returns
        how many were revoked (0: they held none)."""
        # One script: an invite link exchanged for a session in between a read and a delete
        # would leave that session working.
        return int(await self.redis.eval(_REVOKE_INVITES, 1, self.keys.reviewer_tokens, reviewer))

    async def invited_reviewers(self) -> list[str]:
        """Reviewers who hold an invite token, sorted (one name may hold several tokens)."""
        return sorted({r.decode() for r in await self.redis.hvals(self.keys.reviewer_tokens)})

    async def reviewer_secret(self) -> bytes:
        """The key that signs anonymous reviewer cookies: made once, then shared by every process."""
        await self.redis.set(self.keys.reviewer_secret, secrets.token_bytes(32), nx=True)
        return bytes(await self.redis.get(self.keys.reviewer_secret))

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


# One step, so two tabs opening the same link cannot both get a session from it.
_REVOKE_INVITES = """
local entries = redis.call('HGETALL', KEYS[1])
local revoked = 0
for i = 1, #entries, 2 do
  if entries[i + 1] == ARGV[1] then
    redis.call('HDEL', KEYS[1], entries[i])
    revoked = revoked + 1
  end
end
return revoked
"""

_EXCHANGE_INVITE = """
local name = redis.call('HGET', KEYS[1], ARGV[1])
if not name then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[2], name)
return name
"""
