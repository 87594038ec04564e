"""`arena demo --fast --no-serve` as a user runs it: a subprocess, a clean data dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_fast_shows_round_two_beating_round_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ARENA_DATA_DIR")}
    env["OMP_NUM_THREADS"] = "1"
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "service.cli.__main__", "demo", "--fast", "--no-serve", "--out", str(out)],
                            env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    # The claim is made on the held-out test split — never traced, never curated on — and only
    # because the exact McNemar test says so; the debug split is reported beside it.
    held = summary["held_out"]
    assert held["improved"] is True and held["p_value"] < 0.05 and held["round2"] > held["round1"]
    assert held["n"] == summary["dataset"]["test_items"] and held["test"] == "exact McNemar"
    assert summary["debug"]["note"].startswith("traced") and summary["debug"]["n"] == summary["dataset"]["debug_items"]
    assert summary["gate"]["status"] == "pass" and summary["gate"]["exit_code"] == 0
    # The trace blamed the bad source and curation dropped it (reaching the held-out failures).
    assert [s["value"] for s in summary["suspect_sources"]] == ["vendor-b"]
    removed = [json.loads(line) for line in (out / "report" / "removed.jsonl").read_text().splitlines()]
    planted = json.loads((out / "inputs" / "planted.json").read_text())["planted_wrong"]
    assert set(planted) <= {r["index"] for r in removed}  # every planted wrong answer is gone, traced or not
    assert any(r["reason"].startswith("source vendor-b dropped") for r in removed)
    test_prompts = {json.loads(line)["question"] for line in (out / "inputs" / "benchmark-test.jsonl").read_text().splitlines()}
    report = json.loads((out / "report" / "report.json").read_text())
    assert not {f["prompt"] for f in report["failures"]} & test_prompts  # the test split was never traced
    board = {row["model"]: row for row in summary["final_board"]}
    assert set(board) == {"r1-full", "r1-coreset", "r2-curated", "r2-dpo"}
    assert board["r2-curated"]["rating"] > board["r1-full"]["rating"]
    # People in the loop (simulated, and labelled so): votes, corrections on both-bad battles
    # accepted and offered to curation, and a DPO candidate trained on the pairs they give.
    arena, votes = summary["arena"], summary["arena"]["votes"]
    assert arena["simulated"] is True and sum(votes.values()) == arena["battles"] and votes.get("both_bad", 0) > 0
    assert arena["corrections_accepted"] == votes["both_bad"]
    assert {r["model"] for r in arena["human_board"]} == {"r1-full", "r1-coreset"}
    curation = summary["curation"]
    assert curation["added_corrections"] + curation["corrections_already_present"] == votes["both_bad"]
    assert len((out / "report" / "added.jsonl").read_text().splitlines()) == curation["added_corrections"]
    dpo = summary["dpo"]
    # Each vote for a side gives a pair, each corrected both-bad vote two, less those whose
    # answer was empty or equal to the correction (batched generation can repeat one): said.
    possible = votes.get("a", 0) + votes.get("b", 0) + 2 * votes["both_bad"]
    dropped = dpo["left_out"].get("empty_or_same", 0)
    assert set(dpo["left_out"]) <= {"tie", "empty_or_same"} and dpo["parent"] == "r2-curated"
    assert possible - 2 * dropped <= dpo["pairs"] <= possible - dropped
    assert dpo["reward_accuracy"] > 0.5 and set(dpo["gate_vs_parent"]) == {"debug", "test"}
    assert "Simulated reviewers'" in result.stdout and "DPO from the arena's votes" in result.stdout
    report = json.loads((out / "report" / "report.json").read_text())
    assert len(report["examples"]) == summary["dataset"]["records"]
    assert {"index", "score"} <= set(report["examples"][0])
    assert (out / "report" / "report.html").stat().st_size > 1000 and (out / "report" / "report.md").exists()
    assert "Round 2 vs round 1" in result.stdout and "Top offending records" in result.stdout
    assert "suspect source vendor-b" in result.stdout and "held-out test split" in result.stdout


@pytest.mark.slow
def test_demo_in_chinese_runs_the_loop_and_speaks_chinese(tmp_path):
    """`arena demo --lang zh --fast`: the bilingual base, Chinese data with Chinese defects
    (wrong answers, one-character near-duplicates, a Chinese refusal flood), checks that
    find them, trace, curation, round 2 — and the output in Chinese."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ARENA_DATA_DIR")}
    env["OMP_NUM_THREADS"] = "1"
    out = tmp_path / "demo-zh"
    result = subprocess.run([sys.executable, "-m", "service.cli.__main__", "demo", "--lang", "zh", "--fast", "--no-serve",
                             "--out", str(out)], env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lang"] == "zh"
    assert summary["held_out"]["improved"] is True and summary["gate"]["status"] == "pass"
    found = summary["data_checks"]
    assert found["refusal"][0] == found["refusal"][1] > 0 and found["contradiction"][0] == found["contradiction"][1]
    assert found["near_duplicate"][0] >= 1
    assert summary["attribution"]["auroc"] > 0.8
    records = [json.loads(line) for line in (out / "inputs" / "facts-round2.jsonl").read_text().splitlines()]
    assert any("住在" in r["messages"][0]["content"] for r in records)  # the data really is Chinese
    for words in ("第二轮对比第一轮", "最可疑的训练记录", "数据集检查", "可疑 source vendor-b", "r2-curated 在留出测试集上胜过 r1-full"):
        assert words in result.stdout, words
    assert "Round 2 vs round 1" not in result.stdout
