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
    scores = summary["scores"]
    assert scores["r2-curated"]["exact_match"] > scores["r1-full"]["exact_match"]
    assert summary["gate"]["status"] == "pass" and summary["gate"]["exit_code"] == 0
    board = {row["model"]: row for row in summary["final_board"]}
    assert set(board) == {"r1-full", "r1-coreset", "r2-curated"}
    assert board["r2-curated"]["rating"] > board["r1-full"]["rating"]
    report = json.loads((out / "report" / "report.json").read_text())
    assert len(report["examples"]) == summary["dataset"]["records"]
    assert {"index", "score"} <= set(report["examples"][0])
    assert (out / "report" / "report.html").stat().st_size > 1000 and (out / "report" / "report.md").exists()
    assert "Round 2 vs round 1" in result.stdout and "Top offending records" in result.stdout
