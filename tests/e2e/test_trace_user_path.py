"""The attribution claim through the user's path, not the library: `arena data add` →
`arena train --wait` → `arena eval` with a chat task file → `arena trace`, each a real
`arena` process, scored from the report.json a user reads.

The planted set is the synthetic `fast` preset (wrong answers on one topic, duplicates,
contradictions, a refusal flood), trained as `bench/attribution.py` trains it. The library
path finds the planted wrong answers at AUROC 1.00 / precision 1.00 with and without gold
(README); the user's path must reach at least 0.95 / 0.8. The same through chats:
`test_trace_user_path_chats.py` (a file of its own, so that the two, each a few minutes of
training, run on different workers).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.user_path import fresh_env, user_path  # noqa: E402
from evaluators.synthetic_bench import LEAD_INS  # noqa: E402
from tests.redis_fixtures import settings_env  # noqa: E402


def test_planted_wrong_answers_are_found_through_the_cli(settings, tiny_small_base, tmp_path):
    env = fresh_env(settings.data_dir, settings_env(settings))
    row = user_path(env, tiny_small_base, "fast", 0, tmp_path / "work", over_refusal=True, lead_ins=LEAD_INS)

    # The failures were traced in the conversation the model answered in, not re-wrapped.
    assert row["prompts"]["from_messages"] == row["failures"] > 0 and row["prompts"]["as_text"] == 0
    assert len(row["checkpoints"]) == 4  # the bounded set, spread over training
    for setting in ("with_gold", "without_gold"):
        ours = row[setting]["ours"]
        assert ours["auroc"] >= 0.95 and ours["precision_at_k"] >= 0.8, (setting, row[setting])
    # Over-refusals behind everyday lead-ins, `arena trace --refused --no-gold`: the refusal
    # flood is found (the library path: AUROC 0.97, precision 0.83 over seeds 0-2), where
    # text similarity ranks it last.
    refusals = row["over_refusal"]
    assert refusals["failures"] > 0 and refusals["ours"]["auroc"] >= 0.9, refusals
    assert refusals["ours"]["auroc"] > refusals["embedding_nn"]["auroc"] + 0.5

