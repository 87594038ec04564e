"""Parsing the formats users bring, and the errors for bad input."""

import json
from pathlib import Path

import pytest

from service.datasets import make_split, parse_dataset
from service.errors import InvalidInput, TooLarge

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
if not SHARED.exists():
    SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.parametrize(
    "name,fmt,n",
    [("alpaca.jsonl", "alpaca", 3), ("chat.jsonl", "chat", 2), ("prompt_completion.jsonl", "prompt_completion", 2),
     ("seed_format.json", "plain", 4), ("seed_format.jsonl", "plain", 4)],
)
def test_shared_examples_parse(name, fmt, n):
    if not (SHARED / name).exists():
        pytest.skip("shared/data is not beside this checkout")
    parsed = parse_dataset((SHARED / name).read_bytes(), name)
    assert parsed.format == fmt
    assert len(parsed.records) == n
    assert all(r.messages[-1].role == "assistant" and r.answer for r in parsed.records)


def test_plain_array_and_jsonl_normalise_to_the_same_version():
    texts = ["User:Hi</s>\n Assistant:Hello.</s>\n ", "User:2+2?</s>\n Assistant:4</s>\n User:and 3+3?</s>\n Assistant:6</s>\n "]
    a = parse_dataset(json.dumps(texts).encode(), "a.json")
    b = parse_dataset("\n".join(json.dumps({"text": t}) for t in texts).encode(), "b.jsonl")
    assert a.content_id == b.content_id
    assert [m.role for m in a.records[1].messages] == ["user", "assistant", "user", "assistant"]


def test_alpaca_input_joins_the_prompt():
    rec = parse_dataset(b'{"instruction": "Name it.", "input": "It is Mira.", "output": "Mira"}', "x.jsonl").records[0]
    assert rec.prompt == "Name it.\nIt is Mira."  # as LLaMA-Factory and XTuner join them
    assert rec.answer == "Mira"


def test_malformed_json_reports_line_and_column():
    raw = b'{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": }\n'
    with pytest.raises(InvalidInput, match=r"line 2, column \d+"):
        parse_dataset(raw, "bad.jsonl")


def test_one_bad_line_in_ten_thousand_is_found():
    lines = [json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) for i in range(10_000)]
    lines[7321] = json.dumps({"prompt": "q", "completion_typo": "a"})
    with pytest.raises(InvalidInput, match="line 7322: missing field 'completion'"):
        parse_dataset("\n".join(lines).encode(), "big.jsonl")


@pytest.mark.parametrize(
    "raw,message",
    [
        (b'{"instruction": "x", "input": "", "output": "  "}', "field 'output' is empty"),
        (b'{"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]}', "unknown role 'robot'"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "last turn must be from the assistant"),
        (b'{"prompt": "x", "completion": 3}', "must be a string"),
        (b'{"foo": 1}', "cannot tell the format"),
        (b'["User:hi</s>\\n Assistant:</s>"]', "empty assistant turn"),
        (b'["just some text"]', "expected 'User:"),
        (b"   \n", "empty"),
    ],
)
def test_bad_records_name_the_problem(raw, message):
    with pytest.raises(InvalidInput, match=message):
        parse_dataset(raw, "f.jsonl")


def test_non_utf8_and_size_limit():
    with pytest.raises(InvalidInput, match="not UTF-8: byte 0xff at line 2"):
        parse_dataset(b'{"prompt": "a", "completion": "b"}\n\xff\n', "f.jsonl")
    with pytest.raises(TooLarge, match="over the limit of 10 bytes"):
        parse_dataset(b'{"prompt": "a", "completion": "b"}', "f.jsonl", max_bytes=10)


def test_split_is_deterministic_and_disjoint():
    a, b = make_split(100, 0.1, seed=3), make_split(100, 0.1, seed=3)
    assert a.test_indices == b.test_indices and len(a.test_indices) == 10
    assert make_split(100, 0.1, seed=4).test_indices != a.test_indices
    assert set(a.train_indices(100)).isdisjoint(a.test_indices)
    with pytest.raises(InvalidInput):
        make_split(100, 1.5, 0)
