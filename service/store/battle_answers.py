"""A battle's answers as they are written: one Redis stream per side, so every API process
(and a reviewer who reloads the page) can follow them from the start.

Entries have explicit ids `0-1`, `0-2`, ... (their order, not a time: a reader learns
nothing from the ids it could not see anyway) and one field, the event as JSON.
"""

from __future__ import annotations

from typing import Any

import msgspec

_enc = msgspec.json.Encoder()


class BattleAnswerStore:
    redis: Any
    readers: Any
    keys: Any

    async def last_answer_event(self, battle_id: str, side: str) -> tuple[int, dict[str, Any]] | None:
        """The last (seq, event) of one side's answer log, or None while it has none."""
        entries = await self.redis.xrevrange(self.keys.battle_answer(battle_id, side), count=1)
        for entry_id, fields in entries:
            return int(entry_id.decode().split("-")[1]), msgspec.json.decode(fields[b"e"])
        return None

    async def append_answer_events(self, battle_id: str, events: list[tuple[str, int, dict[str, Any]]], ttl_s: int) -> None:
        """Append `(side, seq, event)`s to the sides' answer logs (seq counts from 1 per
        side, each one higher than the last); the logs expire with the battle."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for side, seq, event in events:
                key = self.keys.battle_answer(battle_id, side)
                pipe.xadd(key, {"e": _enc.encode(event)}, id=f"0-{seq}")
                pipe.expire(key, ttl_s)
            await pipe.execute()

    async def read_answer_events(self, battle_id: str, side: str, after: int = 0, *, block_ms: int | None = None
                                 ) -> list[tuple[int, dict[str, Any]]]:
        """The events of one side after `seq`, as (seq, event); with `block_ms`, waits up to
        that long for the first one (an empty list when none came)."""
        key = self.keys.battle_answer(battle_id, side)
        reply = await (self.readers if block_ms else self.redis).xread({key: f"0-{after}"}, block=block_ms)
        events = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                seq = int(entry_id.decode().split("-")[1])
                events.append((seq, msgspec.json.decode(fields[b"e"])))
        return events
