"""Parquet rows read with a bound on what they decode to.

Parquet is compressed, and dictionary- and run-length-encoded: a file of a few kilobytes
can hold one long string repeated in a million rows, gigabytes once read. The upload limit
(`ARENA_MAX_UPLOAD_BYTES`) bounds the file's bytes; here the same limit bounds what its
rows decode to, so a compressed file holds no more than a JSONL file of that size could.
The text columns are read as dictionaries (a repeated value is held once) and each batch
of rows is counted from its Arrow arrays before it becomes Python objects: a file over the
limit is refused before it is materialised.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from service.errors import InvalidInput, TooLarge

#: Rows read and counted at a time.
BATCH_ROWS = 1024


def parquet_rows(raw: bytes, filename: str, max_bytes: int | None = None) -> list[dict]:
    """The rows of a Parquet file as dicts. Raises `InvalidInput` for a file pyarrow cannot
    read, `TooLarge` when its rows decode to more than `max_bytes` (None: no bound), counting
    each value's bytes and one more per value, as a JSON line would hold them."""
    return list(iter_parquet_rows(lambda: io.BytesIO(raw), filename, max_bytes))


def iter_parquet_rows(open_source, filename: str, max_bytes: int | None = None) -> Iterator[dict]:
    """`parquet_rows` one batch of rows at a time, from `open_source()` (a path or a new
    file object): a local file of any size is read in memory bounded by a batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.ParquetFile(open_source()).schema
        text_columns = [c.path for c in schema if c.physical_type == "BYTE_ARRAY"]
        pf = pq.ParquetFile(open_source(), read_dictionary=text_columns)
        meta = pf.metadata
        if max_bytes is not None:
            declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
            if declared > max_bytes or meta.num_rows > max_bytes:
                raise _too_large(filename, max_bytes)
        decoded = 0
        for batch in pf.iter_batches(batch_size=BATCH_ROWS):
            if max_bytes is not None:
                decoded += sum(decoded_bytes(column) for column in batch.columns)
                if decoded > max_bytes:
                    raise _too_large(filename, max_bytes)
            yield from batch.to_pylist()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidInput(f"{filename}: not a readable Parquet file ({str(exc)[:200]})") from None


def _too_large(filename: str, max_bytes: int) -> TooLarge:
    return TooLarge(f"{filename}: its records decode to more than {max_bytes} bytes, the limit for a dataset file "
                    "(ARENA_MAX_UPLOAD_BYTES): a compressed file may hold no more than an uncompressed one")


def decoded_bytes(array) -> int:
    """What `array` holds once decoded: each value's bytes plus one (a dictionary's values
    counted once per row that uses them), through lists, maps and structs."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_dictionary(kind):
        values = array.dictionary
        if _is_text(kind.value_type):
            sizes = pc.add(pc.binary_length(values), 1)
        else:
            sizes = pa.array([max(1, values.nbytes // max(1, len(values)))] * len(values), pa.int64())
        return int(pc.sum(pc.take(sizes, array.indices)).as_py() or 0)
    if pa.types.is_map(kind):
        return decoded_bytes(array.keys) + decoded_bytes(array.items) + len(array)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return decoded_bytes(array.flatten()) + len(array)
    if pa.types.is_struct(kind):
        return sum(decoded_bytes(field) for field in array.flatten()) + len(array)
    return array.nbytes + len(array)


def _is_text(kind) -> bool:
    import pyarrow as pa

    return (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind))
