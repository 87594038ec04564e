"""Battles streamed into counts and Elo give exactly what the validating reader gives, in
every format `arena ratings` reads; malformed files are left to the validating reader."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from arena import tally as tally_module
from arena import tally_split
from arena.battles import Battle, write_battles
from arena.counts import PairCounts
from arena.elo import online_elo
from arena.tally import tally_file


def battles(n: int = 3000, seed: int = 0, shuffle_time: bool = False, no_time: bool = False) -> list[Battle]:
    rng = np.random.default_rng(seed)
    names = [f"m{i}" for i in range(7)]
    outcomes = ["model_a", "model_b", "tie", "tie (bothbad)"]
    times = rng.permutation(n) if shuffle_time else np.arange(n)
    return [Battle(model_a=names[a], model_b=names[(a + 1 + int(rng.integers(0, 6))) % 7], winner=outcomes[int(rng.integers(0, 4))],
                   tstamp=None if no_time else 1.7e9 + float(times[k]))
            for k, a in enumerate(rng.integers(0, 7, n))]


def expected(records):
    return PairCounts.from_battles(records), online_elo(records)


@pytest.mark.parametrize("kind", ["jsonl", "json", "unordered", "untimed"])
def test_stream_equals_the_validating_reader(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(tally_module, "CHUNK_LINES", 500)  # several chunks, so order breaks across them
    records = battles(shuffle_time=kind == "unordered", no_time=kind == "untimed")
    path = tmp_path / ("b.json" if kind == "json" else "b.jsonl")
    write_battles(path, records)
    got = tally_file(path)
    counts, elo = expected(records)
    assert got.n_battles == len(records) and got.counts == counts
    assert got.elo == pytest.approx(elo, abs=1e-9)


def test_public_arena_dumps_parquet_and_csv(tmp_path):
    records = battles(800)
    columns = {"model_a": [b.model_a for b in records], "model_b": [b.model_b for b in records],
               "winner": [b.winner for b in records], "tstamp": [b.tstamp for b in records],
               "judge": ["anon"] * len(records)}
    pq.write_table(pa.table(columns), tmp_path / "clean_battle.parquet")
    pacsv.write_csv(pa.table(columns), tmp_path / "clean_battle.csv")
    counts, elo = expected(records)
    for name in ("clean_battle.parquet", "clean_battle.csv"):
        got = tally_file(tmp_path / name)
        assert got.counts == counts and got.elo == pytest.approx(elo, abs=1e-9), name


def test_malformed_files_go_to_the_validating_reader(tmp_path):
    path = tmp_path / "bad.jsonl"
    write_battles(path, battles(10))
    path.write_text(path.read_text() + '{"model_a": "x", "model_b": "x", "winner": "model_a"}\n')
    assert tally_file(path) is None  # a model against itself
    path.write_text('{"model_a": "x", "model_b": "y", "winner": "left"}\n')
    assert tally_file(path) is None
    path.write_text("[" * 100_000)
    assert tally_file(path) is None


def test_without_elo_the_counts_are_the_same_and_nothing_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(tally_module, "CHUNK_LINES", 500)
    records = battles(shuffle_time=True)  # out of time order: with Elo, every battle's columns would be kept
    path = tmp_path / "b.jsonl"
    write_battles(path, records)
    kept = []
    monkeypatch.setattr(tally_module._Folder, "finish", lambda self, real=tally_module._Folder.finish: kept.append(self.kept) or real(self))
    got = tally_file(path, elo=False)
    assert got.counts == PairCounts.from_battles(records) and got.elo is None
    assert kept == [[]]  # read once, nothing per battle kept


def test_battles_without_tstamp_among_timed_ones_give_file_order_elo(tmp_path, monkeypatch):
    monkeypatch.setattr(tally_module, "CHUNK_LINES", 7)
    records = battles(400)
    records[230:230] = [Battle(model_a="late", model_b="m0", winner="tie"), Battle(model_a="m1", model_b="later", winner="model_b")]
    path = tmp_path / "b.jsonl"
    write_battles(path, records)
    got = tally_file(path)
    assert got.counts == PairCounts.from_battles(records)
    assert got.elo == pytest.approx(online_elo(records), abs=1e-9)  # not sorted with NaN for the missing times


def test_one_pass_numbers_models_as_first_seen(tmp_path):
    records = battles(50)
    path = tmp_path / "b.jsonl"
    write_battles(path, records)
    assert tally_file(path).counts.models == PairCounts.from_battles(records).models


def test_a_dump_time_without_tstamp_goes_to_the_validating_reader(tmp_path):
    path = tmp_path / "b.jsonl"
    write_battles(path, battles(10))
    path.write_text(path.read_text() + '{"model_a": "m1", "model_b": "m2", "winner": "tie", "timestamp": ""}\n')
    assert tally_file(path) is None  # only the validating reader converts (or rejects) `timestamp`


@pytest.mark.parametrize("number", ["nan", "Infinity", "-Infinity"])
def test_a_time_that_is_not_finite_goes_to_the_validating_reader(tmp_path, number):
    path = tmp_path / "b.jsonl"
    write_battles(path, battles(10, no_time=True))  # also among battles without tstamp
    path.write_text(path.read_text() + f'{{"model_a": "m1", "model_b": "m2", "winner": "tie", "tstamp": {number}}}\n')
    assert tally_file(path) is None  # `read_battles` rejects it with its line number


def _split_file(tmp_path, records) -> Path:
    path = tmp_path / "b.jsonl"
    write_battles(path, records)
    return path


def _slow_front(monkeypatch, seconds: float) -> None:
    """The forked reader starts late, so the caller reads from the back first."""
    real = tally_split._read_front
    monkeypatch.setattr(tally_split, "_read_front", lambda *args: time.sleep(seconds) or real(*args))


@pytest.mark.parametrize("kind", ["timed", "unordered", "untimed", "untimed_later", "new_model_at_the_end"])
@pytest.mark.parametrize("caller_first", [False, True])
@pytest.mark.parametrize("elo", [True, False])
def test_reading_from_both_ends_gives_the_one_pass_result(tmp_path, monkeypatch, kind, caller_first, elo):
    monkeypatch.setattr(tally_module, "CHUNK_LINES", 300)  # ~30 kB blocks: a dozen of them
    monkeypatch.setattr(tally_split, "BACK_BLOCKS", 5)  # the caller stops after 5; the child reads the rest
    monkeypatch.setattr("evaluators._parallel.worker_count", lambda workers: 2)
    records = battles(4000, shuffle_time=kind == "unordered", no_time=kind == "untimed")
    if kind == "untimed_later":
        records = records[:2500] + [msgspec.structs.replace(b, tstamp=None) for b in records[2500:]]
    if kind == "new_model_at_the_end":  # first seen in the caller's blocks, in this order
        records += [Battle(model_a="zz", model_b="m3", winner="model_a"), Battle(model_a="m0", model_b="aa", winner="tie")]
    path = _split_file(tmp_path, records)
    if caller_first:
        _slow_front(monkeypatch, 0.5)
    got = tally_split.start_tally(path, elo=elo)()
    assert got == tally_file(path, elo=elo)  # counts with models in first-seen order, Elo bit for bit
    assert got.counts == PairCounts.from_battles(records)
    assert got.elo == (pytest.approx(online_elo(records), abs=1e-9) if elo else None)


@pytest.mark.parametrize("where", ["front", "back"])
def test_a_bad_record_in_either_part_goes_to_the_validating_reader(tmp_path, monkeypatch, where):
    monkeypatch.setattr(tally_module, "CHUNK_LINES", 300)
    monkeypatch.setattr("evaluators._parallel.worker_count", lambda workers: 2)
    records = battles(4000)
    bad = Battle(model_a="m1", model_b="m1", winner="tie")  # a model against itself
    records.insert(10 if where == "front" else len(records) - 10, bad)
    path = _split_file(tmp_path, records)
    _slow_front(monkeypatch, 0.5)  # the caller surely reads the last blocks
    assert tally_split.start_tally(path)() is None


def test_blocks_give_each_line_once(tmp_path):
    from arena.files import jsonl_block

    lines = [b'{"k": %d, "pad": "%s"}' % (i, b"x" * (i % 37)) for i in range(500)]
    path = tmp_path / "b.jsonl"
    path.write_bytes(b"\n".join(lines))  # no newline at the end
    size = path.stat().st_size
    with path.open("rb") as handle:
        for block in (1, 7, 64, 1000, size, size + 5):
            parts = [jsonl_block(handle.fileno(), k * block, (k + 1) * block, size) for k in range(-(-size // block))]
            assert b"".join(parts).split(b"\n") == lines, block


def _array_layouts(records: list[dict]) -> dict[str, bytes]:
    import json

    return {
        "indent=1 (ours, FastChat's)": msgspec.json.format(msgspec.json.encode(records), indent=1),
        "indent=2": json.dumps(records, indent=2).encode(),
        "one per line": b"[\n" + b",\n".join(json.dumps(r).encode() for r in records) + b"\n]\n",
        "compact": json.dumps(records, separators=(",", ":")).encode(),
        "json.dumps": b"\xef\xbb\xbf  " + json.dumps(records).encode() + b"\n",
    }


def test_array_blocks_give_each_object_once(tmp_path):
    from arena.files import json_array_block, json_array_layout

    records = [{"model_a": f"m{i % 5}", "model_b": "z", "winner": "tie", "pad": "x" * (i % 37),
                "conv_metadata": {"turns": [{"a": i}, {"b": [1, {"c": "}, {"}]}]}} for i in range(300)]
    flat = [{"model_a": f"m{i % 5}", "model_b": "z", "winner": "tie", "pad": "x" * (i % 37), "meta": {"b": [1, 2]}}
            for i in range(300)]
    for name, data in _array_layouts(records).items():
        if name in ("compact", "json.dumps"):  # objects in lists would hold the separator: see below
            records, data = flat, _array_layouts(flat)[name]
        path = tmp_path / "b.json"
        path.write_bytes(data)
        layout, size = json_array_layout(path), len(data)
        assert layout is not None, name
        with path.open("rb") as handle:
            for block in (1, 7, 64, 1000, size, size + 5):
                parts = [json_array_block(handle.fileno(), k * block, (k + 1) * block, size, layout) for k in range(-(-size // block))]
                got = [r for part in parts if part for r in msgspec.json.decode(part)]
                assert got == records, (name, block)


@pytest.mark.parametrize("caller_first", [False, True])
def test_a_json_array_is_read_in_blocks_from_both_ends(tmp_path, monkeypatch, caller_first):
    """FastChat's battle files are JSON arrays: read as JSON Lines are, in blocks, never
    the whole file at once, with the one-pass result."""
    monkeypatch.setattr(tally_module, "CHUNK_LINES", 300)
    monkeypatch.setattr(tally_split, "BACK_BLOCKS", 5)
    monkeypatch.setattr("evaluators._parallel.worker_count", lambda workers: 2)
    records = battles(4000, shuffle_time=caller_first)
    path = tmp_path / "b.json"
    write_battles(path, records)  # indent=1, as `arena battles export` and FastChat write
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("the whole file was read"))
    if caller_first:
        _slow_front(monkeypatch, 0.5)
    got = tally_split.start_tally(path)()
    assert got == tally_file(path)
    assert got.counts == PairCounts.from_battles(records) and got.elo == pytest.approx(online_elo(records), abs=1e-9)


@pytest.mark.parametrize("layout", ["compact", "json.dumps", "indent=1 (ours, FastChat's)"])
def test_an_array_whose_text_holds_the_separator_still_reads_right(tmp_path, monkeypatch, layout):
    """In a compact array `},{` can sit inside a string, where a block would cut an object
    in two: its decoding fails and the array is decoded at once, with the same result."""
    monkeypatch.setattr(tally_module, "CHUNK_LINES", 20)
    monkeypatch.setattr("evaluators._parallel.worker_count", lambda workers: 2)
    records = [msgspec.structs.asdict(b) | {"question_id": 'say "},{" and }, {\\" and },\n {'} for b in battles(600)]
    path = tmp_path / "b.json"
    path.write_bytes(_array_layouts(records)[layout])
    expected_counts, expected_elo = expected(battles(600))
    for got in (tally_file(path), tally_split.start_tally(path)()):
        assert got.counts == expected_counts and got.elo == pytest.approx(expected_elo, abs=1e-9)


def test_a_bad_object_in_an_array_goes_to_the_validating_reader(tmp_path, monkeypatch):
    monkeypatch.setattr(tally_module, "CHUNK_LINES", 300)
    monkeypatch.setattr("evaluators._parallel.worker_count", lambda workers: 2)
    records = battles(4000)
    records.insert(2000, Battle(model_a="m1", model_b="m1", winner="tie"))
    path = tmp_path / "b.json"
    write_battles(path, records)
    assert tally_file(path) is None and tally_split.start_tally(path)() is None
    path.write_bytes(path.read_bytes().replace(b'"winner": "tie"', b'"winner": "tie",,', 1))  # not JSON at all
    assert tally_file(path) is None and tally_split.start_tally(path)() is None
