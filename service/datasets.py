"""Dataset files in the formats users bring, normalised to `Conversation`s.

Files: JSONL (one record per line), a JSON array, or Parquet (one record per row, read
with pyarrow); UTF-8 unless `encoding` says otherwise (e.g. GB18030 for files from older
Chinese tools). Record formats (detected per file from the first record, or given):
see `service.dataset_formats` — Alpaca with LLaMA-Factory's `system`/`history`, OpenAI chat
`messages`, ShareGPT `conversations`, XTuner `conversation`, prompt/completion, plain
`User:…</s>` text; LLaMA-Factory's `dataset_info.json` maps other column names.

Every error names where (line and column, row, or record and field) and what was
expected, and nothing is stored unless the whole file parses. Fields no reader uses are
reported as warnings naming them, never dropped in silence.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

import msgspec

from evaluators.bounded_json import SURROGATE_ESCAPE, TooDeep, check_depth, lone_surrogate, long_number
from evaluators.records import Conversation, Message
from service.dataset_formats import FORMATS, READERS, ColumnMapping, FieldLog, detect, parse_plain, read_meta
from service.domain import Split
from service.errors import InvalidInput, TooLarge
from service.parquet_rows import iter_parquet_rows, parquet_rows

__all__ = ["FORMATS", "ParsedDataset", "RecordFile", "parse_dataset", "parse_plain", "read_records", "spool_records",
           "write_records"]


class ParsedDataset(msgspec.Struct):
    records: list[Conversation]
    format: str
    line_numbers: list[int]  # 1-based source line (or Parquet row) of each record
    warnings: list[str] = msgspec.field(default_factory=list)

    @property
    def content_id(self) -> str:
        """Content hash of the normalised records: identical content → identical version id."""
        return content_hash(self.records)


def content_hash(records: list[Conversation]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(msgspec.json.encode(r))
        h.update(b"\n")
    return h.hexdigest()[:16]


class _Reader:
    """Reads records one by one in one format (the first record's, unless given)."""

    def __init__(self, fmt: str | None, mapping: ColumnMapping | None) -> None:
        self.fmt, self.mapping, self.log = fmt, mapping, FieldLog()

    def __call__(self, item: object, where: str) -> Conversation:
        if self.mapping is not None:
            return self.mapping.read(item, where, self.log)  # type: ignore[arg-type]
        kind = self.fmt or detect(item, where)
        self.fmt = kind
        if isinstance(item, str) and kind == "plain":
            return parse_plain(item, where)
        if not isinstance(item, dict):
            raise InvalidInput(f"{where}: expected a JSON object for format {kind!r}, got {type(item).__name__}")
        self.log.note(item, kind, where)
        record = READERS[kind](item, where)
        meta = read_meta(item, where)
        return record.with_meta(**dict(meta)) if meta else record

    @property
    def format(self) -> str:
        return self.mapping.format if self.mapping is not None else (self.fmt or "plain")


def _decode(raw: bytes, filename: str, encoding: str | None) -> str:
    if encoding:
        try:
            return raw.decode(encoding)
        except LookupError:
            raise InvalidInput(f"unknown encoding {encoding!r}; e.g. utf-8, gb18030, gbk, big5") from None
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise InvalidInput(f"{filename}: not {encoding}: byte 0x{raw[exc.start]:02x} at line {line}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        from evaluators.encodings import not_utf8

        raise InvalidInput(not_utf8(filename, raw, exc)) from None


def parse_dataset(raw: bytes, filename: str = "<upload>", fmt: str | None = None, max_bytes: int | None = None, *,
                  encoding: str | None = None, mapping: ColumnMapping | None = None) -> ParsedDataset:
    """Parse and validate a whole dataset file. Raises `InvalidInput` at the first bad record
    (with its line/column, row or field), `TooLarge` over `max_bytes`."""
    if max_bytes is not None and len(raw) > max_bytes:
        raise TooLarge(f"{filename}: {len(raw)} bytes is over the limit of {max_bytes} bytes (ARENA_MAX_UPLOAD_BYTES)")
    if fmt is not None and fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    read = _Reader(fmt, mapping)
    records: list[Conversation] = []
    lines: list[int] = []
    if filename.lower().endswith(".parquet") or raw[:4] == b"PAR1":
        for i, row in enumerate(parquet_rows(raw, filename, max_bytes)):
            records.append(read(row, f"{filename}: row {i + 1}"))
            lines.append(i + 1)
    else:
        text = _decode(raw, filename, encoding).lstrip("\ufeff")
        if not text.strip():
            raise InvalidInput(f"{filename}: the file is empty")
        try:
            check_depth(text)
        except TooDeep as exc:
            raise InvalidInput(f"{filename}: {exc}") from None
        if text.lstrip().startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{filename}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
            except ValueError:
                raise InvalidInput(_long_number(text, filename)) from None
            line_of = _array_item_lines(text, len(items))
            escapes = SURROGATE_ESCAPE.search(text) is not None
            for i, item in enumerate(items):
                where = f"{filename}: record {i} (line {line_of[i]})"
                if escapes:
                    _check_unicode(item, where)
                records.append(read(item, where))
                lines.append(line_of[i])
        else:
            for n, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    records.append(_jsonl_record(line, n, filename, read))
                    lines.append(n)
    if not records:
        raise InvalidInput(f"{filename}: no records")
    return ParsedDataset(records=records, format=read.format, line_numbers=lines, warnings=read.log.warnings())


def _jsonl_record(line: str, n: int, filename: str, read: _Reader) -> Conversation:
    """Line `n` of a JSONL file as a record (one-line errors naming the line)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{filename}: invalid JSON at line {n}, column {exc.colno}: {exc.msg}") from None
    except ValueError:
        raise InvalidInput(_long_number(line, filename, n)) from None
    where = f"{filename}: line {n}"
    if not isinstance(obj, dict):
        raise InvalidInput(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if SURROGATE_ESCAPE.search(line):
        _check_unicode(obj, where)
    return read(obj, where)


def _check_unicode(value: object, where: str) -> None:
    """`InvalidInput` when decoded `value` holds a lone UTF-16 surrogate (`bounded_json.lone_surrogate`)."""
    problem = lone_surrogate(value)
    if problem:
        raise InvalidInput(f"{where}: {problem}")


def _long_number(text: str, filename: str, line: int = 1) -> str:
    return f"{filename}: {long_number(text, line)}"


def spool_records(path: Path, out: Path, fmt: str | None = None, *, encoding: str | None = None,
                  mapping: ColumnMapping | None = None) -> tuple[int, str]:
    """Read a dataset file record by record into `out` as normalised rows (what
    `write_records` writes, readable by `RecordFile`); return (records, format).

    JSONL is read a line at a time and Parquet a batch of rows at a time, so memory stays
    flat in the file's size; a JSON array is parsed whole (`parse_dataset`). The same
    one-line errors as `parse_dataset`.
    """
    filename = path.name
    if fmt is not None and fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read ({exc.strerror})") from None
    count = 0
    with open(out, "wb") as sink:
        def write(record: Conversation, line: int) -> None:
            row = {"messages": record.messages, "line": line}
            if record.meta:
                row["meta"] = record.metadata
            sink.write(msgspec.json.encode(row) + b"\n")

        read = _Reader(fmt, mapping)
        if filename.lower().endswith(".parquet") or head[:4] == b"PAR1":
            for n, row in enumerate(iter_parquet_rows(lambda: str(path), filename), start=1):
                write(read(row, f"{filename}: row {n}"), n)
                count += 1
            if not count:
                raise InvalidInput(f"{filename}: no records")
            return count, read.format
        if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"[":
            parsed = parse_dataset(path.read_bytes(), filename, fmt, encoding=encoding, mapping=mapping)
            for record, line in zip(parsed.records, parsed.line_numbers):
                write(record, line)
            return len(parsed.records), parsed.format
        with open(path, "rb") as f:
            for n, raw in enumerate(f, start=1):
                try:
                    line = raw.decode(encoding or "utf-8")
                except LookupError:
                    raise InvalidInput(f"unknown encoding {encoding!r}; e.g. utf-8, gb18030, gbk, big5") from None
                except UnicodeDecodeError as exc:
                    if encoding:
                        raise InvalidInput(f"{filename}: not {encoding}: byte 0x{raw[exc.start]:02x} at line {n}") from None
                    from evaluators.encodings import not_utf8

                    raise InvalidInput(not_utf8(filename, raw, exc, line=n)) from None
                line = (line.lstrip("\ufeff") if n == 1 else line).rstrip("\r\n")  # as parse_dataset's lines
                if not line.strip():
                    continue
                try:
                    check_depth(line)
                except TooDeep as exc:
                    raise InvalidInput(f"{filename}: line {n}: {exc}") from None
                write(_jsonl_record(line, n, filename, read), n)
                count += 1
    if not count:
        raise InvalidInput(f"{filename}: no records")
    return count, read.format


class RecordFile:
    """A normalised records file (`write_records`' rows) read by index, a block at a time:
    only each row's byte span is kept in memory (16 bytes a record), never the records.

    `keep(row)` (0-based rows) leaves rows out, e.g. a version's held-out split; indices
    count the rows kept. `read(start, stop)` is what `evaluators.datachecks.check_source` reads.
    """

    def __init__(self, path: Path, keep: Callable[[int], bool] | None = None) -> None:
        self.path = path
        starts, ends = [], []
        with open(path, "rb") as f:
            offset = 0
            for row, raw in enumerate(f):
                if keep is None or keep(row):
                    starts.append(offset)
                    ends.append(offset + len(raw))
                offset += len(raw)
        import numpy as np

        self.starts, self.ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    def read(self, start: int, stop: int) -> tuple[list[Conversation], list[int]]:
        """Records [start, stop) and their source lines."""
        if stop <= start:
            return [], []
        base = int(self.starts[start])
        with open(self.path, "rb") as f:
            f.seek(base)
            buf = f.read(int(self.ends[stop - 1]) - base)
        records, lines = [], []
        for a, b in zip((self.starts[start:stop] - base).tolist(), (self.ends[start:stop] - base).tolist()):
            record, line = _decode_row(buf[a:b])
            records.append(record)
            lines.append(line)
        return records, lines


def _decode_row(raw: bytes) -> tuple[Conversation, int]:
    obj = msgspec.json.decode(raw)
    record = Conversation(messages=tuple(Message(m["role"], m["content"]) for m in obj["messages"]),
                          meta=tuple(sorted((obj.get("meta") or {}).items())))
    return record, obj.get("line", 0)


def _array_item_lines(text: str, n: int) -> list[int]:
    """Best-effort 1-based line of each top-level array item (for error messages)."""
    decoder = json.JSONDecoder()
    out, pos = [], text.index("[") + 1
    for _ in range(n):
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        out.append(text.count("\n", 0, pos) + 1)
        try:
            _, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
    return out + [out[-1] if out else 1] * (n - len(out))


def records_path(data_dir: Path, version_id: str) -> Path:
    """Where a version's normalised records live (ids are hex hashes, never user strings)."""
    if not re.fullmatch(r"[0-9a-f]{16}", version_id):
        raise InvalidInput(f"bad dataset version id {version_id!r}")
    return data_dir / "datasets" / f"{version_id}.jsonl"


def write_records(data_dir: Path, parsed: ParsedDataset) -> Path:
    path = records_path(data_dir, parsed.content_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for rec, line in zip(parsed.records, parsed.line_numbers):
                row = {"messages": rec.messages, "line": line}
                if rec.meta:
                    row["meta"] = rec.metadata
                f.write(msgspec.json.encode(row))
                f.write(b"\n")
        tmp.replace(path)
    return path


def read_records(data_dir: Path, version_id: str) -> tuple[list[Conversation], list[int]]:
    """The normalised records of a version and their source line numbers."""
    records, lines = [], []
    with open(records_path(data_dir, version_id), "rb") as f:
        for raw in f:
            record, line = _decode_row(raw)
            records.append(record)
            lines.append(line)
    return records, lines


def make_split(n: int, test_fraction: float, seed: int) -> Split:
    """A deterministic held-out split: the same (n, fraction, seed) always gives the same indices."""
    if not 0.0 < test_fraction < 1.0:
        raise InvalidInput(f"test fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    k = max(1, round(n * test_fraction))
    if k >= n:
        raise InvalidInput(f"a {test_fraction} split of {n} records leaves no training records")
    indices = sorted(random.Random(seed).sample(range(n), k))
    return Split(test_fraction=test_fraction, seed=seed, test_indices=indices)


async def add_dataset(store, data_dir: Path, raw: bytes, *, name: str, filename: str, fmt: str | None = None,
                      max_bytes: int | None = None, parent: str | None = None, note: str = "",
                      encoding: str | None = None, mapping: ColumnMapping | None = None):
    """Parse, store the records file, and register a version. Returns (DatasetVersion, created).

    Nothing is written unless the whole file is valid. Identical content under the same name
    returns the existing version (created=False). Parsing and writing run in a worker
    thread: a large upload never stalls the event loop (votes, heartbeats, other requests).
    """
    import time

    import anyio.to_thread

    from service.domain import DatasetVersion, check_name

    check_name(name, "dataset name")
    parsed = await anyio.to_thread.run_sync(
        lambda: parse_dataset(raw, filename, fmt, max_bytes, encoding=encoding, mapping=mapping))
    parent_id = None
    if parent:
        parent_id = (await store.resolve_dataset(parent)).id
    await anyio.to_thread.run_sync(write_records, data_dir, parsed)
    dsv = DatasetVersion(
        id=parsed.content_id, name=name, version=0, source_filename=Path(filename).name[:200], format=parsed.format,
        record_count=len(parsed.records), created_at=time.time(), parent=parent_id, note=note, warnings=parsed.warnings,
    )
    return await store.add_dataset_version(dsv)
