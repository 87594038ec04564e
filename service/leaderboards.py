"""The human and judge leaderboards, computed from the store and cached per process.

- Ratings (Bradley–Terry, 95% bootstrap CI, rank upper bound) come from the board's pair
  counts — the counters every vote increments atomically — or, when a category/source
  filter is set, from the matching votes of the log.
- Online Elo, the filters' choices, judge–human agreement and the judge's consistency come
  from the log. Each process keeps a light copy of the log (`VoteLog`) and reads only the
  entries added since its last look, so a leaderboard follows new votes without a restart
  and without rereading the stream.
- A computed board is cached until the log grows or the excluded reviewers change.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from arena.battles import Battle, agreement
from arena.counts import PairCounts, win_rate_matrix
from arena.elo import elo_update
from arena.matchmaking import ModelState
from arena.ratings import leaderboard
from service.errors import InvalidInput

BOARDS = ("human", "judge")
BOOTSTRAP_ROUNDS = 500
_CACHE_SIZE = 32


class VoteRow(msgspec.Struct):
    """The fields of a logged vote the leaderboards need (the rest is not decoded)."""

    model_a: str
    model_b: str
    winner: str
    board: str = "human"
    reviewer: str | None = None
    category: str | None = None
    source: str | None = None
    question_id: str | None = None
    judgement: str | None = None
    consistent: bool | None = None


class BoardView(msgspec.Struct, kw_only=True):
    """One leaderboard as the page and the API show it."""

    board: str
    category: str | None
    source: str | None
    rows: list[dict[str, Any]]
    n_battles: int
    bootstrap_rounds: int
    notes: list[str]
    models: list[str]  # heatmap order (= rows order)
    win_rates: list[list[float | None]]  # P(row beats column), ties excluded; None where unknown


class VoteLog:
    """A process-local, incrementally refreshed copy of the votes log's light fields."""

    def __init__(self) -> None:
        self.rows: list[VoteRow] = []
        self.last_id = ""
        self.lock = asyncio.Lock()
        self.boards: dict[tuple, BoardView] = {}
        self._decoder = msgspec.json.Decoder(VoteRow)

    async def refresh(self, store) -> list[VoteRow]:
        """Read what was logged since the last refresh; returns all rows, oldest first."""
        async with self.lock:
            while True:
                entries = await store.read_votes_raw(self.last_id, count=20000)
                if not entries:
                    return self.rows
                self.rows.extend(self._decoder.decode(raw) for _, raw in entries)
                self.last_id = entries[-1][0]


_logs: weakref.WeakKeyDictionary[Any, VoteLog] = weakref.WeakKeyDictionary()


def vote_log(store) -> VoteLog:
    """This process's `VoteLog` for `store`."""
    log = _logs.get(store)
    if log is None:
        log = _logs[store] = VoteLog()
    return log


def _selected(rows: Sequence[VoteRow], board: str, excluded: set[str], category: str | None, source: str | None) -> list[VoteRow]:
    return [
        r for r in rows
        if r.board == board and r.reviewer not in excluded
        and (category is None or r.category == category) and (source is None or r.source == source)
    ]


async def board_view(store, board: str, *, category: str | None = None, source: str | None = None) -> BoardView:
    """The leaderboard of `board` ("human" or "judge"), optionally for one prompt category
    and/or source. Cached until the log grows or exclusions change."""
    if board not in BOARDS:
        raise InvalidInput(f"board {board!r}: expected one of {', '.join(BOARDS)}")
    log = vote_log(store)
    rows = await log.refresh(store)
    excluded = await store.excluded_reviewers()
    key = (board, category, source, len(rows), tuple(sorted(excluded)))
    cached = log.boards.get(key)
    if cached is not None:
        return cached
    selected = _selected(rows, board, excluded, category, source)
    units = None
    if board == "judge":
        # A judged (prompt, pair) is one observation, whatever the number of orders judged:
        # its verdicts share a `judgement` id and are resampled together.
        grouped: dict[str, list[tuple[str, str, str]]] = {}
        for k, r in enumerate(selected):
            grouped.setdefault(r.judgement or f"vote-{k}", []).append((r.model_a, r.model_b, r.winner))
        units = list(grouped.values())
    if category is None and source is None and board != "judge":
        counts = PairCounts.from_pairs(await store.pair_counts(board))
    else:
        counts = PairCounts()
        for r in selected:
            counts.add(r.model_a, r.model_b, r.winner)
    elo: dict[str, float] = {}
    for r in selected:
        score = 1.0 if r.winner == "model_a" else 0.0 if r.winner == "model_b" else 0.5
        elo[r.model_a], elo[r.model_b] = elo_update(elo.get(r.model_a, 1000.0), elo.get(r.model_b, 1000.0), score)
    # The fit is numpy work: off the event loop, so voting stays responsive meanwhile.
    board_fit = await asyncio.to_thread(leaderboard, counts, elo=elo, bootstrap=BOOTSTRAP_ROUNDS, seed=0, units=units)
    models = [row.model for row in board_fit.rows]
    matrix = win_rate_matrix(counts) if models else np.zeros((0, 0))
    order = [counts.models.index(m) for m in models]
    ordered = matrix[np.ix_(order, order)] if models else matrix
    view = BoardView(
        board=board,
        category=category,
        source=source,
        rows=[msgspec.structs.asdict(row) for row in board_fit.rows],
        n_battles=board_fit.n_battles,
        bootstrap_rounds=board_fit.bootstrap_rounds,
        notes=list(board_fit.notes),
        models=models,
        win_rates=[[None if math.isnan(x) else float(x) for x in line] for line in ordered.tolist()],
    )
    if len(log.boards) >= _CACHE_SIZE:
        log.boards.pop(next(iter(log.boards)))
    log.boards[key] = view
    return view


async def arena_summary(store, *, category: str | None = None, source: str | None = None) -> dict[str, Any]:
    """What the leaderboard page shows beside the boards: judge–human agreement on shared
    battles (same prompt and pair), the judge's consistency across the two orders, the
    filters' choices, and the vote counts."""
    rows = await vote_log(store).refresh(store)
    excluded = await store.excluded_reviewers()
    human = _selected(rows, "human", excluded, category, source)
    judge = _selected(rows, "judge", excluded, category, source)

    def battles(selected: list[VoteRow]) -> list[Battle]:
        return [Battle(model_a=r.model_a, model_b=r.model_b, winner=r.winner, question_id=r.question_id) for r in selected if r.question_id]  # type: ignore[arg-type]

    agree = agreement(battles(judge), battles(human))
    judgements: dict[str, bool | None] = {}
    for r in judge:
        if r.judgement is not None:
            judgements[r.judgement] = r.consistent
    complete = [c for c in judgements.values() if c is not None]
    return {
        "votes": {"human": len(human), "judge": len(judge), "logged": len(rows), "excluded_reviewers": len(excluded)},
        "agreement": msgspec.structs.asdict(agree),
        "judge_consistency": {"judged_both_orders": len(complete), "inconsistent": sum(not c for c in complete)},
        "categories": sorted({r.category for r in rows if r.category}),
        "sources": sorted({r.source for r in rows if r.source}),
    }


async def reviewer_stats(store) -> list[dict[str, Any]]:
    """Every reviewer seen in the log or invited: human votes logged and whether excluded."""
    rows = await vote_log(store).refresh(store)
    excluded = await store.excluded_reviewers()
    votes: dict[str, int] = {}
    for r in rows:
        if r.board == "human" and r.reviewer:
            votes[r.reviewer] = votes.get(r.reviewer, 0) + 1
    names = set(votes) | set(await store.invited_reviewers()) | excluded
    return [{"reviewer": n, "votes": votes.get(n, 0), "excluded": n in excluded} for n in sorted(names)]


async def model_states(store, models: Sequence[str]) -> list[ModelState]:
    """What matchmaking needs of each model, from the (unfiltered) human board."""
    view = await board_view(store, "human")
    by_model = {row["model"]: row for row in view.rows}
    states = []
    for name in models:
        row = by_model.get(name)
        if row is None:
            states.append(ModelState(name))
        else:
            states.append(ModelState(name, row["rating"], row["ci_low"], row["ci_high"], row["votes"]))
    return states
