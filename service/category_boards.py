"""Per-category boards side by side with the overall one (the public arena's category view):
each model's rank upper bound, rating and 95% CI in every category slice, with the slice's
vote count; a slice with fewer than `MIN_CATEGORY_VOTES` votes says so instead of showing
ratings that a handful of votes would swing.

A category is a battle's tag (`service.prompt_categories`: `language=zh`, `length=long`,
`task_type=coding`, `hard`) or a pool's free `category`; its board is the aggregates'
category slice, fitted and cached like any other board (`service.board_cache`) but at
`CATEGORY_ROUNDS` bootstrap rounds and without flip counts (the table shows neither), and
never while a page waits: with a refresher running, a column not fitted yet says
"computing" and the refresher's next round fits it. A cold page fits the overall board
only (measured: `bench/category_fits.py`).
"""

from __future__ import annotations

from typing import Any

import msgspec

from service.board_cache import board_cache
from service.errors import InvalidInput, NotFound
from service.leaderboards import board_view, check_board
from service.prompt_categories import DIMENSIONS, parse_tag

#: Votes a category slice needs before its ratings are shown.
MIN_CATEGORY_VOTES = 20
#: Category columns beside the overall one; past that, pick a dimension (`by`).
MAX_COLUMNS = 12
#: Bootstrap rounds of a column's CI (the overall board and a category's own page keep
#: `ARENA_BOARD_BOOTSTRAP`): a fifth of the default's cost per fit.
CATEGORY_ROUNDS = 100
#: Longest `category` a request may name.
MAX_CATEGORY_CHARS = 100
#: What `by` may name: a tag dimension, or "category" for the pools' own categories.
GROUPS = (*DIMENSIONS, "category")


class CategoryColumn(msgspec.Struct, kw_only=True):
    """One slice: `category` None is the overall board. `cells` by model, only when `enough`."""

    category: str | None
    dimension: str  # "overall", a tag dimension, or "category" (a pool's)
    value: str
    n_battles: int | None  # None while computing
    enough: bool
    cells: dict[str, dict[str, Any]]
    computing: bool = False  # not fitted yet: the refresher's next round fits it


class CategoryBoards(msgspec.Struct, kw_only=True):
    board: str
    min_votes: int
    models: list[str]  # the overall board's order
    columns: list[CategoryColumn]
    hidden: int  # categories left out (more than MAX_COLUMNS): narrow with `by`


def dimension_of(category: str) -> tuple[str, str]:
    """(dimension, value) of a known category: a tag's, or ("category", name) for a pool's —
    also for a stored name that looks like a tag with a value no tag has (logged before pool
    categories were checked): one odd category must not take the boards down."""
    try:
        return parse_tag(category) or ("category", category)
    except InvalidInput:
        return ("category", category)


async def check_category(store, category: str | None, source: str | None = None) -> str | None:
    """The `category` a request names, checked: None or empty for all votes; a category tag
    with a value its dimension can have (`InvalidInput` otherwise, or with a `source`: tags
    are not counted per source; one no vote carries yet is an empty board); or a pool
    category some vote carries (`NotFound` otherwise, with the known ones)."""
    if not category:
        return None
    if len(category) > MAX_CATEGORY_CHARS or not category.isprintable():
        raise InvalidInput(f"category: expected at most {MAX_CATEGORY_CHARS} printable characters")
    if parse_tag(category) is not None:
        if source:
            raise InvalidInput(f"category {category!r} is a category tag: its board is over every source; "
                               "filter by the tag or by the source, not both")
        return category
    known = (await store.aggregate_summary()).categories
    if category not in known:
        listed = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        raise NotFound(f"category {category!r}: no vote is in it (known: {listed or 'none yet'}; "
                       "tags: task_type=NAME, language=zh|ja|ko|latin|other, length=short|medium|long, hard)")
    return category


def _order(category: str) -> tuple[int, str]:
    dimension, value = dimension_of(category)
    return GROUPS.index(dimension), value


async def category_boards(store, board: str = "human", *, by: str | None = None) -> CategoryBoards:
    """The overall board and each category's (of dimension `by` only, when given), side by
    side; see the module doc."""
    check_board(board)
    if by and by not in GROUPS:
        raise InvalidInput(f"by {by[:40]!r}: expected one of {', '.join(GROUPS)}")
    summary = await store.aggregate_summary()
    categories = sorted((c for c in summary.categories if not by or dimension_of(c)[0] == by), key=_order)
    shown, hidden = categories[:MAX_COLUMNS], max(0, len(categories) - MAX_COLUMNS)
    overall = await board_view(store, board)
    columns = [_column(overall, None, enough_at=1)]
    cache = board_cache(store)
    for category in shown:
        view = await cache.cached(store, board, category, None, rounds=CATEGORY_ROUNDS)
        columns.append(_column(view, category, enough_at=MIN_CATEGORY_VOTES))
    return CategoryBoards(board=board, min_votes=MIN_CATEGORY_VOTES, models=[r["model"] for r in overall.rows],
                          columns=columns, hidden=hidden)


def _column(view, category: str | None, *, enough_at: int) -> CategoryColumn:
    dimension, value = dimension_of(category) if category else ("overall", "")
    if view is None:
        return CategoryColumn(category=category, dimension=dimension, value=value, n_battles=None, enough=False,
                              cells={}, computing=True)
    enough = view.n_battles >= enough_at
    cells = {r["model"]: {k: r[k] for k in ("rank_ub", "rating", "ci_low", "ci_high", "votes")} for r in view.rows} if enough else {}
    return CategoryColumn(category=category, dimension=dimension, value=value, n_battles=view.n_battles, enough=enough, cells=cells)
