"""The attribution claim through the user's path, on chat records: `arena data add` →
`arena train --wait` → `arena eval` → `arena trace`, each a real `arena` process, scored
from report.json. The synthetic `chats` preset opens two-turn chats with the planted
wrong answers (a follow-up answered correctly after them); the user's path must find them
at AUROC ≥ 0.95 and precision ≥ 0.8, and rank them no worse than text similarity does.
(`test_trace_user_path.py` has the single-turn case.)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.user_path import fresh_env, user_path  # noqa: E402
from tests.redis_fixtures import settings_env  # noqa: E402


def test_wrong_answers_inside_chats_are_found_through_the_cli(settings, tiny_small_base, tmp_path):
    env = fresh_env(settings.data_dir, settings_env(settings))
    row = user_path(env, tiny_small_base, "chats", 0, tmp_path / "work")
    for setting in ("with_gold", "without_gold"):
        ours, text = row[setting]["ours"], row[setting]["embedding_nn"]
        assert ours["auroc"] >= 0.95 and ours["precision_at_k"] >= 0.8, (setting, row[setting])
        assert ours["precision_at_k"] >= text["precision_at_k"]
