"""A battles file read batch by batch, validated as `arena.battles.read_battles` validates it.

`BattleBatches(path, keep=...)` yields lists of battles (what `keep` keeps of each) and
holds one batch of the file at a time: JSON Lines in blocks of whole lines, a
pretty-printed JSON array (FastChat's and `arena battles export`'s) in blocks of whole
objects (`arena.files`), Parquet and CSV in record batches. So `arena ratings --category`
on a big file keeps only the category's battles (or only their counts), never the file.

Errors are the whole-file reader's: each malformed record named by line (JSONL), index
(JSON array) or row (Parquet, CSV), collected over the whole file and raised at the end as
one `BattleFormatError` (unless `skip_invalid`; `skipped` lists them either way). A syntax
error that breaks a JSON array stops the read at once, as it does for the whole file. A
compact JSON array, whose `},{` may occur inside a string, and one with no indentation,
whose separator nested objects share, are decoded whole.

The object can be iterated again (each pass reads the file again), which is what a fold
whose order of times broke needs (`arena.tally.tally_battles`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec

from arena.battles import Battle, BattleFile, BattleFormatError, InvalidRecord, _convert_record, _parse_jsonl, parse_battles
from arena.files import file_format, json_array_block, json_array_layout, jsonl_block, record_batches

#: Bytes of JSON read per batch: records with conversations are a few kB, so ~thousands.
BLOCK_BYTES = 8 << 20
#: Parquet or CSV rows per batch (a public dump's rows carry whole conversations).
TABLE_ROWS = 4096


class BattleBatches:
    """The battles of a file in batches; see the module doc. `skipped`: the malformed
    records met so far (this pass); `layout`: how they are named (lines, records, rows);
    `located`: where a battle of the batch just given is in the file."""

    def __init__(self, path: str | Path, *, skip_invalid: bool = False, keep: Callable[[Battle], Battle | None] | None = None,
                 block_bytes: int | None = None) -> None:
        self.path, self.skip_invalid, self.keep, self.block_bytes = Path(path), skip_invalid, keep, block_bytes or BLOCK_BYTES
        self.kind = file_format(self.path)
        self.layout = {"jsonl": "lines", "json": "records"}.get(self.kind, "rows")
        self.skipped: list[InvalidRecord] = []
        self._block: tuple[BattleFile, int, int] = (BattleFile(battles=[]), 0, 0)

    def __iter__(self) -> Iterator[list[Battle]]:
        self.skipped = []
        if self.kind in ("parquet", "csv"):
            blocks = self._table()
        elif self.kind == "jsonl":
            blocks = self._blocks(jsonl_block)
        elif (layout := json_array_layout(self.path)) is not None and _indented(layout.sep):
            blocks = self._blocks(lambda fd, begin, end, size: json_array_block(fd, begin, end, size, layout))
        else:  # a compact array (or one too odd for blocks): at once
            blocks = iter([(parse_battles(self.path.read_bytes(), skip_invalid=True, source=str(self.path)), 0, 0)])
        for block, records, lines in blocks:
            self._block = (block, records, lines)
            self.skipped += [_moved(e, records, lines) for e in block.skipped]
            battles = block.battles if self.keep is None else [kept for kept in map(self.keep, block.battles) if kept is not None]
            if battles:
                yield battles
        if self.skipped and not self.skip_invalid:
            raise BattleFormatError(self.skipped, str(self.path))

    def located(self, k: int, message: str, field: str | None = None) -> InvalidRecord:
        """An `InvalidRecord` for the `k`-th battle of the batch just given (without `keep`),
        at its place in the file, as the reader names its own errors: for a caller's checks."""
        block, records, lines = self._block
        return _moved(block.located(k, message, field), records, lines)

    def _blocks(self, block: Callable[[int, int, int, int], bytes | bytearray]) -> Iterator[tuple[BattleFile, int, int]]:
        """Consecutive byte ranges, each parsed whole (`parse_battles`), with the records
        (and, for JSONL, lines) before it."""
        size, step = self.path.stat().st_size, self.block_bytes
        records = lines = 0
        with self.path.open("rb") as handle:
            for k in range(-(-size // step)):
                data = block(handle.fileno(), k * step, (k + 1) * step, size)
                if not data:
                    continue
                try:
                    read = self._parse(bytes(data), first=k == 0)
                except BattleFormatError as exc:  # the block is not JSON at all: nothing after it is trusted
                    raise BattleFormatError([_moved(e, records, lines) for e in exc.errors[:1]], str(self.path)) from None
                yield read, records, lines
                records += len(read.battles) + len(read.skipped)
                lines += data.count(b"\n") if self.kind == "jsonl" else 0

    def _parse(self, data: bytes, *, first: bool) -> BattleFile:
        """One block, as `parse_battles` parses a file (the first block is the file's start:
        its BOM, and what the file is, are decided there); later JSONL blocks line by line."""
        if first or self.kind != "jsonl":
            return parse_battles(data, skip_invalid=True, source=str(self.path))
        try:
            battles, errors, line_numbers = _parse_jsonl(data)
        except RecursionError:
            raise BattleFormatError([InvalidRecord(index=0, field=None, message="nested too deeply to read", line=1)]) from None
        return BattleFile(battles=battles, skipped=errors, layout="lines", line_numbers=line_numbers)

    def _table(self) -> Iterator[tuple[BattleFile, int, int]]:
        import pyarrow as pa

        records = 0
        try:
            for batch in record_batches(self.path, batch_rows=TABLE_ROWS):
                battles, errors = [], []
                for index, record in enumerate(batch.to_pylist()):
                    battle, error = _convert_record(record, index, row=index + 1)
                    if error is not None:
                        errors.append(error)
                    else:
                        battles.append(battle)
                yield BattleFile(battles=battles, skipped=errors, layout="rows"), records, 0
                records += batch.num_rows
        except pa.ArrowException as exc:
            if isinstance(exc, OSError):
                raise
            kind = "Parquet" if self.kind == "parquet" else "CSV"
            message = f"not a readable {kind} file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            raise BattleFormatError([InvalidRecord(index=records, field=None, message=message, row=records + 1)], str(self.path)) from None


def _indented(sep: bytes) -> bool:
    """Whether an array's element separator (`},` ... `{`) ends in a newline and an
    indentation: then it occurs only between elements, since nested objects are indented
    deeper and a JSON string holds no raw newline. Not so with no indentation
    (`json.dump(indent=0)`: nested objects start lines too), nor in a compact array."""
    tail = sep[:-1].rstrip(b" \t")
    return tail.endswith(b"\n") and len(tail) < len(sep) - 1


def _moved(error: InvalidRecord, records: int, lines: int) -> InvalidRecord:
    """`error` of a block placed in the file: `records` records and `lines` lines before it."""
    line = None if error.line is None else error.line + lines
    row = None if error.row is None else error.row + records
    return msgspec.structs.replace(error, index=error.index + records, line=line, row=row)
