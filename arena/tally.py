"""Battles read straight into what the leaderboard needs: pair counts and online Elo.

`arena ratings` needs, of each battle, only who met whom, who won and when. `tally_file`
decodes just those four fields (msgspec, typed, a chunk of lines at a time) and folds each
chunk into integer pair counts and the running Elo, so memory is O(models² + chunk), not
O(battles): ten million battles read in the memory of one chunk. Formats: JSONL (streamed),
a JSON array (decoded at once, into the slim records only), and the public arena's dumps
as Parquet or CSV (streamed in record batches with pyarrow).

Online Elo follows the battles' time order (`tstamp`), as FastChat's `compute_elo`: while
the file's timestamps do not go backwards it is updated as the chunks come; if they do, the
compact (model, model, outcome, tstamp) columns — 17 bytes a battle — are kept and sorted
at the end instead.

Only well-formed input in FastChat's schema takes this path: the first malformed record
(or one this reader cannot type, or a public dump's own schema: the 55k CSV's winner
columns, the 140k `both_bad` and ISO `timestamp`) makes `tally_file` return None, and the
caller reads the file with `arena.battles.read_battles`, which maps those schemas and
whose line-numbered errors and `--skip-invalid` apply. The format is decided once, in
`arena.files`, for both readers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np

from arena.counts import _OUTCOMES, OUTCOME_SCORE, PairCounts
from arena.elo import replay
from arena.files import file_format, jsonl_chunks, record_batches

#: Lines decoded per step: ~100 bytes a battle, so a chunk is ~20 MB of text at most.
CHUNK_LINES = 200_000
_SCORE = np.array(OUTCOME_SCORE)


class _Vote(msgspec.Struct):
    model_a: str
    model_b: str
    winner: str
    tstamp: float | None = None
    timestamp: str | None = None  # the 140k dump's time: only the validating reader converts it
    weight: int | None = None  # battles this verdict counts as (`Battle.weight`); Elo ignores it


class Tally(msgspec.Struct):
    """What a battles file holds for the leaderboard."""

    counts: PairCounts
    elo: dict[str, float]
    n_battles: int


class _Folder:
    """Folds chunks of votes into pair-count rows and the online Elo."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.models: list[str] = []
        self.table: dict[int, np.ndarray] = {}  # pair key (lo * 2^32 + hi) -> 4 outcome counts
        self.elo = np.zeros(0)
        self.last_t = -np.inf
        self.ordered = True
        self.kept: list[np.ndarray] = []  # compact columns, only once time order breaks
        self.missing_t = False  # a battle without tstamp: Elo goes in file order, as online_elo
        self.n = 0

    def _ids(self, a_names: list[str], b_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Model indices of both sides; a new model is numbered where first seen (A before B)."""
        index, models = self.index, self.models
        get = index.get
        ia, ib = [get(n) for n in a_names], [get(n) for n in b_names]
        if None in ia or None in ib:  # only chunks that bring new models take this loop
            for x, y in zip(a_names, b_names):
                for name in (x, y):
                    if name not in index:
                        index[name] = len(models)
                        models.append(name)
            ia, ib = [get(n) for n in a_names], [get(n) for n in b_names]
        return np.array(ia, dtype=np.int64), np.array(ib, dtype=np.int64)

    def add(self, votes: list[_Vote]) -> bool:
        if not votes:
            return True
        outcome_of = _OUTCOMES
        if any(v.timestamp is not None and v.tstamp is None for v in votes):
            return False
        try:
            o = np.fromiter((outcome_of[v.winner] for v in votes), dtype=np.int64, count=len(votes))
        except KeyError:
            return False
        a, b = self._ids([v.model_a for v in votes], [v.model_b for v in votes])
        if (a == b).any() or any(not v.model_a or not v.model_b for v in votes):
            return False
        times = [v.tstamp for v in votes]
        if not all(t is not None for t in times):
            self.missing_t = True
        t = np.asarray(np.arange(self.n, self.n + len(votes)) if self.missing_t else times, dtype=float)
        self.n += len(votes)
        w = np.fromiter((1 if v.weight is None else v.weight for v in votes), dtype=np.int64, count=len(votes))
        if (w < 1).any():
            return False
        self._count(a, b, o, w)
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

    def _count(self, a: np.ndarray, b: np.ndarray, o: np.ndarray, w: np.ndarray) -> None:
        swap = a > b
        lo, hi = np.where(swap, b, a), np.where(swap, a, b)
        o = np.where(swap & (o == 0), 1, np.where(swap & (o == 1), 0, o))
        keys, inverse = np.unique((lo << 32) | hi, return_inverse=True)
        table = np.bincount(inverse * 4 + o, weights=w if (w != 1).any() else None, minlength=len(keys) * 4).reshape(len(keys), 4).astype(np.int64)
        for key, row in zip(keys.tolist(), table):
            current = self.table.get(key)
            self.table[key] = row if current is None else current + row

    def finish(self) -> Tally:
        counts = PairCounts(self.models)
        if self.table:
            keys = np.fromiter(self.table, dtype=np.int64, count=len(self.table))
            rows = np.stack(list(self.table.values()))
            counts._set_rows(keys >> 32, keys & 0xFFFFFFFF, rows)
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


def tally_file(path: str | Path) -> Tally | None:
    """Pair counts and online Elo of a battles file (JSONL, JSON array, Parquet, CSV), or None
    when a record is malformed (the caller then reads it the validating way)."""
    path = Path(path)
    try:
        folder = _Folder()
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
