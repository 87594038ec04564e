"""The human and judge leaderboards, fitted from the store's aggregates.

- Ratings (Bradley–Terry, 95% bootstrap CI, rank upper bound), online Elo and the
  win-rate matrix of a board — overall or for one prompt category and/or source — come
  from that board's aggregates (`service.store.aggregates`), which every vote updates
  atomically. No process reads or keeps the votes log for a board.
- Judge–human agreement, the judge's consistency, the filters' choices and the reviewers'
  vote counts are aggregates too.
- Fits are cached per process and refreshed in the background (`service.board_cache`):
  a request serves the last fit, and a vote never waits for one.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from arena.battles import Agreement
from arena.counts import PairCounts, battle_count_matrix, win_rate_matrix
from arena.matchmaking import ModelState
from arena.ratings import leaderboard
from service.errors import InvalidInput

BOARDS = ("human", "judge")
#: Bootstrap rounds of a board's CI unless `ARENA_BOARD_BOOTSTRAP` says otherwise.
BOOTSTRAP_ROUNDS = 500


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
    battles: list[list[int]]  # battles between row and column, ties included (matchmaking reads them)


def check_board(board: str) -> None:
    """Raises `InvalidInput` unless `board` is "human" or "judge"."""
    if board not in BOARDS:
        raise InvalidInput(f"board {board!r}: expected one of {', '.join(BOARDS)}")


async def fit_board(store, board: str, *, category: str | None = None, source: str | None = None,
                    bootstrap: int = BOOTSTRAP_ROUNDS, fragility: bool = True) -> tuple[str, BoardView]:
    """Fit a board from its aggregates: returns (the aggregates' version it was fitted at,
    the view). The fit runs in a thread, so the event loop keeps serving votes meanwhile;
    its cost depends on the models and pairs, not on the number of votes. Without
    `fragility` the rows' `flip_votes` are None (a fifth of a fit's time)."""
    check_board(board)
    agg = await store.board_aggregates(board, category=category, source=source)
    # Sorted, so the same counts give the same bootstrap draws whatever Redis's hash order.
    counts = PairCounts.from_pairs(dict(sorted(agg.pairs.items())))
    units = agg.units if board == "judge" and agg.units else None  # a judgement's verdicts resample together
    board_fit = await asyncio.to_thread(leaderboard, counts, elo=agg.elo, bootstrap=bootstrap, seed=0, units=units,
                                        fragility=fragility)
    models = [row.model for row in board_fit.rows]
    matrix = win_rate_matrix(counts) if models else np.zeros((0, 0))
    fought = battle_count_matrix(counts) if models else np.zeros((0, 0), dtype=np.int64)
    order = [counts.models.index(m) for m in models]
    ordered = matrix[np.ix_(order, order)] if models else matrix
    return agg.version, BoardView(
        board=board,
        category=category,
        source=source,
        rows=[msgspec.structs.asdict(row) for row in board_fit.rows],
        n_battles=board_fit.n_battles,
        bootstrap_rounds=board_fit.bootstrap_rounds,
        notes=list(board_fit.notes),
        models=models,
        win_rates=[[None if math.isnan(x) else float(x) for x in line] for line in ordered.tolist()],
        battles=fought[np.ix_(order, order)].tolist() if models else [],
    )


async def board_view(store, board: str, *, category: str | None = None, source: str | None = None) -> BoardView:
    """The leaderboard of `board` ("human" or "judge"), optionally for one prompt category
    and/or source: this process's last fit of it (see `service.board_cache`), fitted now
    only when there is none yet, or — with no background refresher running, as in the
    CLI — when votes were counted since."""
    from service.board_cache import board_cache

    check_board(board)
    return await board_cache(store).view(store, board, category, source)


async def arena_summary(store, *, category: str | None = None, source: str | None = None) -> dict[str, Any]:
    """What the leaderboard page shows beside the boards: judge–human agreement on shared
    battles (same prompt and pair), the judge's consistency across the two orders, the
    filters' choices, and the vote counts."""
    summary = await store.aggregate_summary(category=category, source=source)  # one atomic read
    agree = Agreement(
        matched=summary.matched,
        agreement=summary.agree / summary.pairs if summary.pairs else None,
        decisive=summary.decisive,
        agreement_decisive=summary.agree_decisive / summary.decisive_pairs if summary.decisive_pairs else None,
        pairs=summary.pairs,
        decisive_pairs=summary.decisive_pairs,
    )
    return {
        "votes": {**summary.votes, "logged": summary.logged, "excluded_reviewers": summary.excluded_reviewers},
        "agreement": msgspec.structs.asdict(agree),
        "judge_consistency": {"judged_both_orders": summary.judged_both_orders, "inconsistent": summary.inconsistent},
        "categories": summary.categories,
        "sources": summary.sources,
    }


async def reviewer_stats(store) -> list[dict[str, Any]]:
    """Every reviewer who voted or is invited: human votes logged and whether excluded."""
    votes = await store.reviewer_votes()
    excluded = await store.excluded_reviewers()
    names = set(votes) | set(await store.invited_reviewers()) | excluded
    return [{"reviewer": n, "votes": votes.get(n, 0), "excluded": n in excluded} for n in sorted(names)]


async def model_states(store, models: Sequence[str]) -> tuple[list[ModelState], dict[tuple[str, str], int]]:
    """What matchmaking needs, from the (unfiltered) human board's last fit: each model's
    state, and the battles fought per pair of these models (pairs that never met left out)."""
    view = await board_view(store, "human")
    by_model = {row["model"]: row for row in view.rows}
    states = []
    for name in models:
        row = by_model.get(name)
        if row is None:
            states.append(ModelState(name))
        else:
            states.append(ModelState(name, row["rating"], row["ci_low"], row["ci_high"], row["votes"]))
    asked = set(models)
    wanted = {name: i for i, name in enumerate(view.models) if name in asked}
    battles = {(a, b): view.battles[i][j] for a, i in wanted.items() for b, j in wanted.items()
               if i < j and view.battles[i][j] > 0}
    return states, battles
