"""Battles read straight into what the leaderboard needs: pair counts and online Elo.

`arena ratings` needs, of each battle, only who met whom, who won and when. `tally_file`
decodes just those four fields (msgspec, typed, ~4 MB of lines at a time, into untracked
structs) and folds each chunk into integer pair counts and the running Elo, so memory is
O(models² + chunk), not O(battles): ten million battles read in the memory of one chunk.
Per record, only C runs (the decoder, then `map` with `attrgetter` and a dict to number the
models) except the online Elo, an inherently sequential loop: about a third of the read,
skipped with `elo=False` (`arena ratings --no-elo`). Formats: JSONL (streamed),
a JSON array (decoded at once, into the slim records only), and the public arena's dumps
as Parquet or CSV (streamed in record batches with pyarrow).

Online Elo follows the battles' time order (`tstamp`), as FastChat's `compute_elo`: while
the file's timestamps do not go backwards it is updated as the chunks come; if they do, the
compact (model, model, outcome, tstamp) columns — 17 bytes a battle — are kept and sorted
at the end instead (only when Elo is asked for).

Only well-formed input in FastChat's schema takes this path: the first malformed record
(or one this reader cannot type, or a public dump's own schema: the 55k CSV's winner
columns, the 140k `both_bad` and ISO `timestamp`) makes `tally_file` return None, and the
caller reads the file with `arena.battles.read_battles`, which maps those schemas and
whose line-numbered errors and `--skip-invalid` apply. The format is decided once, in
`arena.files`, for both readers.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import repeat
from operator import attrgetter, is_not
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np

from arena.counts import _OUTCOMES, OUTCOME_SCORE, PairCounts
from arena.elo import replay
from arena.files import file_format, jsonl_chunks, record_batches

#: Lines decoded per step: ~100 bytes a battle, so a block is ~4 MB of text (blocks that fit
#: in cache decode ~1.5x faster than 20 MB ones).
CHUNK_LINES = 40_000
_SCORE = np.array(OUTCOME_SCORE)
_Winner = Literal["model_a", "model_b", "tie", "tie (bothbad)"]  # any other winner: the validating reader


class _Vote(msgspec.Struct, gc=False):  # gc=False: a million untracked records never wake the collector
    model_a: str
    model_b: str
    winner: _Winner
    tstamp: float | None = None
    timestamp: str | None = None  # the 140k dump's time: only the validating reader converts it
    weight: int | None = None  # battles this verdict counts as (`Battle.weight`); Elo ignores it


_model_a, _model_b, _winner = attrgetter("model_a"), attrgetter("model_b"), attrgetter("winner")
_tstamp, _timestamp, _weight = attrgetter("tstamp"), attrgetter("timestamp"), attrgetter("weight")


class Tally(msgspec.Struct):
    """What a battles file holds for the leaderboard."""

    counts: PairCounts
    elo: dict[str, float] | None  # None when not asked for (`tally_file(..., elo=False)`)
    n_battles: int


class _Folder:
    """Folds chunks of votes into pair-count rows and the online Elo."""

    def __init__(self, elo: bool = True) -> None:
        self.with_elo = elo
        self.index: dict[str, int] = {}
        self.models: list[str] = []
        self.keys = np.zeros(0, dtype=np.int64)  # pair keys (lo * 2^32 + hi), sorted
        self.rows = np.zeros((0, 4), dtype=np.int64)  # their 4 outcome counts
        self.elo = np.zeros(0)
        self.last_t = -np.inf
        self.ordered = True
        self.kept: list[np.ndarray] = []  # compact columns, only once time order breaks
        self.missing_t = False  # a battle without tstamp: Elo goes in file order, as online_elo
        self.n = 0

    def _ids(self, votes: list[_Vote], side: attrgetter) -> np.ndarray:
        """Model indices of one side (the per-record work runs in C: map, attrgetter, dict)."""
        return np.fromiter(map(self.index.__getitem__, map(side, votes)), dtype=np.int64, count=len(votes))

    def _learn(self, votes: list[_Vote]) -> None:
        """Number the chunk's new models where first seen (A before B)."""
        index, models = self.index, self.models
        for v in votes:
            for name in (v.model_a, v.model_b):
                if name not in index:
                    index[name] = len(models)
                    models.append(name)

    def add(self, votes: list[_Vote]) -> bool:
        if not votes:
            return True
        n = len(votes)
        if any(map(is_not, map(_timestamp, votes), repeat(None))) and None in map(_tstamp, votes):
            return False
        o = np.fromiter(map(_OUTCOMES.__getitem__, map(_winner, votes)), dtype=np.int64, count=n)
        try:
            a, b = self._ids(votes, _model_a), self._ids(votes, _model_b)
        except KeyError:  # only chunks that bring new models take this loop
            self._learn(votes)
            a, b = self._ids(votes, _model_a), self._ids(votes, _model_b)
        if (a == b).any() or "" in self.index or None in self.index:
            return False
        if not self.missing_t:
            try:
                t = np.fromiter(map(_tstamp, votes), dtype=float, count=n)
            except TypeError:  # a battle without tstamp: Elo goes in file order from here on
                if None not in map(_tstamp, votes):
                    return False  # a time this reader cannot type (a Parquet timestamp column)
                self.missing_t = True
            else:
                if np.isnan(t).any():  # numpy reads None as NaN: some battle has no tstamp
                    if None not in map(_tstamp, votes):
                        return False  # a NaN time: the validating reader rejects it
                    self.missing_t = True
        if self.missing_t:
            t = np.arange(self.n, self.n + n, dtype=float)
        self.n += n
        w = None
        if any(map(_weight, votes)) or 0 in map(_weight, votes):
            w = np.fromiter((1 if x is None else x for x in map(_weight, votes)), dtype=np.int64, count=n)
            if (w < 1).any():
                return False
        self._count(a, b, o, w)
        if not self.with_elo:
            return True
        if self.elo.size < len(self.models):
            self.elo = np.concatenate([self.elo, np.full(len(self.models) - self.elo.size, 1000.0)])
        if self.ordered and (self.missing_t or (t[0] >= self.last_t and (np.diff(t) >= 0).all())):
            self.last_t = t[-1]
            _elo_pass(self.elo, a, b, o)
        elif self.ordered:
            self.ordered = False  # time order broke: `tally_file` starts over keeping the columns
        else:
            self.kept.append(np.rec.fromarrays([a.astype(np.int32), b.astype(np.int32), o.astype(np.int8), t],
                                               names="a,b,o,t"))  # 17 bytes a battle
        return True

    def _count(self, a: np.ndarray, b: np.ndarray, o: np.ndarray, w: np.ndarray | None) -> None:
        swap = a > b
        lo, hi = np.where(swap, b, a), np.where(swap, a, b)
        o = np.where(swap & (o == 0), 1, np.where(swap & (o == 1), 0, o))
        # The pairs so far and the chunk's, numbered together: O(pairs + chunk) a chunk.
        keys, inverse = np.unique(np.concatenate([self.keys, (lo << 32) | hi]), return_inverse=True)
        before = len(self.keys)
        rows = np.bincount(inverse[before:] * 4 + o, weights=w, minlength=len(keys) * 4).reshape(len(keys), 4).astype(np.int64)
        rows[inverse[:before]] += self.rows
        self.keys, self.rows = keys, rows

    def finish(self) -> Tally:
        counts = PairCounts(self.models)
        if len(self.keys):
            counts._set_rows(self.keys >> 32, self.keys & 0xFFFFFFFF, self.rows)
        if not self.with_elo:
            return Tally(counts=counts, elo=None, n_battles=self.n)
        elo = self.elo
        if not self.ordered:  # every battle's columns were kept (see `tally_file`): replay sorted
            elo = np.full(len(self.models), 1000.0)
            cols = np.concatenate(self.kept)
            order = np.arange(len(cols)) if self.missing_t else np.argsort(cols["t"], kind="stable")
            _elo_pass(elo, cols["a"][order], cols["b"][order], cols["o"][order])
        return Tally(counts=counts, elo={m: float(elo[i]) for i, m in enumerate(self.models)}, n_battles=self.n)


def _elo_pass(elo: np.ndarray, a: np.ndarray, b: np.ndarray, o: np.ndarray) -> None:
    """Online Elo (`arena.elo.replay`, FastChat's `compute_elo`), in place, in order."""
    ratings = elo.tolist()
    replay(ratings, a.tolist(), b.tolist(), _SCORE[o].tolist())
    elo[:] = ratings


def _arrow_batches(path: Path) -> Iterator[list[_Vote]]:
    for batch in record_batches(path, columns=["model_a", "model_b", "winner", "tstamp", "timestamp", "weight"]):
        columns = batch.schema.names
        if not {"model_a", "model_b", "winner"} <= set(columns) or ("timestamp" in columns and "tstamp" not in columns):
            raise ValueError("not FastChat's columns")  # a public dump's own schema: the validating reader maps it
        data = {name: batch.column(name).to_pylist() for name in ("model_a", "model_b", "winner", "tstamp", "weight") if name in columns}
        n = batch.num_rows
        t = data.get("tstamp", [None] * n)
        w = data.get("weight", [None] * n)
        yield [_Vote(data["model_a"][k], data["model_b"][k], data["winner"][k], t[k], weight=w[k]) for k in range(n)]


def _chunks(path: Path) -> Iterator[list[_Vote]]:
    kind = file_format(path)
    if kind in ("parquet", "csv"):
        yield from _arrow_batches(path)
    elif kind == "json":
        yield msgspec.json.Decoder(list[_Vote]).decode(path.read_bytes())
    else:
        decoder = msgspec.json.Decoder(_Vote)
        for chunk in jsonl_chunks(path, CHUNK_LINES * 100):
            yield decoder.decode_lines(chunk)


def tally_file(path: str | Path, *, elo: bool = True) -> Tally | None:
    """Pair counts and online Elo of a battles file (JSONL, JSON array, Parquet, CSV), or None
    when a record is malformed (the caller then reads it the validating way). Without `elo`
    the read is ~30% faster and its memory O(models² + chunk) whatever the battles' order."""
    path = Path(path)
    try:
        folder = _Folder(elo)
        for votes in _chunks(path):
            if not folder.add(votes):
                return None
            if not folder.ordered:  # timestamps went backwards: read again, keeping every battle's columns
                unordered = _Folder()
                unordered.ordered = False
                for again in _chunks(path):
                    if not unordered.add(again):
                        return None
                return unordered.finish()
        return folder.finish()
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, KeyError, OSError, RecursionError):
        return None
