"""Votes resampled together: the judge board's bootstrap unit is a judgement (a prompt and a
pair judged in both orders), not a single verdict. `arena.ratings.leaderboard(units=…)`
uses these to redraw units while keeping the counts' point fit; a store that keeps only
how many units there are of each `UnitKind` passes those counts instead of the units."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec
import numpy as np

from arena import _solver

# A cell: (pair row, wins of the pair's first model, wins of its second, ties) per unit kind.
Cells = tuple[np.ndarray, np.ndarray]


class UnitKind(msgspec.Struct, frozen=True):
    """What one unit holds: its pair and the votes in it (`wins_a` are `model_a`'s wins;
    ties of either kind in `ties`). Units of one kind are interchangeable in the bootstrap,
    so a store can keep how many units there are of each kind instead of the units."""

    model_a: str
    model_b: str
    wins_a: int
    wins_b: int
    ties: int


def unit_kinds(units: Iterable[Sequence[tuple[str, str, str]]]) -> dict[UnitKind, int]:
    """How many of `units` (each a list of `(model_a, model_b, winner)` votes on one pair)
    are of each kind. Raises `ValueError` when a unit spans two pairs."""
    kinds: dict[UnitKind, int] = {}
    for unit in units:
        if not unit:
            continue
        lo, hi = sorted((unit[0][0], unit[0][1]))
        vec = [0, 0, 0]
        for model_a, model_b, winner in unit:
            if sorted((model_a, model_b)) != [lo, hi]:
                raise ValueError("a unit's votes must all be on one model pair")
            if winner in ("model_a", "model_b"):
                vec[0 if (model_a if winner == "model_a" else model_b) == lo else 1] += 1
            else:
                vec[2] += 1
        kind = UnitKind(lo, hi, *vec)
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def unit_cells(models: Sequence[str], first: np.ndarray, second: np.ndarray,
               totals: tuple[np.ndarray, np.ndarray, np.ndarray], kinds: Mapping[UnitKind, int]) -> Cells:
    """`(keys, counts)`: each unit kind as `(pair row, wins_first, wins_second, ties)` and
    how many units are of that kind. Raises `ValueError` when the units do not add up to
    exactly `totals` (wins_first, wins_second, ties per pair row: the votes being fitted)."""
    row_of = {(int(a), int(b)): r for r, (a, b) in enumerate(zip(first, second))}
    index = {m: i for i, m in enumerate(models)}
    cells: dict[tuple[int, int, int, int], int] = {}
    for kind, n in kinds.items():
        if n <= 0:
            continue
        if kind.model_a not in index or kind.model_b not in index:
            raise ValueError("the units do not hold exactly the votes of the counts")
        a, b = index[kind.model_a], index[kind.model_b]
        row = row_of.get((min(a, b), max(a, b)))
        if row is None:
            raise ValueError("the units do not hold exactly the votes of the counts")
        vec = (kind.wins_a, kind.wins_b) if a < b else (kind.wins_b, kind.wins_a)
        key = (row, *vec, kind.ties)
        cells[key] = cells.get(key, 0) + n
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
