"""The leaderboards' aggregates: what the boards read instead of the votes log.

Every vote script counts its vote in the same Lua call that logs it (see
`service.store.aggregate_scripts` for the layout): pair counts, running Elo and the judge
board's bootstrap units per board and slice (all, one category, one source, or both),
judge consistency and judge–human agreement per slice, the filters' choices, and each
reviewer's logged human votes. Reading a board is one atomic call whose cost depends on
the number of model pairs, never on the number of votes.

`rebuild_aggregates` recounts everything from the log into a new generation and switches
to it atomically (after a reviewer's exclusion or inclusion, or for a store whose votes
predate the aggregates); votes that arrive meanwhile are in the log, so the rebuild counts
them too.
"""

from __future__ import annotations

from typing import Any

import msgspec

from arena.ratings import UnitKind
from service.store.aggregate_scripts import (
    ENSURE_LUA, READ_BOARD_LUA, READ_REVIEWERS_LUA, READ_SUMMARY_LUA, READ_VERSIONS_LUA, REBUILD_CHUNK_LUA,
)

SEP = "\x1f"
_SLOTS = {"lo": 0, "hi": 1, "tie": 2, "bothbad": 3}


def slice_name(category: str | None, source: str | None) -> str:
    """The aggregates' name for the votes of a category and/or source (both None: all)."""
    if category and source:
        return f"cs={category}{SEP}{source}"
    if category:
        return f"c={category}"
    if source:
        return f"s={source}"
    return "all"


def parse_counts(raw: dict[bytes, bytes] | list[bytes]) -> dict[tuple[str, str], list[int]]:
    """Pair-count hash (a dict, or HGETALL's flat list from a script) →
    {(lo, hi): [wins_lo, wins_hi, ties, bothbad]}."""
    out: dict[tuple[str, str], list[int]] = {}
    for field, value in _items(raw):
        lo, hi, outcome = field.decode().split(SEP)
        out.setdefault((lo, hi), [0, 0, 0, 0])[_SLOTS[outcome]] += int(value)
    return out


def _items(raw: dict[bytes, bytes] | list[bytes]):
    return raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2])


class BoardAggregates(msgspec.Struct, frozen=True):
    """One board's aggregates as read at one instant. `version` changes whenever a vote is
    counted into this board and slice, or the aggregates are rebuilt."""

    version: str
    pairs: dict[tuple[str, str], list[int]]
    elo: dict[str, float]
    units: dict[UnitKind, int]


class AggregateSummary(msgspec.Struct, frozen=True):
    """A slice's figures beside the boards, the filters' choices, and the log's size."""

    votes: dict[str, int]  # counted votes per board
    # Judge–human agreement as `arena.agreement` counts it: items (question, turn, pair) with
    # both kinds of verdict, verdict pairs compared and agreeing, and the same without ties.
    matched: int
    pairs: int
    agree: int
    decisive: int
    decisive_pairs: int
    agree_decisive: int
    judged_both_orders: int
    inconsistent: int
    categories: list[str]
    sources: list[str]
    logged: int  # votes in the log, counted or not
    excluded_reviewers: int


class AggregateStore:
    redis: Any
    keys: Any
    _scripts: dict[str, Any] | None = None

    def _script(self, name: str, text: str):
        if self._scripts is None:
            self._scripts = {}
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.redis.register_script(text)
        return script

    async def ensure_aggregates(self) -> bool:
        """Make sure the aggregates exist; a store whose votes were logged before they were
        kept is rebuilt from the log now (once). Returns True when it rebuilt."""
        ok = await self._script("ensure", ENSURE_LUA)(keys=[self.keys.aggregates_current, self.keys.votes])
        if int(ok):
            return False
        await self.rebuild_aggregates()
        return True

    async def rebuild_aggregates(self, *, chunk: int = 1000) -> dict[str, int]:
        """Recount every aggregate from the log, skipping excluded reviewers, into a new
        generation that becomes current atomically with the count of the log's last vote;
        then delete the previous one. Each step counts `chunk` votes, so Redis is never
        held for long. Of two recounts that overlap, the one started later stands: one
        started earlier that finishes last is dropped, as it may count a reviewer excluded
        while it ran. Returns votes counted per board (by this recount)."""
        gen = str(await self.redis.incr(self.keys.aggregates_next))
        script = self._script("rebuild", REBUILD_CHUNK_LUA)
        counted = {"human": 0, "judge": 0}
        after = ""
        while True:
            done, last, human, judge, previous = await script(
                keys=[self.keys.votes, self.keys.aggregates_current, self.keys.excluded_reviewers],
                args=[self.keys.aggregates, gen, after, chunk],
            )
            counted["human"] += int(human)
            counted["judge"] += int(judge)
            after = last.decode() if isinstance(last, bytes) else str(last)
            if int(done):
                break
        await self._drop_generation(previous.decode())
        await self.redis.unlink(self.keys.legacy_board_counts("human"), self.keys.legacy_board_counts("judge"))
        return counted

    async def _drop_generation(self, gen: str) -> None:
        pattern = _glob_escape(f"{self.keys.aggregates}{gen}:") + "*"
        batch: list[bytes] = []
        async for key in self.redis.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                await self.redis.unlink(*batch)
                batch = []
        if batch:
            await self.redis.unlink(*batch)

    async def board_aggregates(self, board: str, *, category: str | None = None, source: str | None = None) -> BoardAggregates:
        """A board's pair counts, running Elo and bootstrap units (judge board) for the
        votes of `category` and/or `source` (None: all), read atomically."""
        gen, version, counts, elo, units = await self._script("read_board", READ_BOARD_LUA)(
            keys=[self.keys.aggregates_current], args=[self.keys.aggregates, board, slice_name(category, source)])
        kinds = {}
        for field, n in _items(units):
            lo, hi, wins_lo, wins_hi, ties = field.decode().split(SEP)
            if int(n) > 0:
                kinds[UnitKind(lo, hi, int(wins_lo), int(wins_hi), int(ties))] = int(n)
        return BoardAggregates(
            version=f"{gen.decode()}:{int(version)}",
            pairs=parse_counts(counts),
            elo={model.decode(): float(rating) for model, rating in _items(elo)},
            units=kinds,
        )

    async def board_versions(self, boards: list[tuple[str, str | None, str | None]]) -> list[str]:
        """The current `version` of each (board, category, source), in one call."""
        args = [self.keys.aggregates]
        for board, category, source in boards:
            args += [board, slice_name(category, source)]
        gen, *versions = await self._script("read_versions", READ_VERSIONS_LUA)(keys=[self.keys.aggregates_current], args=args)
        return [f"{gen.decode()}:{int(v)}" for v in versions]

    async def aggregate_summary(self, *, category: str | None = None, source: str | None = None) -> AggregateSummary:
        """The agreement, consistency and vote figures of a slice, with the filters' choices."""
        summary, categories, sources, logged, excluded = await self._script("read_summary", READ_SUMMARY_LUA)(
            keys=[self.keys.aggregates_current, self.keys.votes, self.keys.excluded_reviewers],
            args=[self.keys.aggregates, slice_name(category, source)])
        fields = {k.decode(): v for k, v in _items(summary)}

        def number(name: str) -> int:
            return int(fields.get(name, 0))

        return AggregateSummary(
            votes={"human": number("votes:human"), "judge": number("votes:judge")},
            matched=number("matched"),
            pairs=number("pairs"),
            agree=number("agree"),
            decisive=number("decisive"),
            decisive_pairs=number("decisive_pairs"),
            agree_decisive=number("agree_decisive"),
            judged_both_orders=number("both_orders"),
            inconsistent=number("inconsistent"),
            categories=sorted(c.decode() for c in categories),
            sources=sorted(s.decode() for s in sources),
            logged=int(logged),
            excluded_reviewers=int(excluded),
        )

    async def reviewer_votes(self) -> dict[str, int]:
        """Human votes logged per reviewer (an excluded reviewer's too)."""
        raw = await self._script("read_reviewers", READ_REVIEWERS_LUA)(keys=[self.keys.aggregates_current], args=[self.keys.aggregates])
        return {r.decode(): int(n) for r, n in _items(raw)}

    async def pair_counts(self, board: str) -> dict[tuple[str, str], list[int]]:
        """{(lo, hi): [wins_lo, wins_hi, ties, bothbad]} for a board ("human" or "judge")."""
        return (await self.board_aggregates(board)).pairs


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
