"""Leaderboards: the human and judge boards, their agreement, and a cheap change check."""

from __future__ import annotations

from typing import Literal

import msgspec
from litestar import get

from service import leaderboards
from service.category_boards import category_boards, check_category
from service.store import Store


@get("/api/leaderboard", summary="A board's ratings (BT, 95% CI, rank UB, Elo), win rates, agreement, filters; "
                                 "`category` is a pool category or a category tag (language=zh, length=long, "
                                 "task_type=coding, hard)")
async def get_leaderboard(
    store: Store, board: Literal["human", "judge"] = "human", category: str | None = None, source: str | None = None
) -> dict:
    category = await check_category(store, category, source)
    view = await leaderboards.board_view(store, board, category=category, source=source or None)
    summary = await leaderboards.arena_summary(store, category=category, source=source or None)
    return {**msgspec.structs.asdict(view), **summary}


@get("/api/leaderboard/categories", summary="The overall board and every category's side by side: each model's rank UB, "
                                            "rating and 95% CI per category, with the category's votes (ratings only "
                                            "from min_votes on); `by` keeps one dimension")
async def get_category_boards(store: Store, board: Literal["human", "judge"] = "human", by: str | None = None) -> dict:
    return msgspec.to_builtins(await category_boards(store, board, by=by or None))


@get("/api/leaderboard/status", summary="Votes logged, votes counted per board (for a category/source) and reviewers excluded: "
                                        "poll this to know when to refresh")
async def leaderboard_status(store: Store, category: str | None = None, source: str | None = None) -> dict:
    """A board is fresh when its `n_battles` equals `counted` of its board here: boards are
    refitted in the background, a few seconds behind the votes."""
    summary = await store.aggregate_summary(category=await check_category(store, category, source), source=source or None)
    return {"votes": summary.logged, "counted": summary.votes, "excluded_reviewers": summary.excluded_reviewers}
