"""Battles files read batch by batch (`arena.battle_stream`): the same battles and the same
errors, named at the same lines and indices, as the whole-file reader, whatever the blocks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arena.battle_stream import BattleBatches
from arena.battles import BattleFormatError, parse_battles, read_battles


def _records() -> list[object]:
    """Good battles with malformed ones among them, some with conversations."""
    records: list[object] = []
    for i in range(60):
        record = {"model_a": f"m{i % 7}", "model_b": f"m{(i + 3) % 7}", "winner": ["model_a", "model_b", "tie", "tie (bothbad)"][i % 4],
                  "tstamp": 1.7e9 + i, "question_id": f"q{i}"}
        if i % 5 == 0:
            record["conversation_a"] = [{"role": "user", "content": f"问题 {i} " + '},\n  { "x": 1 }'}, {"role": "assistant", "content": "答"}]
        records.append(record)
    records[9] = {**records[9], "winner": "model_c"}  # a bad winner
    records[23] = {"model_a": "m1", "model_b": "m1", "winner": "tie"}  # a model against itself
    records[40] = ["not", "an", "object"]
    records[51] = {"model_b": "m2", "winner": "tie"}  # no model_a
    return records


def _whole_and_batched(path: Path, block: int):
    whole = parse_battles(path.read_bytes(), skip_invalid=True, source=str(path))
    batches = BattleBatches(path, skip_invalid=True, block_bytes=block)
    batched = [b for batch in batches for b in batch]
    return whole, batched, batches


@pytest.mark.parametrize("block", [64, 500, 4096, 1 << 20])
def test_jsonl_in_blocks_gives_the_whole_files_battles_and_errors_at_their_lines(tmp_path: Path, block: int) -> None:
    lines = [json.dumps(r, ensure_ascii=False) for r in _records()]
    lines[30:30] = ["", "   "]  # blank lines: records and lines no longer line up
    path = tmp_path / "battles.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")
    whole, batched, batches = _whole_and_batched(path, block)
    assert batched == whole.battles and len(batched) == 56
    assert batches.skipped == whole.skipped
    assert [(e.index, e.line) for e in batches.skipped] == [(9, 10), (23, 24), (40, 43), (51, 54)]
    assert batches.layout == "lines"


@pytest.mark.parametrize("block", [64, 700, 1 << 20])
def test_a_pretty_json_array_in_blocks_gives_the_whole_files_battles_and_errors(tmp_path: Path, block: int) -> None:
    path = tmp_path / "battles.json"
    path.write_text(json.dumps(_records(), ensure_ascii=False, indent=1))  # FastChat's and our export's layout
    whole, batched, batches = _whole_and_batched(path, block)
    assert batched == whole.battles and len(batched) == 56
    assert batches.skipped == whole.skipped and [e.index for e in batches.skipped] == [9, 23, 40, 51]


@pytest.mark.parametrize("layout", [{"separators": (",", ":")}, {"indent": 0}, {"indent": "\t"}])
def test_an_array_whose_separator_may_be_inside_an_element_is_read_whole(tmp_path: Path, layout: dict) -> None:
    """Compact (`},{` inside a string) or with no indentation (`},\n{` between nested
    turns): read at once, the same battles; tab-indented: in blocks, the same battles."""
    records = [r for r in _records() if isinstance(r, dict)]
    records[3]["conversation_a"] = [{"role": "user", "content": 'a},{"model_a": "x"'}, {"role": "assistant", "content": "b"}]
    path = tmp_path / "battles.json"
    path.write_text(json.dumps(records, **layout))
    whole, batched, batches = _whole_and_batched(path, 64)
    assert batched == whole.battles and batches.skipped == whole.skipped and len(batched) == 56


def test_keep_sees_every_battle_and_the_batches_hold_only_what_it_keeps(tmp_path: Path) -> None:
    path = tmp_path / "battles.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _records() if isinstance(r, dict) and r.get("winner") != "model_c") + "\n")
    seen = []
    batches = BattleBatches(path, skip_invalid=True, keep=lambda b: seen.append(b) or (b if b.winner == "tie" else None), block_bytes=300)
    kept = list(batches)
    assert len(kept) > 3 and all(len(batch) < 10 for batch in kept)
    assert [b for batch in kept for b in batch] == [b for b in seen if b.winner == "tie"]
    assert len(seen) == 56
    assert read_battles(path, skip_invalid=True, keep=lambda b: b if b.winner == "tie" else None).battles == [b for batch in kept for b in batch]
    assert list(batches) == kept  # a second pass reads the file again
    assert len(seen) == 2 * 56


def test_errors_are_raised_at_the_end_naming_every_one_and_a_broken_block_at_once(tmp_path: Path) -> None:
    path = tmp_path / "battles.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _records()) + "\n")
    with pytest.raises(BattleFormatError) as raised:
        list(BattleBatches(path, block_bytes=100))
    assert [e.line for e in raised.value.errors] == [10, 24, 41, 52]
    with pytest.raises(BattleFormatError) as whole:
        read_battles(path, keep=lambda b: b)
    assert whole.value.errors == raised.value.errors and str(path) in str(whole.value)

    broken = tmp_path / "broken.json"
    text = json.dumps([r for r in _records() if isinstance(r, dict)], indent=1)
    broken.write_text(text[: len(text) * 2 // 3] + "}}}" + text[len(text) * 2 // 3 :])
    with pytest.raises(BattleFormatError) as syntax:  # even when skipping: nothing after a break is trusted
        list(BattleBatches(broken, skip_invalid=True, block_bytes=300))
    assert len(syntax.value.errors) == 1 and "not valid JSON" in syntax.value.errors[0].message
    assert syntax.value.errors[0].index > 10  # where the broken block starts, not the file's first record
