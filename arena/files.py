"""Battle files on disk: which format a file is in, and its rows in batches.

One place decides the format, so the streaming tally (`arena.tally`) and the validating
reader (`arena.battles.read_battles`) always agree on what a file is: `.parquet` and `.csv`
by suffix (the public arena dumps), anything else by its first character (`[` a JSON
array, else JSON Lines).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

FileFormat = Literal["parquet", "csv", "json", "jsonl"]

#: Rows per Arrow batch.
BATCH_ROWS = 200_000
#: CSV block size: a block must hold whole rows, and the public dumps' rows carry whole
#: conversations (the 55k CSV's longest row is a few hundred kB).
_CSV_BLOCK_BYTES = 16 << 20


def file_format(path: str | Path) -> FileFormat:
    """The format of a battles file: by suffix for Parquet and CSV, else sniffed from the
    first non-blank character (`[`: a JSON array; anything else: JSON Lines). Raises
    `OSError` when the file cannot be read."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".csv"):
        return suffix[1:]  # type: ignore[return-value]
    with path.open("rb") as handle:
        head = handle.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip()
    return "json" if head[:1] == b"[" else "jsonl"


def record_batches(path: str | Path, columns: list[str] | None = None) -> Iterator["pyarrow.RecordBatch"]:  # noqa: F821
    """The rows of a Parquet or CSV file as pyarrow record batches, streamed (about
    `BATCH_ROWS` rows each for Parquet, one CSV block each for CSV). `columns` limits a
    Parquet read to those present. Raises `pyarrow.ArrowInvalid` (a `ValueError`) or
    `OSError` on a file that is not what its suffix says."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    if file_format(path) == "parquet":
        handle = pq.ParquetFile(path)
        present = None if columns is None else [c for c in columns if c in handle.schema_arrow.names]
        yield from handle.iter_batches(batch_size=BATCH_ROWS, columns=present)
        return
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
    )
    yield from reader


def jsonl_block(fd: int, begin: int, end: int, size: int) -> bytes:
    """The lines of a JSON Lines file (open as `fd`, `size` bytes long) that start at a byte
    in [begin, end): consecutive ranges give each line exactly once, so a file can be read
    in blocks in any order, by several processes."""

    def line_start(at: int) -> int:  # the first line start at or after `at`
        if at <= 0:
            return 0
        at -= 1  # a line starts at `at` when the byte before it ends a line
        while at < size:
            piece = os.pread(fd, 1 << 16, at)
            if not piece:
                break
            cut = piece.find(b"\n")
            if cut >= 0:
                return at + cut + 1
            at += len(piece)
        return size

    first, stop = line_start(begin), line_start(min(end, size))
    return os.pread(fd, stop - first, first) if stop > first else b""


def jsonl_chunks(path: str | Path, block_bytes: int) -> Iterator[bytes]:
    """A JSON Lines file in blocks of whole lines, about `block_bytes` each."""
    with Path(path).open("rb") as handle:
        rest = b""
        while True:
            block = handle.read(block_bytes)
            if not block:
                if rest.strip():
                    yield rest
                return
            block = rest + block
            cut = block.rfind(b"\n") + 1
            rest = block[cut:]
            if cut:
                yield block[:cut]
