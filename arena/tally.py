"""Battles read straight into what the leaderboard needs: pair counts and online Elo.

`arena ratings` needs, of each battle, only who met whom, who won and when. `tally_file`
decodes just those four fields (msgspec, typed, ~4 MB of lines at a time, into untracked
structs) and folds each chunk into integer pair counts and the running Elo, so memory is
O(models² + chunk), not O(battles): ten million battles read in the memory of one chunk.
Per record, only C runs (the decoder, then `map` with `attrgetter` and a dict to number the
models) except the online Elo, an inherently sequential loop: about a third of the read,
skipped with `elo=False` (`arena ratings --no-elo`). `arena.tally_split.start_tally` reads a
file from both ends, in a forked process and the caller, with the same result. Formats: JSONL and JSON
arrays of objects (FastChat's `clean_battle*.json`), both streamed in byte blocks of whole
records (`arena.files`), and Parquet or CSV, FastChat's or the public arena's dumps,
streamed in record batches with pyarrow (only the columns read here are converted).

Online Elo follows the battles' time order (`tstamp`), as FastChat's `compute_elo`: while
the file's timestamps do not go backwards it is updated as the chunks come; if they do, the
compact (model, model, outcome, tstamp) columns — 17 bytes a battle — are kept and sorted
at the end instead (only when Elo is asked for).

Only well-formed input takes this path: FastChat's schema, and in Parquet or CSV also the
public dumps' (the 55k's winner columns, the 140k's `both_bad` and ISO `timestamp`, mapped
by `arena.public_dumps` as the validating reader maps them). The first malformed record
(or one this reader cannot type, or a public dump's time in JSON) makes `tally_file`
return None, and the caller reads the file with `arena.battles.read_battles`, whose
line-numbered errors and `--skip-invalid` apply. The format is decided once, in
`arena.files`, for both readers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from itertools import repeat
from operator import attrgetter, is_not
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import msgspec
import numpy as np

from arena.counts import _OUTCOMES, OUTCOME_SCORE, PairCounts
from arena.elo import replay
from arena.files import file_format, json_array_block, json_array_layout, jsonl_block, record_batches

if TYPE_CHECKING:
    from arena.battles import Battle

#: Lines decoded per step: ~100 bytes a battle, so a block is ~4 MB of text (blocks that fit
#: in cache decode ~1.5x faster than 20 MB ones).
CHUNK_LINES = 40_000
_SCORE = np.array(OUTCOME_SCORE)
#: Battles whose columns `tally_battles` keeps in case the times go backwards (17 bytes
#: each, ~68 MB): beyond them a break in time order means a second read.
KEPT_BATTLES = 4_000_000
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

    def __init__(self, elo: bool = True, keep_limit: int = 0) -> None:
        self.with_elo = elo
        #: While in time order, keep the columns of up to this many battles (17 bytes each),
        #: so that a break in the order needs no second read (`tally_battles`).
        self.keep_limit = keep_limit if elo else 0
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

        def compact() -> np.ndarray:
            return np.rec.fromarrays([a.astype(np.int32), b.astype(np.int32), o.astype(np.int8), t], names="a,b,o,t")  # 17 B a battle

        if self.ordered and (self.missing_t or (t[0] >= self.last_t and (np.diff(t) >= 0).all())):
            self.last_t = t[-1]
            _elo_pass(self.elo, a, b, o)
            if self.keep_limit and self.n <= self.keep_limit:
                self.kept.append(compact())
            elif self.keep_limit:  # too many to keep: a break now means reading again
                self.kept, self.keep_limit = [], 0
        elif self.ordered and not self.keep_limit:
            self.ordered = False  # time order broke: `tally_file` starts over keeping the columns
        else:  # out of order: every battle's columns are kept for the sorted replay
            self.ordered = False
            self.kept.append(compact())

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


#: The columns of a Parquet or CSV battles file that the tally reads: FastChat's, or a public
#: dump's (`arena.public_dumps`: the 55k's three winner columns, the 140k's `both_bad` and
#: ISO `timestamp`); conversations and the rest are never decoded.
_TABLE_COLUMNS = ["model_a", "model_b", "winner", "winner_model_a", "winner_model_b", "winner_tie", "tstamp", "timestamp", "weight"]


def _arrow_batches(path: Path) -> Iterator[list[_Vote]]:
    from arena.public_dumps import dump_seconds, kaggle_winner

    for batch in record_batches(path, columns=_TABLE_COLUMNS):
        data = {name: batch.column(name).to_pylist() for name in _TABLE_COLUMNS if name in batch.schema.names}
        n = batch.num_rows
        if "model_a" not in data or "model_b" not in data:
            raise ValueError("no model_a/model_b columns")  # the validating reader says what is missing
        if "winner" in data:
            winners = ["tie (bothbad)" if w == "both_bad" else w for w in data["winner"]]
        else:  # the 55k's winner columns (a missing one is an error there too)
            flags = [data.get(column, [None] * n) for column in ("winner_model_a", "winner_model_b", "winner_tie")]
            winners = [kaggle_winner(dict(zip(("winner_model_a", "winner_model_b", "winner_tie"), row))) for row in zip(*flags)]
        times = data.get("tstamp", [None] * n)
        if "timestamp" in data:  # where a battle has no tstamp (a Parquet time in tstamp: the validating reader)
            times = [dump_seconds(s) if t is None else t for t, s in zip(times, data["timestamp"])]
        weights = data.get("weight", [None] * n)
        yield [_Vote(a, b, w, t, weight=x) for a, b, w, t, x in zip(data["model_a"], data["model_b"], winners, times, weights)]


def _block_reader(path: Path) -> Callable[[int, int, int, int], list[_Vote]] | None:
    """For a file read in byte blocks (JSON Lines, or a JSON array of objects with a layout,
    `arena.files.json_array_layout`): a function (fd, begin, end, size) -> the votes that
    start in [begin, end). None for other files."""
    kind = file_format(path)
    if kind == "jsonl":
        lines = msgspec.json.Decoder(_Vote)
        return lambda fd, begin, end, size: lines.decode_lines(jsonl_block(fd, begin, end, size))
    layout = json_array_layout(path) if kind == "json" else None
    if layout is None:
        return None
    array = msgspec.json.Decoder(list[_Vote])

    def read(fd: int, begin: int, end: int, size: int) -> list[_Vote]:
        data = json_array_block(fd, begin, end, size, layout)
        return array.decode(data) if data else []

    return read


def _chunks(path: Path, *, blocks: bool = True) -> Iterator[list[_Vote]]:
    kind = file_format(path)
    if kind in ("parquet", "csv"):
        yield from _arrow_batches(path)
        return
    read = _block_reader(path) if blocks else None
    if read is None:  # a JSON array without a layout, or whose blocks did not decode: at once
        yield msgspec.json.Decoder(list[_Vote]).decode(path.read_bytes().removeprefix(b"\xef\xbb\xbf"))
        return
    block, size = CHUNK_LINES * 100, path.stat().st_size
    with path.open("rb") as handle:
        for k in range(-(-size // block)):
            yield read(handle.fileno(), k * block, (k + 1) * block, size)


_FAILED = (msgspec.DecodeError, msgspec.ValidationError, ValueError, KeyError, OSError, RecursionError)


def tally_file(path: str | Path, *, elo: bool = True) -> Tally | None:
    """Pair counts and online Elo of a battles file (JSONL, JSON array, Parquet, CSV), or None
    when a record is malformed (the caller then reads it the validating way). Without `elo`
    the read is ~30% faster and its memory O(models² + chunk) whatever the battles' order."""
    path = Path(path)
    try:
        return _tally(path, elo, blocks=True)
    except msgspec.ValidationError:
        return None
    except msgspec.DecodeError:
        try:  # a JSON array whose blocks do not decode (see `json_array_layout`): decode it at once
            if file_format(path) != "json" or json_array_layout(path) is None:
                return None
            return _tally(path, elo, blocks=False)
        except _FAILED:
            return None
    except _FAILED:
        return None


def _tally(path: Path, elo: bool, *, blocks: bool) -> Tally | None:
    return _fold(lambda: _chunks(path, blocks=blocks), elo)


def _fold(chunks: Callable[[], Iterable[list[_Vote]]], elo: bool, keep_limit: int = 0) -> Tally | None:
    """Fold the chunks `chunks()` gives; once timestamps go backwards (with Elo), ask for
    them again and keep every battle's columns for the sorted replay (unless the columns
    so far were kept: `_Folder.keep_limit`)."""
    folder = _Folder(elo, keep_limit)
    for votes in chunks():
        if not folder.add(votes):
            return None
        if not folder.ordered and not folder.keep_limit:  # timestamps went backwards: read again, keeping every battle's columns
            unordered = _Folder()
            unordered.ordered = False
            for again in chunks():
                if not unordered.add(again):
                    return None
            return unordered.finish()
    return folder.finish()


def tally_battles(batches: Iterable[list[Battle]], *, elo: bool = True) -> Tally:
    """Pair counts and online Elo of validated battles given in batches, e.g. a category's
    (`arena.battle_stream.BattleBatches` with a `keep`): memory O(models² + batch), as
    `tally_file`, plus the compact columns of up to `KEPT_BATTLES` battles, so that times
    that go backwards need no second read of a file the validating reader is slow on;
    past that, `batches` is iterated again when they do (with Elo)."""
    def votes() -> Iterator[list[_Vote]]:
        for batch in batches:
            yield [_Vote(b.model_a, b.model_b, b.winner, b.tstamp, weight=b.weight) for b in batch]

    tally = _fold(votes, elo, KEPT_BATTLES)
    if tally is None:  # validated battles always fold
        raise ValueError("battles the validating reader accepted did not fold")
    return tally
