"""Corrections: reviewers' improved answers to battles they voted on, and the admin's decision.

Each correction is one JSON value under its id, indexed by creation time. A reviewer has at
most one *pending* correction per battle (a pointer key): submitting again replaces its
text while it is pending, and a decided one is never changed again. Both rules are checked
and written in one optimistic transaction (WATCH/MULTI), so two tabs or two admins racing
cannot both win.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from redis.exceptions import WatchError

from service.errors import NotFound

_enc = msgspec.json.Encoder()


class CorrectionStore:
    redis: object
    keys: object

    async def save_correction(self, correction: dict[str, Any], *, keep_s: int = 365 * 86400) -> dict[str, Any]:
        """Store `correction` (a new id, `battle_id`, `reviewer`, `status` "pending"), or, when
        the reviewer already has a pending one on that battle, replace that one's `text`,
        `based_on` and `updated_at` and keep its id and `created_at`. Returns what is stored."""
        pointer = self.keys.pending_correction(correction["battle_id"], correction["reviewer"])
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(pointer)
                    current_id = await pipe.get(pointer)
                    stored = correction
                    if current_id is not None:
                        key = self.keys.correction(current_id.decode())
                        await pipe.watch(key)
                        raw = await pipe.get(key)
                        previous = msgspec.json.decode(raw) if raw else None
                        if previous is not None and previous.get("status") == "pending":
                            stored = {**previous, "text": correction["text"], "based_on": correction.get("based_on"),
                                      "original": correction.get("original"), "updated_at": correction["created_at"]}
                    pipe.multi()
                    pipe.set(self.keys.correction(stored["id"]), _enc.encode(stored), ex=keep_s)
                    pipe.zadd(self.keys.corrections, {stored["id"]: float(stored["created_at"])})
                    pipe.set(pointer, stored["id"], ex=keep_s)
                    await pipe.execute()
                    return stored
                except WatchError:
                    continue

    async def get_correction(self, correction_id: str) -> dict[str, Any]:
        """The stored correction; `NotFound` for an unknown (or malformed) id."""
        raw = await self.redis.get(self.keys.correction(correction_id))
        if raw is None:
            raise NotFound(f"no correction {correction_id!r}")
        return msgspec.json.decode(raw)

    async def update_correction(self, correction_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """Apply `change` (old -> new; it may raise to refuse, e.g. `Conflict` when already
        decided) atomically; when the correction stops being pending, the reviewer's pointer
        to it is cleared so their next submission starts a new one. Returns the new value."""
        key = self.keys.correction(correction_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise NotFound(f"no correction {correction_id!r}")
                    new = change(msgspec.json.decode(raw))
                    ttl = await pipe.ttl(key)
                    pipe.multi()
                    pipe.set(key, _enc.encode(new), ex=ttl if ttl and ttl > 0 else None)
                    if new.get("status") != "pending":
                        pipe.delete(self.keys.pending_correction(new["battle_id"], new["reviewer"]))
                    await pipe.execute()
                    return new
                except WatchError:
                    continue

    async def logged_vote(self, vote_id: str) -> dict[str, Any] | None:
        """The vote logged under stream id `vote_id` (as `battle_vote_id` gives it), or None."""
        entries = await self.redis.xrange(self.keys.votes, min=vote_id, max=vote_id, count=1)
        return msgspec.json.decode(entries[0][1][b"v"]) if entries else None

    async def list_corrections(self, *, status: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Corrections, newest first (at most `limit`), of one `status` when given."""
        ids = [i.decode() for i in await self.redis.zrevrange(self.keys.corrections, 0, -1)]
        out: list[dict[str, Any]] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for raw in await self.redis.mget([self.keys.correction(i) for i in chunk]):
                if raw is None:  # expired: the index forgets it lazily
                    continue
                item = msgspec.json.decode(raw)
                if status is None or item.get("status") == status:
                    out.append(item)
                    if len(out) >= limit:
                        return out
        return out

