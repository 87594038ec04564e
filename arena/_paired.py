"""Votes resampled together: the judge board's bootstrap unit is a judgement (a prompt and a
pair judged in both orders), not a single verdict. `arena.ratings.leaderboard(units=…)`
uses these to redraw units while keeping the counts' point fit."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from arena import _solver

# A cell: (pair row, wins of the pair's first model, wins of its second, ties) per unit kind.
Cells = tuple[np.ndarray, np.ndarray]


def unit_cells(models: Sequence[str], first: np.ndarray, second: np.ndarray,
               totals: tuple[np.ndarray, np.ndarray, np.ndarray],
               units: Sequence[Sequence[tuple[str, str, str]]]) -> Cells:
    """`(keys, counts)`: each distinct unit kind as `(pair row, wins_first, wins_second,
    ties)` and how many units are of that kind. Raises `ValueError` when a unit spans two
    pairs, or when the units do not add up to exactly `totals` (wins_first, wins_second,
    ties per pair row: the votes being fitted)."""
    row_of = {(int(a), int(b)): r for r, (a, b) in enumerate(zip(first, second))}
    index = {m: i for i, m in enumerate(models)}
    cells: dict[tuple[int, int, int, int], int] = {}
    for unit in units:
        row, vec = None, [0, 0, 0]
        for model_a, model_b, winner in unit:
            a, b = index[model_a], index[model_b]
            this = row_of[(min(a, b), max(a, b))]
            if row is not None and this != row:
                raise ValueError("a unit's votes must all be on one model pair")
            row = this
            if winner in ("model_a", "model_b"):
                vec[0 if (winner == "model_a") == (a < b) else 1] += 1
            else:
                vec[2] += 1
        if row is not None:
            cells[(row, *vec)] = cells.get((row, *vec), 0) + 1
    keys = np.array(sorted(cells), dtype=np.int64).reshape(-1, 4)
    counts = np.array([cells[tuple(k)] for k in keys.tolist()], dtype=np.int64)
    for column, total in zip((1, 2, 3), totals):
        got = np.bincount(keys[:, 0], weights=keys[:, column] * counts, minlength=len(total))
        if not np.array_equal(got.astype(np.int64), np.asarray(total, dtype=np.int64)):
            raise ValueError("the units do not hold exactly the votes of the counts")
    return keys, counts


def draw_units(cells: Cells, n_pairs: int, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`size` resamples of the units (a multinomial over unit kinds, as many units as there
    are), each turned back into (wins_first, wins_second, ties) per pair row × round."""
    keys, counts = cells
    draws = _solver.MultinomialSampler(counts).draw(rng, size).astype(np.int64)  # kinds × size
    out = []
    for column in (1, 2, 3):
        totals = np.zeros((n_pairs, size), dtype=np.int64)
        np.add.at(totals, keys[:, 0], draws * keys[:, column][:, None])
        out.append(totals)
    return out[0], out[1], out[2]
