"""Rows in the public arena dumps' own schemas (the Kaggle 55k CSV, arena-human-preference-140k),
and a writer for each format users bring them in, for the dump tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from arena.battles import Battle
from arena.style_metadata import compute_conv_metadata

ANSWERS = [
    "# Plan\n- one\n- two\n**bold** and __this__",
    "Plain answer without markdown, but rather long and wordy, going on and on for a while.",
    "1. first\n2. second\n```python\n# not a header\nx = 1\n```\n## Done",
    "short",
    "### Heading\n* item\n+ item\n  - nested\n**a** **b**",
]


def kaggle_rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        a, b = rng.choice(4, size=2, replace=False)
        turns = int(rng.integers(1, 3))
        outcome = int(rng.integers(0, 3))
        rows.append({
            "id": 1000 + k, "model_a": f"m{a}", "model_b": f"m{b}",
            "prompt": json.dumps([f"question {k}.{t}" for t in range(turns)]),
            "response_a": json.dumps([ANSWERS[int(rng.integers(0, 5))] for _ in range(turns)]),
            "response_b": json.dumps([ANSWERS[int(rng.integers(0, 5))] if t else None for t in range(turns)] if k == 3 else
                                     [ANSWERS[int(rng.integers(0, 5))] for _ in range(turns)]),
            "winner_model_a": int(outcome == 0), "winner_model_b": int(outcome == 1), "winner_tie": int(outcome == 2),
        })
    return rows


def parts(text: str) -> list[dict]:
    return [{"type": "text", "text": text, "image": None, "mimeType": None}]


def arena_140k_rows(n: int, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    winners = ["model_a", "model_b", "tie", "both_bad"]
    rows = []
    for k in range(n):
        a, b = rng.choice(4, size=2, replace=False)
        texts = {side: ANSWERS[int(rng.integers(0, 5))] + " word" * int(rng.integers(0, 40)) for side in "ab"}
        battle = Battle(model_a="x", model_b="y", winner="tie", answer_a=texts["a"], answer_b=texts["b"])
        meta = compute_conv_metadata(battle)
        meta.update({"context_a_tokens": 3, "context_b_tokens": 3, "sum_user_tokens": 3})
        rows.append({
            "id": f"uuid-{k}", "model_a": f"m{a}", "model_b": f"m{b}", "winner": winners[int(rng.integers(0, 4))],
            "evaluation_session_id": "s", "evaluation_order": 1,
            "conversation_a": [{"role": "user", "content": parts("Q")}, {"role": "assistant", "content": parts(texts["a"])}],
            "conversation_b": [{"role": "user", "content": parts("Q")}, {"role": "assistant", "content": parts(texts["b"])}],
            "conv_metadata": meta,
            "category_tag": {"math_v0.1": {"math": bool(k % 2)}, "if_v0.1": {"if": False, "score": 1}},
            "language": "en" if k % 3 else "de", "is_code": False,
            "timestamp": f"2025-05-{1 + k % 28:02d}T14:48:41.602925",
        })
    return rows


def write_rows(rows: list[dict], path: Path) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".csv":
        pacsv.write_csv(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    return path
