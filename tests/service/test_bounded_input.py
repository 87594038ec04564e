"""Deeply nested files are refused with the line, never a traceback or a 500; nothing stored is lost."""

from __future__ import annotations

import json

import pytest

from arena.battles import BattleFormatError, parse_battles
from evaluators.bounded_json import MAX_DEPTH, TooDeep, check_depth
from evaluators.tasks import TaskError, load_docs, load_task
from tests.service.test_cli import arena, embedded_env

DEEP = "[" * 100_000 + "]" * 100_000


def test_depth_check_counts_brackets_outside_strings_only():
    check_depth(json.dumps({"messages": [{"role": "user", "content": "[" * 10_000}]}))
    check_depth("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    with pytest.raises(TooDeep, match=f"line 2: nested deeper than {MAX_DEPTH} levels"):
        check_depth('{"a": 1}\n' + "[" * (MAX_DEPTH + 1))


def test_cli_refuses_a_100k_deep_file_in_one_line_and_keeps_what_was_stored(tmp_path):
    env = embedded_env(tmp_path)
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": "q", "completion": "a"}) + "\n")
    assert arena("data", "add", str(good), "--name", "qa", env=env).returncode == 0
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP)
    result = arena("data", "add", str(deep), "--name", "qa", env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: deep.json: line 1: nested deeper than {MAX_DEPTH} levels"
    lines = tmp_path / "deep.jsonl"
    lines.write_text(good.read_text() + '{"prompt": ' + DEEP + "}\n")
    result = arena("data", "add", str(lines), "--name", "qa", env=env)
    assert result.returncode == 1 and "line 2: nested deeper than" in result.stderr and "Traceback" not in result.stderr
    listed = json.loads(arena("data", "list", "--json", env=env).stdout)
    assert [(d["name"], len(d["versions"])) for d in listed] == [("qa", 1)]


def test_deep_task_files_and_battle_files_are_errors(tmp_path):
    task = tmp_path / "t.yaml"
    task.write_text("task: t\ndataset: d.jsonl\ndoc_to_target: x\ndoc_to_text: " + DEEP + "\n")
    with pytest.raises(TaskError, match=r"t\.yaml:4: nested deeper than"):
        load_task(task)
    nested = "task: t\n" + "".join("  " * i + f"k{i}:\n" for i in range(3000))
    task.write_text(nested)
    with pytest.raises(TaskError, match="nested too deeply|unknown field"):
        load_task(task)
    with pytest.raises(BattleFormatError, match="nested too deeply"):
        parse_battles(DEEP)
    docs = tmp_path / "docs.jsonl"  # a task's own documents: line-numbered, no RecursionError
    docs.write_text('{"q": "x"}\n{"q": ' + DEEP + "}\n")
    with pytest.raises(TaskError, match=rf"docs\.jsonl:2: nested deeper than {MAX_DEPTH} levels"):
        load_docs(docs)


@pytest.mark.parametrize("line,says", [
    ('{"q": "x", "n": ' + "9" * 5000 + "}", r"docs\.jsonl: line 2, column 17: a number with more than 4300 digits"),
    ('{"q": "\\ud800 hi"}', r"docs\.jsonl:2: field 'q': \\ud800 is half of a UTF-16 surrogate pair"),
])
def test_task_documents_json_cannot_read_is_a_task_error_naming_the_line(tmp_path, line, says):
    """`json.loads` raises a plain ValueError for a number past Python's 4300 digits (a
    traceback from `arena task validate`) and takes a lone surrogate that no answer or
    sample file could then hold (an encoding error with no line); both name the line now,
    as a dataset upload's do. A paired escape (an emoji) is text."""
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"q": "\\ud83d\\ude00"}\n' + line + "\n")
    with pytest.raises(TaskError, match=says):
        load_docs(docs)
    docs.write_text('{"q": "\\ud83d\\ude00"}\n')
    assert load_docs(docs) == [{"q": "\U0001F600"}]


BOMB = ("task: t\ndataset: docs.jsonl\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\nmetadata:\n"
        "  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        + "".join(f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)))


def test_a_yaml_alias_bomb_is_refused_before_anything_expands_it(tmp_path, live_server):
    """Ten lines of nested aliases name 9^10 values: `task validate` used to run out of
    memory (18 GB, then killed) walking them. Refused with the line, from a file, the CLI and
    the API alike; a task with a few shared anchors still loads."""
    from evaluators.bounded_json import MAX_YAML_VALUES, TooMany, safe_yaml

    task = tmp_path / "bomb.yaml"
    task.write_text(BOMB)
    (tmp_path / "docs.jsonl").write_text('{"q": "x", "a": "y"}\n')
    with pytest.raises(TooMany):
        safe_yaml(BOMB)
    with pytest.raises(TaskError, match=rf"bomb\.yaml:6: YAML aliases expand to more than {MAX_YAML_VALUES:,} values"):
        load_task(task)
    result = arena("task", "validate", str(task), env=embedded_env(tmp_path))
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "YAML aliases expand" in result.stderr
    r = live_server.client(admin=True).post("/api/evals", json={"candidates": ["x"], "task": BOMB.replace("dataset: docs.jsonl\n", ""),
                                                                 "docs": [{"q": "x", "a": "y"}]}, timeout=60)
    assert r.status_code == 422 and "YAML aliases expand" in r.json()["detail"], r.text
    shared = "task: t\ndataset: docs.jsonl\ndoc_to_text: &t '{{q}}'\ndoc_to_target: '{{a}}'\nmetadata: {again: *t}\n"
    task.write_text(shared)
    assert load_task(task).doc_to_text == "{{q}}"
