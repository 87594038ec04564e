"""Per-pair win/tie/loss counts: everything a Bradley–Terry fit needs from the battles.

Counts are kept per unordered pair of models: wins of the pair's first model, wins of
its second, ties and both-bad ties (both score half for each side). Which side of the
screen a model was on is not kept; the BT model has no position term (as in FastChat).
The service keeps the same four numbers per pair in Redis and rebuilds a `PairCounts`
with `from_pairs` or `from_arrays`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import msgspec
import numpy as np

from arena.battles import Battle

_OUTCOMES = {"model_a": 0, "model_b": 1, "tie": 2, "tie (bothbad)": 3}
#: The first model's score per outcome, in `_OUTCOMES` order: a win, a loss, and half for
#: either kind of tie (as every fit here and FastChat count them).
OUTCOME_SCORE = (1.0, 0.0, 0.5, 0.5)


class PairCount(msgspec.Struct, frozen=True):
    """The counts of one pair; `wins_a` are `model_a`'s wins whichever side it was shown on."""

    model_a: str
    model_b: str
    wins_a: int
    wins_b: int
    ties: int
    bothbad: int

    @property
    def battles(self) -> int:
        """All battles between the two models."""
        return self.wins_a + self.wins_b + self.ties + self.bothbad


@dataclass(frozen=True)
class PairArrays:
    """Counts as parallel arrays over the P pairs with at least one battle: model indices
    `first`/`second` (into `models`) and the four counts, all numpy arrays."""

    models: list[str]
    first: np.ndarray
    second: np.ndarray
    wins_first: np.ndarray
    wins_second: np.ndarray
    ties: np.ndarray
    bothbad: np.ndarray

    @property
    def totals(self) -> np.ndarray:
        """Battles per pair."""
        return self.wins_first + self.wins_second + self.ties + self.bothbad

    @property
    def score_first(self) -> np.ndarray:
        """The first model's score per pair: wins plus half of every tie (float)."""
        return self.wins_first + 0.5 * (self.ties + self.bothbad)


class PairCounts:
    """Win/tie/loss counts per model pair, updatable one vote at a time with `add`.

    Models keep the order they were first seen in; every result indexed by model uses
    `models`' order. Pairs are stored once, with the lower model index first."""

    def __init__(self, models: Iterable[str] = ()) -> None:
        self._models: list[str] = []
        self._index: dict[str, int] = {}
        self._rows: dict[tuple[int, int], int] = {}
        self._pair = np.zeros((0, 2), dtype=np.int64)
        self._counts = np.zeros((0, 4), dtype=np.int64)  # wins_first, wins_second, ties, bothbad
        self._size = 0
        for model in models:
            self._model_index(model)

    # --- building ----------------------------------------------------------------------

    @classmethod
    def from_battles(cls, battles: Iterable[Battle]) -> PairCounts:
        """Count a list of battles (vectorised: a million battles count in well under a second).
        A battle with a `weight` counts as that many battles (Arena-Hard's strong verdicts)."""
        counts = cls()
        index = counts._index
        models = counts._models
        a_idx: list[int] = []
        b_idx: list[int] = []
        outcome: list[int] = []
        weight: list[int] = []
        for b in battles:
            for name in (b.model_a, b.model_b):
                if name not in index:
                    index[name] = len(models)
                    models.append(name)
            a_idx.append(index[b.model_a])
            b_idx.append(index[b.model_b])
            outcome.append(_OUTCOMES[b.winner])
            weight.append(1 if b.weight is None else b.weight)
        if not a_idx:
            return counts
        a = np.asarray(a_idx, dtype=np.int64)
        b = np.asarray(b_idx, dtype=np.int64)
        o = np.asarray(outcome, dtype=np.int64)
        w = np.asarray(weight, dtype=np.int64)
        w = w if (w != 1).any() else None  # unweighted files keep the integer bincount
        swap = a > b
        lo, hi = np.where(swap, b, a), np.where(swap, a, b)
        # After putting the lower index first, a win for model_a is a win for "second" when swapped.
        o = np.where(swap & (o == 0), 1, np.where(swap & (o == 1), 0, o))
        m = len(models)
        pair_key = lo * m + hi
        if m * m <= 1_000_000:  # a dense table is fastest while it is small
            table = np.bincount(pair_key * 4 + o, weights=w, minlength=m * m * 4).reshape(m * m, 4).astype(np.int64)
            keys = np.flatnonzero(table.any(axis=1))
            table = table[keys]
        else:
            keys, inverse = np.unique(pair_key, return_inverse=True)
            table = np.bincount(inverse * 4 + o, weights=w, minlength=len(keys) * 4).reshape(len(keys), 4).astype(np.int64)
        counts._set_rows(keys // m, keys % m, table)
        return counts

    @classmethod
    def from_pairs(cls, pairs: Mapping[tuple[str, str], Sequence[int]] | Iterable[PairCount]) -> PairCounts:
        """Counts from `{(model_a, model_b): (wins_a, wins_b, ties, bothbad)}` or `PairCount`s,
        e.g. read back from the service's per-pair counters. Both orders of a pair may appear;
        they are added up."""
        counts = cls()
        if isinstance(pairs, Mapping):
            items = list(pairs.items())
        else:
            items = [((p.model_a, p.model_b), (p.wins_a, p.wins_b, p.ties, p.bothbad)) for p in pairs]
        for (model_a, model_b), values in items:
            wins_a, wins_b, ties, bothbad = (int(v) for v in values)
            counts._add(model_a, model_b, wins_a, wins_b, ties, bothbad)
        return counts

    @classmethod
    def from_arrays(
        cls,
        models: Sequence[str],
        model_a: Sequence[int] | np.ndarray,
        model_b: Sequence[int] | np.ndarray,
        wins_a: Sequence[int] | np.ndarray,
        wins_b: Sequence[int] | np.ndarray,
        ties: Sequence[int] | np.ndarray,
        bothbad: Sequence[int] | np.ndarray,
    ) -> PairCounts:
        """Counts from parallel arrays: `model_a[k]`, `model_b[k]` index into `models`, and
        the k-th entries of the four count arrays belong to that pair. Models with no battles
        are kept (they show as their own component)."""
        counts = cls(models)
        if len(counts.models) != len(models):
            raise ValueError("models must be distinct")
        for k in range(len(model_a)):
            counts._add(models[int(model_a[k])], models[int(model_b[k])], int(wins_a[k]), int(wins_b[k]), int(ties[k]), int(bothbad[k]))
        return counts

    def add(self, model_a: str, model_b: str, winner: str, count: int = 1) -> None:
        """Count one vote (or `count` identical votes): `winner` is FastChat's
        `model_a`, `model_b`, `tie` or `tie (bothbad)`."""
        if winner not in _OUTCOMES:
            raise ValueError(f"winner {winner!r} is not one of {', '.join(_OUTCOMES)}")
        delta = [0, 0, 0, 0]
        delta[_OUTCOMES[winner]] = count
        self._add(model_a, model_b, *delta)

    def add_battle(self, battle: Battle) -> None:
        """Count one battle (`weight` times, when it has one)."""
        self.add(battle.model_a, battle.model_b, battle.winner, 1 if battle.weight is None else battle.weight)

    # --- reading -----------------------------------------------------------------------

    @property
    def models(self) -> list[str]:
        """Every model seen, in first-seen order (a copy)."""
        return list(self._models)

    @property
    def n_battles(self) -> int:
        """All battles counted."""
        return int(self._counts[: self._size].sum())

    def __len__(self) -> int:
        return self._size

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PairCounts):
            return NotImplemented
        return set(self._models) == set(other._models) and self._as_set() == other._as_set()

    def __repr__(self) -> str:
        return f"PairCounts({len(self._models)} models, {self._size} pairs, {self.n_battles} battles)"

    def pair(self, model_a: str, model_b: str) -> PairCount:
        """The counts between two models, oriented as asked (zeros if they never met)."""
        i, j = self._index.get(model_a), self._index.get(model_b)
        row = self._rows.get((min(i, j), max(i, j))) if i is not None and j is not None else None
        if row is None:
            return PairCount(model_a, model_b, 0, 0, 0, 0)
        w1, w2, t, bb = (int(x) for x in self._counts[row])
        return PairCount(model_a, model_b, w1, w2, t, bb) if i < j else PairCount(model_a, model_b, w2, w1, t, bb)

    def pairs(self) -> list[PairCount]:
        """Every pair with at least one battle."""
        return [
            PairCount(self._models[i], self._models[j], *(int(x) for x in self._counts[row]))
            for (i, j), row in self._rows.items()
        ]

    def arrays(self) -> PairArrays:
        """The counts as numpy arrays (copies), for the fits."""
        n = self._size
        return PairArrays(
            models=list(self._models),
            first=self._pair[:n, 0].copy(),
            second=self._pair[:n, 1].copy(),
            wins_first=self._counts[:n, 0].copy(),
            wins_second=self._counts[:n, 1].copy(),
            ties=self._counts[:n, 2].copy(),
            bothbad=self._counts[:n, 3].copy(),
        )

    def votes(self) -> np.ndarray:
        """Battles per model, in `models` order."""
        a = self.arrays()
        return np.bincount(a.first, a.totals, len(self._models)).astype(np.int64) + np.bincount(
            a.second, a.totals, len(self._models)
        ).astype(np.int64)

    def scores(self) -> np.ndarray:
        """Each model's score (wins + half of its ties of either kind), in `models` order."""
        a = self.arrays()
        m = len(self._models)
        return np.bincount(a.first, a.score_first, m) + np.bincount(a.second, a.totals - a.score_first, m)

    def win_rates(self) -> np.ndarray:
        """Each model's score divided by its battles (ties count half); NaN with no battles."""
        votes = self.votes()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(votes > 0, self.scores() / np.maximum(votes, 1), np.nan)

    def components(self) -> list[list[str]]:
        """The connected components of the comparison graph (models joined by any battle),
        largest first. Ratings are only comparable within one component."""
        labels = self._component_labels()
        groups: dict[int, list[str]] = {}
        for model, label in zip(self._models, labels):
            groups.setdefault(int(label), []).append(model)
        return sorted(groups.values(), key=lambda g: (-len(g), self._index[g[0]]))

    def subset(self, models: Iterable[str]) -> PairCounts:
        """Counts restricted to battles between the given models."""
        keep = set(models)
        return PairCounts.from_pairs([p for p in self.pairs() if p.model_a in keep and p.model_b in keep])

    # --- internals ---------------------------------------------------------------------

    def _component_labels(self) -> np.ndarray:
        m = len(self._models)
        a = self.arrays()
        from scipy.sparse import coo_matrix  # here, not at import: `arena.tally` reads files without scipy
        from scipy.sparse.csgraph import connected_components

        graph = coo_matrix((np.ones(len(a.first)), (a.first, a.second)), shape=(m, m))
        _, labels = connected_components(graph, directed=False)
        return labels

    def _as_set(self) -> set[tuple[str, str, int, int, int, int]]:
        out = set()
        for p in self.pairs():
            if p.model_a <= p.model_b:
                out.add((p.model_a, p.model_b, p.wins_a, p.wins_b, p.ties, p.bothbad))
            else:
                out.add((p.model_b, p.model_a, p.wins_b, p.wins_a, p.ties, p.bothbad))
        return out

    def _model_index(self, model: str) -> int:
        index = self._index.get(model)
        if index is None:
            if not isinstance(model, str) or not model:
                raise ValueError(f"model name must be a non-empty string, got {model!r}")
            index = self._index[model] = len(self._models)
            self._models.append(model)
        return index

    def _add(self, model_a: str, model_b: str, wins_a: int, wins_b: int, ties: int, bothbad: int) -> None:
        if model_a == model_b:
            raise ValueError(f"a model cannot battle itself ({model_a!r})")
        if min(wins_a, wins_b, ties, bothbad) < 0:
            raise ValueError(f"negative count for {model_a!r} vs {model_b!r}")
        i, j = self._model_index(model_a), self._model_index(model_b)
        if i > j:
            i, j, wins_a, wins_b = j, i, wins_b, wins_a
        row = self._rows.get((i, j))
        if row is None:
            row = self._append_row(i, j)
        self._counts[row] += (wins_a, wins_b, ties, bothbad)

    def _append_row(self, i: int, j: int) -> int:
        if self._size == len(self._pair):
            capacity = max(16, 2 * self._size)
            self._pair = np.resize(self._pair, (capacity, 2))
            counts = np.zeros((capacity, 4), dtype=np.int64)
            counts[: self._size] = self._counts[: self._size]
            self._counts = counts
        row = self._size
        self._pair[row] = (i, j)
        self._rows[(i, j)] = row
        self._size += 1
        return row

    def _set_rows(self, first: np.ndarray, second: np.ndarray, table: np.ndarray) -> None:
        self._pair = np.column_stack([first, second]).astype(np.int64)
        self._counts = np.ascontiguousarray(table, dtype=np.int64)
        self._size = len(first)
        self._rows = {(int(i), int(j)): row for row, (i, j) in enumerate(zip(first, second))}


# --- matrices ----------------------------------------------------------------------------


def battle_count_matrix(counts: PairCounts) -> np.ndarray:
    """Battles between every two models (symmetric, int), rows and columns in `counts.models` order."""
    a = counts.arrays()
    m = len(a.models)
    out = np.zeros((m, m), dtype=np.int64)
    out[a.first, a.second] = a.totals
    out[a.second, a.first] = a.totals
    return out


def win_rate_matrix(counts: PairCounts, *, include_ties: bool = False) -> np.ndarray:
    """How often the row model beat the column model, in `counts.models` order.

    With `include_ties=False` (FastChat's pairwise win fraction): wins / decisive battles.
    With `include_ties=True`: (wins + half of all ties) / all battles. NaN where there is
    nothing to divide by, and on the diagonal."""
    a = counts.arrays()
    m = len(a.models)
    ties = (a.ties + a.bothbad).astype(float)
    num_first = a.wins_first + (0.5 * ties if include_ties else 0.0)
    num_second = a.wins_second + (0.5 * ties if include_ties else 0.0)
    den = (a.wins_first + a.wins_second + (ties if include_ties else 0.0)).astype(float)
    out = np.full((m, m), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[a.first, a.second] = np.where(den > 0, num_first / den, np.nan)
        out[a.second, a.first] = np.where(den > 0, num_second / den, np.nan)
    return out
