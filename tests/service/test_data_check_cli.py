"""`arena data check` as a user runs it: on a dataset file or a stored version, in blocks."""

from __future__ import annotations

import json

from evaluators.datachecks import check_dataset
from service.datasets import parse_dataset
from tests.service.test_cli import arena, embedded_env


def _rows(n: int = 40) -> list[dict]:
    topics = ["bread", "rivers", "cactus", "passwords", "sleep", "onions", "weather", "interest"]
    rows = [{"instruction": f"Tell me one fact about {topics[i % 8]}, number {i} of the series, in plain words.",
             "input": "", "output": f"Fact {i}: {topics[i % 8]} are covered in chapter {i * 7} of the handbook "
                                    f"written by author {i * 13}."} for i in range(n)]
    rows.append(dict(rows[3]))  # 40: exact copy of 3
    rows.append({**rows[30], "output": rows[30]["output"].replace("written by", "which was written by")})  # 41: near copy of 30
    return rows


def test_check_a_file_streams_and_matches_the_library(tmp_path):
    data = tmp_path / "alpaca.jsonl"
    data.write_text("\n\n".join(json.dumps(r) for r in _rows()) + "\n")  # blank lines: source lines ≠ indices
    result = arena("data", "check", str(data), "--json", "--workers", "2", env=embedded_env(tmp_path))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["file"] == str(data) and out["records"] == 42
    by_check = {f["check"]: f for f in out["findings"]}
    assert by_check["exact_duplicate"]["record_indices"] == [3, 40]
    assert by_check["exact_duplicate"]["line_numbers"] == [7, 81]
    assert by_check["near_duplicate"]["record_indices"] == [30, 41]
    assert not (tmp_path / "data" / "redis").exists()  # a file needs no store
    parsed = parse_dataset(data.read_bytes(), data.name)
    library = json.loads(json.dumps(check_dataset(parsed.records, line_numbers=parsed.line_numbers).to_dict()))
    assert out["findings"] == library["findings"] and out["summary"] == library["summary"]


def test_check_a_stored_version_leaves_its_held_out_split_to_the_overlap_check(tmp_path):
    env = embedded_env(tmp_path)
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in _rows()))
    assert arena("data", "add", str(data), "--name", "qa", env=env).returncode == 0
    assert arena("data", "split", "qa", "--test-fraction", "0.1", "--seed", "0", env=env).returncode == 0
    held = set(json.loads(arena("data", "show", "qa", "--json", env=env).stdout)["dataset"]["split"]["test_indices"])
    result = arena("data", "check", "qa", "--json", env=env)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    flagged = {i for f in out["findings"] for i in f["record_indices"]}
    assert not flagged & held  # findings name training records only, in the version's own numbering
    assert held & set(range(3)) and not {3, 30, 40, 41} & held  # the seed holds out a record before the copies
    duplicates = {f["check"]: f for f in out["findings"] if f["check"] in ("exact_duplicate", "near_duplicate")}
    for check, pair in (("exact_duplicate", [3, 40]), ("near_duplicate", [30, 41])):
        found = duplicates[check]
        # One numbering everywhere: the indices, `keep` (which a script drops the others by),
        # the near pairs, and the text.
        assert found["record_indices"] == pair and found["details"]["keep"] == pair[0], found
        assert all(p[:2] == pair for p in found["details"].get("pairs", [pair]))
        assert f"#{pair[0]} (line {pair[0] + 1})" in found["message"] and f"#{pair[1]} (line {pair[1] + 1})" in found["message"]


def test_bad_input_is_a_one_line_error(tmp_path):
    env = embedded_env(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "q", "output": "a"}\n{"instruction": "q2", "output": \n')
    result = arena("data", "check", str(bad), env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: bad.jsonl: invalid JSON at line 2, column 33: Expecting value"]
    missing = arena("data", "check", str(tmp_path / "nope.jsonl"), env=env)
    assert missing.returncode == 1 and missing.stderr.strip() == f"error: {tmp_path / 'nope.jsonl'}: no such file"
    gbk = tmp_path / "gbk.jsonl"
    gbk.write_bytes(json.dumps({"instruction": "你好", "output": "好"}, ensure_ascii=False).encode("gbk"))
    result = arena("data", "check", str(gbk), env=env)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "not UTF-8" in result.stderr and "line 1" in result.stderr
    assert arena("data", "check", str(gbk), "--encoding", "gbk", env=env).returncode == 0
    workers = arena("data", "check", str(bad), "--workers", "0", env=env)
    assert workers.returncode == 1 and workers.stderr.strip() == "error: --workers must be at least 1, got 0"


def test_a_chinese_file_spools_beside_the_segmenter_load_with_the_same_findings_and_errors(tmp_path):
    """With two workers a Chinese file is spooled in a forked process while the command
    loads jieba: the findings are the library's, and a bad line is still one line."""
    env = embedded_env(tmp_path)
    rows = [{"instruction": f"请用一句话介绍第{i}种{['面包', '河流', '仙人掌', '密码'][i % 4]}的特点。", "output": f"它的特点是编号{i * 7}。"}
            for i in range(30)]
    rows.append(dict(rows[5]))  # 30: exact copy of 5
    data = tmp_path / "zh.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")  # ensure_ascii: the Han text as \\u escapes
    result = arena("data", "check", str(data), "--json", "--workers", "2", env=env)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert [5, 30] in [f["record_indices"] for f in out["findings"] if f["check"] == "exact_duplicate"]
    parsed = parse_dataset(data.read_bytes(), data.name)
    library = json.loads(json.dumps(check_dataset(parsed.records, line_numbers=parsed.line_numbers).to_dict()))
    assert out["findings"] == library["findings"] and out["summary"] == library["summary"]
    bad = tmp_path / "zh_bad.jsonl"
    bad.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + '\n{"instruction": "问", "output": \n')
    result = arena("data", "check", str(bad), "--workers", "2", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: zh_bad.jsonl: invalid JSON at line 32, column 32: Expecting value"]


def test_check_a_llama_factory_file_through_its_dataset_info(tmp_path):
    """`arena data check` reads a file with LLaMA-Factory's column mapping, as `arena data add`
    does (the detection error points at --dataset-info); errors name the info file given."""
    rows = [{"问题": r["instruction"], "补充": r["input"], "回答": r["output"]} for r in _rows()]
    data = tmp_path / "mapped.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    info = tmp_path / "my_info.json"
    info.write_text(json.dumps({"zh": {"file_name": "mapped.jsonl", "columns": {"prompt": "问题", "query": "补充",
                                                                                "response": "回答"}}}))
    env = embedded_env(tmp_path)
    plain = arena("data", "check", str(data), env=env)
    assert plain.returncode == 1 and "--dataset-info" in plain.stderr
    mapped = arena("data", "check", str(data), "--dataset-info", str(info), "--dataset", "zh", "--json", env=env)
    assert mapped.returncode == 0, mapped.stderr
    by_check = {f["check"]: f for f in json.loads(mapped.stdout)["findings"]}
    assert by_check["exact_duplicate"]["record_indices"] == [3, 40]
    wrong = arena("data", "check", str(data), "--dataset-info", str(info), "--dataset", "nope", env=env)
    assert wrong.returncode == 1 and wrong.stderr == f"error: {info}: no dataset 'nope'; it has zh\n"
    stored = arena("data", "check", "qa", "--dataset-info", str(info), "--dataset", "zh", env=env)
    assert stored.returncode == 1 and "--dataset-info applies to a FILE" in stored.stderr
