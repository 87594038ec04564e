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
from typing import Literal, NamedTuple

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


def record_batches(path: str | Path, columns: list[str] | None = None, *, batch_rows: int = BATCH_ROWS) -> Iterator["pyarrow.RecordBatch"]:  # noqa: F821
    """The rows of a Parquet or CSV file as pyarrow record batches, streamed (about
    `batch_rows` rows each for Parquet, one CSV block each for CSV). `columns` limits the
    read to those present. Raises `pyarrow.ArrowInvalid` (a `ValueError`) or
    `OSError` on a file that is not what its suffix says."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    if file_format(path) == "parquet":
        # Read as needed, 1 MB at a time, not a row group's column chunks at once: a dump's
        # conversations make a row group ~100 MB (its peak fell from 520 to 390 MB, as fast).
        handle = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
        present = None if columns is None else [c for c in columns if c in handle.schema_arrow.names]
        yield from handle.iter_batches(batch_size=batch_rows, columns=present)
        return
    options = {"read_options": pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
               "parse_options": pacsv.ParseOptions(newlines_in_values=True)}
    if columns is not None:  # the header's names first, then only those columns are converted
        present = [c for c in columns if c in pacsv.open_csv(path, **options).schema.names]
        options["convert_options"] = pacsv.ConvertOptions(include_columns=present)
    yield from pacsv.open_csv(path, **options)


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


class ArrayLayout(NamedTuple):
    """Where a JSON array's objects are: the first one's `{` at byte `start`, and `sep`, the
    bytes between two of them (`}`, the comma and its whitespace, `{`)."""

    start: int
    sep: bytes


def json_array_layout(path: str | Path) -> ArrayLayout | None:
    """The layout of a JSON array of objects, from its first two elements, or None (not an
    array of objects, fewer than two, or a first object over 1 MB).

    Blocks of the array (`json_array_block`) start where `sep` does. Pretty-printed arrays
    (`json.dump(..., indent=N)`, FastChat's and `arena battles export`'s) separate their
    elements by a newline and an indentation that nested objects do not have, and a JSON
    string holds no raw newline, so there `sep` is found only between elements. In a
    compact array `},{` may also occur inside a string or a nested list, and with no
    indentation (`indent=0`) `},\n{` between nested objects too: a block then cuts an
    object in two, its decoding fails, and the tally decodes the whole file instead
    (`arena.battle_stream` reads such arrays whole from the start)."""
    with Path(path).open("rb") as handle:
        head = handle.read(1 << 20)
    at = 3 if head.startswith(b"\xef\xbb\xbf") else 0
    at = _skip_space(head, at)
    if head[at : at + 1] != b"[":
        return None
    start = _skip_space(head, at + 1)
    if head[start : start + 1] != b"{":
        return None
    close = _object_end(head, start)
    if close is None:
        return None
    comma = _skip_space(head, close + 1)
    if head[comma : comma + 1] != b",":
        return None
    second = _skip_space(head, comma + 1)
    if head[second : second + 1] != b"{":
        return None
    return ArrayLayout(start, head[close : second + 1])


def _skip_space(data: bytes, at: int) -> int:
    while at < len(data) and data[at] in b" \t\r\n":
        at += 1
    return at


def _object_end(data: bytes, start: int) -> int | None:
    """The index of the `}` that closes the object opening at `start` (None: not in `data`)."""
    depth, in_string, escaped = 0, False, False
    for k in range(start, len(data)):
        c = data[k]
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in b"{[":
            depth += 1
        elif c in b"}]":
            depth -= 1
            if depth == 0:
                return k
    return None


def json_array_block(fd: int, begin: int, end: int, size: int, layout: ArrayLayout) -> bytes | bytearray:
    """The objects of a JSON array (open as `fd`, `size` bytes long, laid out as `layout`)
    that start at a byte in [begin, end), as a JSON array of their own (b"" when none).
    Like `jsonl_block`: consecutive ranges give each object once, in any order."""
    sep = layout.sep

    def element_start(at: int) -> int:  # the first object start at or after `at`
        if at <= layout.start:
            return layout.start
        pos = at - (len(sep) - 1)  # a separator whose `{` is at or after `at`
        while pos < size:
            piece = os.pread(fd, (1 << 16) + len(sep), pos)
            found = piece.find(sep)
            if found >= 0:
                return pos + found + len(sep) - 1
            if len(piece) < len(sep):
                break
            pos += len(piece) - len(sep) + 1
        return size

    first, stop = element_start(begin), element_start(min(end, size))
    if stop <= first:
        return b""
    # Up to the next object's separator, less its comma and whitespace (keeping its `}`);
    # the last block runs to the array's own `]`. Read in place, between brackets.
    length = stop - first - (len(sep) - 2 if stop < size else 0)
    data = bytearray(length + 2)
    data[0], data[-1] = 0x5B, 0x5D  # [ ]
    got = os.preadv(fd, [memoryview(data)[1:-1]], first)
    if got != length:
        raise OSError(f"{length - got} bytes fewer than expected: the file changed while it was read")
    if stop == size:
        del data[-1]
    return data
