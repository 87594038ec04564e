"""Battles read straight into what the leaderboard needs: pair counts and online Elo.

`arena ratings` needs, of each battle, only who met whom, who won and when. `tally_file`
decodes just those four fields (msgspec, typed, ~4 MB of lines at a time, into untracked
structs) and folds each chunk into integer pair counts and the running Elo, so memory is
O(models² + chunk), not O(battles): ten million battles read in the memory of one chunk.
Per record, only C runs (the decoder, then `map` with `attrgetter` and a dict to number the
models) except the online Elo, an inherently sequential loop: about a third of the read,
skipped with `elo=False` (`arena ratings --no-elo`). `start_tally` reads a JSON Lines file
from both ends, in a forked process and the caller, with the same result. Formats: JSONL (streamed),
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

import math
from collections.abc import Callable, Iterator
from itertools import repeat
from operator import attrgetter, is_not
from pathlib import Path
from typing import Literal, NamedTuple

import msgspec
import numpy as np

from arena.counts import _OUTCOMES, OUTCOME_SCORE, PairCounts
from arena.elo import replay
from arena.files import file_format, jsonl_block, jsonl_chunks, record_batches

#: Lines decoded per step: ~100 bytes a battle, so a block is ~4 MB of text (blocks that fit
#: in cache decode ~1.5x faster than 20 MB ones).
CHUNK_LINES = 40_000
#: Blocks of a split read (`start_tally`) the calling process keeps as columns at most
#: (~1.3 MB each): beyond them the forked reader reads on alone, so memory stays bounded.
BACK_BLOCKS = 32
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


class _Columns(NamedTuple):
    """A chunk's battles as columns: model ids, outcome ids, times (None: some battle has
    none) and weights (None: all 1)."""

    a: np.ndarray
    b: np.ndarray
    o: np.ndarray
    t: np.ndarray | None
    w: np.ndarray | None


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

    def columns(self, votes: list[_Vote]) -> _Columns | None:
        """The chunk as numbered columns, or None when a record needs the validating reader."""
        n = len(votes)
        if any(map(is_not, map(_timestamp, votes), repeat(None))) and None in map(_tstamp, votes):
            return None
        o = np.fromiter(map(_OUTCOMES.__getitem__, map(_winner, votes)), dtype=np.int64, count=n)
        try:
            a, b = self._ids(votes, _model_a), self._ids(votes, _model_b)
        except KeyError:  # only chunks that bring new models take this loop
            self._learn(votes)
            a, b = self._ids(votes, _model_a), self._ids(votes, _model_b)
        if (a == b).any() or "" in self.index or None in self.index:
            return None
        try:
            t = np.fromiter(map(_tstamp, votes), dtype=float, count=n)
        except TypeError:  # a battle without tstamp (numpy versions differ: None raises or reads as NaN)
            t = np.full(n, np.nan)
        if not np.isfinite(t).all():
            times = list(map(_tstamp, votes))
            if any(x is not None and not (isinstance(x, (int, float)) and math.isfinite(x)) for x in times):
                return None  # a time that is not a finite number: the validating reader says where
            t = None  # a battle without tstamp: Elo goes in file order from here on
        w = None
        if any(map(_weight, votes)) or 0 in map(_weight, votes):
            w = np.fromiter((1 if x is None else x for x in map(_weight, votes)), dtype=np.int64, count=n)
            if (w < 1).any():
                return None
        return _Columns(a, b, o, t, w)

    def add(self, votes: list[_Vote]) -> bool:
        """Fold a chunk in; False when a record needs the validating reader."""
        if not votes:
            return True
        columns = self.columns(votes)
        if columns is None:
            return False
        self.fold(columns)
        return True

    def adopt(self, other: _Folder, columns: _Columns) -> _Columns:
        """`columns` numbered by `other` (which read a later part of the file), renumbered
        as this folder numbers models: new ones in the order the chunk first names them."""
        pairs = np.column_stack([columns.a, columns.b]).ravel()
        ids, first = np.unique(pairs, return_index=True)
        for local in ids[np.argsort(first)].tolist():
            name = other.models[local]
            if name not in self.index:
                self.index[name] = len(self.models)
                self.models.append(name)
        lut = np.array([self.index.get(name, -1) for name in other.models], dtype=np.int64)  # -1: not in this chunk
        return columns._replace(a=lut[columns.a], b=lut[columns.b])

    def fold(self, columns: _Columns) -> None:
        """Count the chunk's votes and run its Elo (or keep its columns: see `tally_file`)."""
        a, b, o, t, w = columns
        n = len(a)
        if t is None:
            self.missing_t = True
        if self.missing_t:
            t = np.arange(self.n, self.n + n, dtype=float)
        self.n += n
        self._count(a, b, o, w)
        if not self.with_elo:
            return
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


_FAILED = (msgspec.DecodeError, msgspec.ValidationError, ValueError, KeyError, OSError, RecursionError)


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
    except _FAILED:
        return None


def start_tally(path: str | Path, *, elo: bool = True) -> Callable[[], Tally | None]:
    """Start `tally_file(path, elo=elo)` beside the caller and return a function that gives
    its result: the caller works meanwhile (the CLI imports the fits).

    With a second CPU the file is read in a forked process. A JSON Lines file bigger than
    two blocks is read from both ends: the child folds blocks (~4 MB of lines) from the
    front; the caller, once it asks for the result, decodes blocks from the back into
    columns (`_Folder.columns`, at most `BACK_BLOCKS`) until the two meet, then folds them
    after the child's, in file order and renumbered as the child numbered models
    (`_Folder.adopt`). So the result is exactly `tally_file`'s, and the caller's import
    time is not added to the read. A file whose times go backwards (with Elo) is read
    again by `tally_file`, which keeps every battle's columns for the sorted replay."""
    from evaluators._parallel import in_background, worker_count

    path = Path(path)
    if worker_count(None) < 2:
        return lambda: tally_file(path, elo=elo)
    block = CHUNK_LINES * 100
    try:
        size = path.stat().st_size
        split = size > 2 * block and file_format(path) == "jsonl"
    except OSError:
        split = False
    if not split:
        return in_background(lambda: tally_file(path, elo=elo))
    import multiprocessing

    context = multiprocessing.get_context("fork")
    # Blocks [ends[0], ends[1]) are not taken yet: the child takes from the front, the caller from the back.
    ends, lock = context.RawArray("q", [0, -(-size // block)]), context.Lock()
    front = in_background(lambda: _read_front(path, elo, block, size, ends, lock))

    def result() -> Tally | None:
        with front:  # an error here (or ^C) kills the forked reader
            back = _read_back(path, block, size, ends, lock)
        folder = front()
        if folder is None or back is None:
            return None
        numbering, chunks = back
        for columns in chunks:
            if not folder.ordered:
                break
            folder.fold(folder.adopt(numbering, columns))
        return folder.finish() if folder.ordered else tally_file(path, elo=elo)

    return result


def _claimed(path: Path, block: int, size: int, ends, lock, *, front: bool) -> Iterator[tuple[int, list[_Vote]]]:
    """(k, its votes) for each block this process claims from the untaken ones [ends[0],
    ends[1]): from the front or from the back, one at a time, until none is left (a block
    is claimed only when the next one is asked for)."""
    decoder = msgspec.json.Decoder(_Vote)
    with path.open("rb") as handle:
        while True:
            with lock:
                if ends[0] >= ends[1]:
                    return
                if front:
                    k = ends[0]
                    ends[0] = k + 1
                else:
                    k = ends[1] = ends[1] - 1
            yield k, decoder.decode_lines(jsonl_block(handle.fileno(), k * block, (k + 1) * block, size))


def _read_front(path: Path, elo: bool, block: int, size: int, ends, lock) -> _Folder | None:
    """The forked reader: folds blocks from the front until it meets the caller's."""
    folder = _Folder(elo)
    try:
        for _, votes in _claimed(path, block, size, ends, lock, front=True):
            if not folder.add(votes):
                return None
            if not folder.ordered:  # time order broke: `start_tally` reads again
                break
    except _FAILED:
        return None
    return folder


def _read_back(path: Path, block: int, size: int, ends, lock) -> tuple[_Folder, list[_Columns]] | None:
    """The caller's share: blocks from the back, as columns numbered by a folder of its
    own, returned in file order (None: a record needs the validating reader)."""
    numbering = _Folder(elo=False)
    chunks: dict[int, _Columns] = {}
    try:
        for k, votes in _claimed(path, block, size, ends, lock, front=False):
            if votes:
                columns = numbering.columns(votes)
                if columns is None:
                    return None
                chunks[k] = columns
            if len(chunks) >= BACK_BLOCKS:
                break
    except _FAILED:
        return None
    return numbering, [chunks[k] for k in sorted(chunks)]
