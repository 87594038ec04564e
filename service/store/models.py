"""Base models and candidates."""

from __future__ import annotations

import msgspec

from service.domain import BaseModel, Candidate, PendingUnload
from service.errors import Conflict, NotFound

_enc = msgspec.json.Encoder()


class ModelStore:
    redis: object
    keys: object

    async def put_base(self, base: BaseModel) -> None:
        await self.redis.hset(self.keys.bases, base.name, _enc.encode(base))

    async def get_base(self, name: str) -> BaseModel:
        raw = await self.redis.hget(self.keys.bases, name)
        if raw is None:
            known = sorted(k.decode() for k in await self.redis.hkeys(self.keys.bases))
            raise NotFound(f"no base model named {name!r}; known: {', '.join(known) or 'none (add one with `arena base tiny` or `arena base add`)'}")
        return msgspec.json.decode(raw, type=BaseModel)

    async def list_bases(self) -> list[BaseModel]:
        return sorted((msgspec.json.decode(v, type=BaseModel) for v in (await self.redis.hgetall(self.keys.bases)).values()), key=lambda b: b.name)

    async def add_candidate(self, cand: Candidate) -> None:
        """Register a candidate; a name is taken once (409 on a second)."""
        if not await self.redis.hsetnx(self.keys.candidates, cand.name, _enc.encode(cand)):
            raise Conflict(f"candidate {cand.name!r} already exists")

    async def put_candidate(self, cand: Candidate) -> None:
        await self.redis.hset(self.keys.candidates, cand.name, _enc.encode(cand))

    async def candidate_exists(self, name: str) -> bool:
        return bool(await self.redis.hexists(self.keys.candidates, name))

    async def get_candidate(self, name: str) -> Candidate:
        raw = await self.redis.hget(self.keys.candidates, name)
        if raw is None:
            known = sorted(k.decode() for k in await self.redis.hkeys(self.keys.candidates))
            raise NotFound(f"no candidate named {name!r}; known: {', '.join(known) or 'none'}")
        return msgspec.json.decode(raw, type=Candidate)

    async def list_candidates(self) -> list[Candidate]:
        items = [msgspec.json.decode(v, type=Candidate) for v in (await self.redis.hgetall(self.keys.candidates)).values()]
        return sorted(items, key=lambda c: c.created_at)

    async def reserve_candidate_name(self, name: str, run_id: str) -> bool:
        """Reserve a name for a queued run so two runs cannot both produce it."""
        return bool(await self.redis.set(self.keys.candidate_reservation(name), run_id, nx=True))

    async def release_candidate_name(self, name: str) -> None:
        await self.redis.delete(self.keys.candidate_reservation(name))

    async def candidate_reserved_by(self, name: str) -> str | None:
        raw = await self.redis.get(self.keys.candidate_reservation(name))
        return raw.decode() if raw else None

    # --- adapters the generation server still has to unload ---------------------------------

    async def keep_pending_unload(self, pending: PendingUnload) -> None:
        await self.redis.hset(self.keys.pending_unloads, pending.name, _enc.encode(pending))

    async def pending_unloads(self) -> list[PendingUnload]:
        raw = (await self.redis.hgetall(self.keys.pending_unloads)).values()
        return sorted((msgspec.json.decode(v, type=PendingUnload) for v in raw), key=lambda p: (p.since, p.name))

    async def drop_pending_unload(self, name: str) -> None:
        await self.redis.hdel(self.keys.pending_unloads, name)
