"""The formats of the Chinese fine-tuning ecosystem (LLaMA-Factory, XTuner, ShareGPT), their
encodings and Parquet, read into one conversation type with nothing dropped in silence."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evaluators.records import Message
from service.dataset_formats import column_mapping
from service.datasets import parse_dataset
from service.errors import InvalidInput
from tests.service.test_cli import arena, embedded_env


def jsonl(*records) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def test_llama_factory_alpaca_keeps_system_and_history():
    record = {"instruction": "那第二个呢？", "input": "", "output": "第二个是北京。", "system": "你是一个地理助手。",
              "history": [["中国的首都是哪里？", "北京。"], ["日本的呢？", "东京。"]]}
    parsed = parse_dataset(jsonl(record), "zh.jsonl")
    assert parsed.format == "alpaca" and parsed.warnings == []
    assert parsed.records[0].messages == (
        Message("system", "你是一个地理助手。"), Message("user", "中国的首都是哪里？"), Message("assistant", "北京。"),
        Message("user", "日本的呢？"), Message("assistant", "东京。"), Message("user", "那第二个呢？"),
        Message("assistant", "第二个是北京。"))
    with pytest.raises(InvalidInput, match=r"line 1: history\[0\]: expected \[query, response\]"):
        parse_dataset(jsonl({**record, "history": [["只有一半"]]}), "zh.jsonl")


def test_alpaca_instruction_and_input_join_as_llama_factory_joins_them():
    """LLaMA-Factory's AlpacaDatasetConverter (and XTuner's alpaca_map_fn): the user turn is
    instruction and input joined by one newline, either one possibly empty: a record trains
    here on the prompt it trains on there."""
    both = {"instruction": "根据上下文回答问题。", "input": "罗兰住在济南。罗兰住在哪里？", "output": "济南。"}
    only_input = {"instruction": "", "input": "王芳住在哪个城市？", "output": "上海"}
    parsed = parse_dataset(jsonl(both, only_input), "zh.jsonl")
    assert [r.prompt for r in parsed.records] == ["根据上下文回答问题。\n罗兰住在济南。罗兰住在哪里？", "王芳住在哪个城市？"]
    with pytest.raises(InvalidInput, match=r"line 1: fields 'instruction' and 'input' are both empty"):
        parse_dataset(jsonl({**only_input, "input": " "}), "zh.jsonl")


def test_sharegpt_xtuner_and_openai_parts():
    sharegpt = {"system": "你是客服。", "conversations": [
        {"from": "human", "value": "查一下订单 42。"}, {"from": "function_call", "value": '{"name": "order", "id": 42}'},
        {"from": "observation", "value": '{"status": "已发货"}'}, {"from": "gpt", "value": "您的订单已发货。"}]}
    got = parse_dataset(jsonl(sharegpt), "s.jsonl")
    assert got.format == "sharegpt"
    assert [m.role for m in got.records[0].messages] == ["system", "user", "assistant", "user", "assistant"]
    xtuner = {"conversation": [{"system": "简洁回答。", "input": "1+1=?", "output": "2"}, {"input": "再加1呢？", "output": "3"}]}
    got = parse_dataset(jsonl(xtuner), "x.jsonl")
    assert got.format == "xtuner" and got.records[0].messages[-1] == Message("assistant", "3")
    assert [m.role for m in got.records[0].messages] == ["system", "user", "assistant", "user", "assistant"]
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "你好"}, {"type": "text", "text": "！"}]},
                          {"role": "assistant", "content": "你好！"}]}
    assert parse_dataset(jsonl(parts), "o.jsonl").records[0].messages[0] == Message("user", "你好！")
    image = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                          {"role": "assistant", "content": "一只猫"}]}
    with pytest.raises(InvalidInput, match=r"line 1, messages\[0\]: content\[0\] is a 'image_url' part"):
        parse_dataset(jsonl(image), "o.jsonl")
    with pytest.raises(InvalidInput, match=r"line 2, conversations\[0\]: unknown speaker 'robot'"):
        parse_dataset(jsonl(sharegpt, {"conversations": [{"from": "robot", "value": "x"}]}), "s.jsonl")


def test_fields_no_reader_uses_are_named_not_dropped_in_silence():
    records = [{"instruction": "问", "output": "答", "id": 1, "source": "web"}, {"instruction": "问2", "output": "答2", "id": 2}]
    parsed = parse_dataset(jsonl(*records), "a.jsonl")
    assert len(parsed.warnings) == 1 and "field 'id' (in 2 records, first at a.jsonl: line 1)" in parsed.warnings[0]
    assert parsed.records[0].metadata == {"source": "web"} and parsed.records[1].meta == ()  # metadata is kept


@pytest.mark.parametrize("record", [
    {"instruction": "问", "output": "答"},
    {"messages": [{"role": "user", "content": "问"}, {"role": "assistant", "content": "答"}]},
    {"conversations": [{"from": "human", "value": "问"}, {"from": "gpt", "value": "答"}]},
    {"conversation": [{"input": "问", "output": "答"}]},
    {"prompt": "问", "completion": "答"},
])
def test_metadata_is_kept_in_every_format_and_never_trained_on(record, tmp_path):
    from service.datasets import read_records, write_records

    tagged = {**record, "source": "vendor-b", "annotator": "ann-7", "task_type": "qa", "domain": "地理",
              "meta": {"batch": 3, "reviewed": True}}
    parsed = parse_dataset(jsonl(tagged, record), "m.jsonl")
    assert parsed.warnings == []
    first, second = parsed.records
    assert first.metadata == {"source": "vendor-b", "annotator": "ann-7", "task_type": "qa", "domain": "地理",
                              "batch": "3", "reviewed": "true"}
    assert first.messages == second.messages and second.meta == ()
    write_records(tmp_path, parsed)
    assert read_records(tmp_path, parsed.content_id)[0] == parsed.records  # stored with the version
    assert parse_dataset(jsonl(record), "m.jsonl").content_id != parsed.content_id
    with pytest.raises(InvalidInput, match=r"m.jsonl: line 1: field 'meta.tags' must be a string, number or boolean, got list"):
        parse_dataset(jsonl({**record, "meta": {"tags": ["a"]}}), "m.jsonl")
    with pytest.raises(InvalidInput, match=r"line 1: field 'meta' must be an object"):
        parse_dataset(jsonl({**record, "meta": "x"}), "m.jsonl")


def test_dataset_info_maps_columns_and_tags():
    info = {"zh_qa": {"file_name": "qa.json", "columns": {"prompt": "问题", "response": "回答", "system": "设定"}},
            "zh_chat": {"file_name": "chat.json", "formatting": "sharegpt", "columns": {"messages": "messages"},
                        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                 "assistant_tag": "assistant"}}}
    qa = parse_dataset(jsonl({"问题": "天空是什么颜色？", "回答": "蓝色。", "设定": "简洁", "编号": 7}), "qa.jsonl",
                       mapping=column_mapping(info, "zh_qa"))
    assert qa.records[0].messages == (Message("system", "简洁"), Message("user", "天空是什么颜色？"), Message("assistant", "蓝色。"))
    assert qa.format == "alpaca" and "field '编号'" in qa.warnings[0]
    chat = parse_dataset(jsonl({"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "您好"}]}),
                         "chat.jsonl", mapping=column_mapping(info, "zh_chat"))
    assert chat.records[0].messages[-1] == Message("assistant", "您好")
    with pytest.raises(InvalidInput, match="no dataset 'nope'; it has zh_chat, zh_qa"):
        column_mapping(info, "nope")
    with pytest.raises(InvalidInput, match=r"column\(s\) \['answer'\] are not alpaca columns"):
        column_mapping({"x": {"columns": {"answer": "a"}}}, "x")


def test_gb18030_files_and_parquet():
    raw = jsonl({"instruction": "北京是哪国的首都？", "output": "中国。"}).decode().encode("gb18030")
    with pytest.raises(InvalidInput, match="not UTF-8.*give --encoding gb18030"):
        parse_dataset(raw, "gbk.jsonl")
    assert parse_dataset(raw, "gbk.jsonl", encoding="gb18030").records[0].answer == "中国。"
    with pytest.raises(InvalidInput, match="unknown encoding 'klingon'"):
        parse_dataset(raw, "gbk.jsonl", encoding="klingon")
    # Big5 (Traditional) also decodes as GB18030, into nonsense: the hint names Big5.
    big5 = jsonl({"instruction": "請用繁體中文介紹台灣的首都。", "output": "台灣的首都是台北，位於島嶼北部，是政治與經濟中心。"}).decode().encode("big5")
    with pytest.raises(InvalidInput, match="not UTF-8.*it reads as big5: give --encoding big5"):
        parse_dataset(big5, "big5.jsonl")
    assert parse_dataset(big5, "big5.jsonl", encoding="big5").records[0].answer.startswith("台灣的首都是台北")
    table = pa.table({"instruction": ["一加一？", "二加二？"], "input": ["", ""], "output": ["二", "四"]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    parsed = parse_dataset(buffer.getvalue(), "train-00000.parquet")
    assert parsed.format == "alpaca" and [r.answer for r in parsed.records] == ["二", "四"] and parsed.line_numbers == [1, 2]
    bad = pa.table({"instruction": ["一加一？"], "output": [""]})
    buffer = io.BytesIO()
    pq.write_table(bad, buffer)
    with pytest.raises(InvalidInput, match="train.parquet: row 1: field 'output' is empty"):
        parse_dataset(buffer.getvalue(), "train.parquet")


def test_cli_reads_llama_factory_files_as_users_bring_them(tmp_path):
    env = embedded_env(tmp_path)
    data = tmp_path / "qa.json"
    data.write_text(json.dumps([{"问题": "天空是什么颜色？", "回答": "蓝色。", "来源": "web"}], ensure_ascii=False))
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"zh_qa": {"file_name": "qa.json", "columns": {"prompt": "问题", "response": "回答"}}},
                               ensure_ascii=False))
    added = arena("data", "add", str(data), "--name", "中文问答", "--dataset-info", str(info), "--dataset", "zh_qa", env=env)
    assert added.returncode == 0, added.stderr
    assert "added 中文问答@1" in added.stdout and "1 records, format alpaca" in added.stdout
    assert "warning: field '来源'" in added.stderr
    assert "天空是什么颜色？" in arena("data", "show", "中文问答", env=env).stdout
    gbk = tmp_path / "gbk.jsonl"
    gbk.write_bytes(jsonl({"instruction": "你好", "output": "您好"}).decode().encode("gb18030"))
    refused = arena("data", "add", str(gbk), "--name", "gbk", env=env)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "--encoding gb18030" in refused.stderr
    assert arena("data", "add", str(gbk), "--name", "gbk", "--encoding", "gb18030", env=env).returncode == 0


def test_a_local_parquet_file_is_spooled_a_batch_at_a_time(tmp_path):
    """`arena data check FILE.parquet` spools the file it checks: a compressed Parquet file
    of a few KB can hold 80 MB of text, and reading it whole held all of it (and its
    records) in memory. Batch by batch, the peak is a batch's rows."""
    import tracemalloc

    from service.datasets import RecordFile, spool_records

    rows = 20_000
    table = pa.table({"instruction": pa.array(["问" * 2000] * rows).dictionary_encode(),
                      "output": pa.array([f"答{i}" for i in range(rows)])})
    path = tmp_path / "big.parquet"
    pq.write_table(table, path)
    assert path.stat().st_size < 200_000  # 80 MB of UTF-8 text once decoded
    tracemalloc.start()
    try:
        count, fmt = spool_records(path, tmp_path / "records.jsonl")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (count, fmt) == (rows, "alpaca")
    assert peak < 30_000_000, f"spooling peaked at {peak / 1e6:.0f} MB of Python objects"
    spooled = RecordFile(tmp_path / "records.jsonl")
    assert len(spooled) == rows and spooled.read(rows - 1, rows)[0][0].answer == f"答{rows - 1}"
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"instruction": ["一加一？", "二加二？"], "output": ["二", ""]}), bad)
    with pytest.raises(InvalidInput, match=r"bad.parquet: row 2: field 'output' is empty"):
        spool_records(bad, tmp_path / "bad.jsonl")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InvalidInput, match="junk.parquet: not a readable Parquet file"):
        spool_records(tmp_path / "junk.parquet", tmp_path / "junk.jsonl")
