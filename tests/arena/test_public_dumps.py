"""The public arena dumps in and out: the Kaggle 55k CSV and the 140k schema (JSON, JSONL,
Parquet) read into FastChat battles, our export carrying FastChat's `conv_metadata`, and
style control agreeing with FastChat's `compute_style_control` on it, through the
library and `arena ratings`. Through `arena battles import|export` and the tally:
`test_public_dumps_cli.py`."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from pathlib import Path

import msgspec
import numpy as np
import pytest
from click.testing import CliRunner
from scipy.optimize import minimize
from scipy.special import expit

from arena.battles import Battle, BattleFormatError, Turn, read_battles, write_battles
from arena.style import style_control, style_features
from arena.style_metadata import STYLE_KEYS, compute_conv_metadata, markdown_counts
from service.cli import cli
from tests.arena.dump_rows import ANSWERS, arena_140k_rows, kaggle_rows, write_rows


# --- reading the dumps --------------------------------------------------------------------


def test_kaggle_55k_csv_maps_winners_turns_and_ids(tmp_path: Path) -> None:
    rows = kaggle_rows(40)
    battles = read_battles(write_rows(rows, tmp_path / "train.csv")).battles
    assert len(battles) == 40
    for row, battle in zip(rows, battles):
        expected = "model_a" if row["winner_model_a"] else "model_b" if row["winner_model_b"] else "tie"
        assert (battle.model_a, battle.model_b, battle.winner, battle.question_id) == (row["model_a"], row["model_b"], expected, str(row["id"]))
        prompts, answers = json.loads(row["prompt"]), json.loads(row["response_a"])
        assert battle.turn == len(prompts)
        assert [(t.role, t.content) for t in battle.conversation_a] == [
            x for p, a in zip(prompts, answers) for x in (("user", p), ("assistant", a))]
    assert battles[3].conversation_b[1].content is None  # a null turn is kept as no content
    # The same rows as JSON Lines give the same battles.
    assert read_battles(write_rows(rows, tmp_path / "train.jsonl")).battles == battles


def test_kaggle_55k_bad_rows_are_named_all_or_nothing(tmp_path: Path) -> None:
    rows = kaggle_rows(6)
    rows[1].update(winner_model_a=1, winner_model_b=1, winner_tie=0)
    rows[4]["response_b"] = "not json ["
    path = write_rows(rows, tmp_path / "train.csv")
    with pytest.raises(BattleFormatError) as caught:
        read_battles(path)
    message = str(caught.value)
    assert "2 invalid records" in message
    assert "row 2: field `winner_model_a`: expected exactly one of winner_model_a, winner_model_b, winner_tie to be 1, got 1/1/0" in message
    assert "row 5: field `response_b`: expected a JSON list of strings, one per turn" in message
    loaded = read_battles(path, skip_invalid=True)
    assert len(loaded.battles) == 4 and [e.row for e in loaded.skipped] == [2, 5]


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_140k_schema_maps_winner_time_id_and_keeps_tags(tmp_path: Path, suffix: str) -> None:
    rows = arena_140k_rows(30)
    battles = read_battles(write_rows(rows, tmp_path / f"train{suffix}")).battles
    assert len(battles) == 30
    for row, battle in zip(rows, battles):
        assert battle.winner == ("tie (bothbad)" if row["winner"] == "both_bad" else row["winner"])
        assert battle.question_id == row["id"] and battle.language == row["language"]
        assert battle.category_tag == row["category_tag"]
        assert battle.tstamp == pytest.approx(datetime.fromisoformat(row["timestamp"] + "+00:00").timestamp())
        assert battle.answer_text("a") == row["conversation_a"][1]["content"][0]["text"]
        assert battle.conv_metadata["header_count_a"] == row["conv_metadata"]["header_count_a"]
    assert "tie (bothbad)" in {b.winner for b in battles}


def test_140k_bad_rows_name_row_and_field(tmp_path: Path) -> None:
    rows = arena_140k_rows(4)
    rows[2]["winner"] = "left"
    rows[3]["timestamp"] = "yesterday"
    with pytest.raises(BattleFormatError) as caught:
        read_battles(write_rows(rows, tmp_path / "bad.parquet"))
    assert "row 3: field `winner`: 'left' is not one of" in str(caught.value)
    assert "row 4: field `timestamp`: expected an ISO 8601 time" in str(caught.value)
    with pytest.raises(BattleFormatError, match=r"line 3: field `winner`"):
        read_battles(write_rows(rows, tmp_path / "bad.jsonl"))
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(BattleFormatError, match="not a readable Parquet file"):
        read_battles(tmp_path / "broken.parquet")


# --- conv_metadata: FastChat's counting rules, used by style control -----------------------


def _fastchat_count_markdown_elements(markdown_text, suffix):
    """fastchat/serve/monitor/add_markdown_info.py, verbatim."""
    counters = {
        f"header_count{suffix}": {
            "h1": len(re.findall(r"^#{1}\s", markdown_text, re.MULTILINE)),
            "h2": len(re.findall(r"^#{2}\s", markdown_text, re.MULTILINE)),
            "h3": len(re.findall(r"^#{3}\s", markdown_text, re.MULTILINE)),
            "h4": len(re.findall(r"^#{4}\s", markdown_text, re.MULTILINE)),
            "h5": len(re.findall(r"^#{5}\s", markdown_text, re.MULTILINE)),
            "h6": len(re.findall(r"^#{6}\s", markdown_text, re.MULTILINE)),
        },
        f"list_count{suffix}": {
            "ordered": len(re.findall(r"^\s*\d+\.\s", markdown_text, re.MULTILINE)),
            "unordered": len(re.findall(r"^\s*[-*+]\s", markdown_text, re.MULTILINE)),
        },
        f"bold_count{suffix}": {
            "**": len(re.findall(r"\*\*[^*\n]+\*\*", markdown_text)),
            "__": len(re.findall(r"__[^_\n]+__", markdown_text)),
        },
    }
    return counters


def _fastchat_remove_pattern(answer, pattern):
    blocks = pattern.findall(answer)
    for block in blocks:
        answer = answer.replace(block, "")
    return answer


@pytest.mark.parametrize("text", ANSWERS + [
    "```\n```\n# header after an empty block\n- item",  # the block's inner text ("\n") is deleted everywhere
    "text ```x``` then x again\n## h2 x",
    "####### seven hashes is no header\n#no space\n  3. indented ordered\n-not a list",
])
def test_markdown_counts_are_fastchats(text: str) -> None:
    expected = _fastchat_count_markdown_elements(_fastchat_remove_pattern(text, re.compile("```([^`]*)```")), suffix="_a")
    assert markdown_counts(text, "_a") == expected


def test_style_control_uses_conv_metadata_when_present_and_computes_it_otherwise() -> None:
    with_texts = [Battle(model_a="x", model_b="y", winner="model_a", answer_a=ANSWERS[k % 5], answer_b=ANSWERS[(k + 2) % 5]) for k in range(10)]
    with_meta = [Battle(model_a="x", model_b="y", winner="model_a", conv_metadata=compute_conv_metadata(b)) for b in with_texts]
    names, computed = style_features(with_texts)
    assert names == ["length", "headers", "lists", "bold"]
    assert np.array_equal(style_features(with_meta)[1], computed)
    # Given metadata wins over the texts: A's answers claimed 10× longer than they are.
    claimed = [Battle(model_a="x", model_b="y", winner="model_a", answer_a=b.answer_a, answer_b=b.answer_b,
                      conv_metadata={**m.conv_metadata, "sum_assistant_a_tokens": 10 * m.conv_metadata["sum_assistant_a_tokens"]})
               for b, m in zip(with_texts, with_meta)]
    lengths = style_features(claimed)[1][:, 0]
    assert (lengths > computed[:, 0]).all()


# --- FastChat's compute_style_control (fastchat/serve/monitor/rating_systems.py) -----------
# preprocess_for_style, contextual_bt_loss_and_grad, fit_contextual_bt, compute_style_control
# as published; pandas' factorize and `df.conv_metadata.map` replaced by the loops they are.


def _fastchat_compute_style_control(records: list[dict], alpha=math.log(10.0), reg=0.5, init_rating=1000.0, scale=400.0, tol=1e-6):
    index: dict[str, int] = {}
    codes = [index.setdefault(m, len(index)) for m in [r["model_a"] for r in records] + [r["model_b"] for r in records]]
    models = list(index)
    n = len(records)
    matchups = np.column_stack([codes[:n], codes[n:]])
    winner = np.array([r["winner"] for r in records])
    outcomes = np.full(n, 0.5)
    outcomes[winner == "model_a"] = 1.0
    outcomes[winner == "model_b"] = 0.0
    k = int(len(STYLE_KEYS) / 2)

    def extract_style_feature(x, feature):
        val = x[feature]
        if isinstance(val, int):
            return val
        else:
            return sum(val.values())

    style_vector = np.zeros(shape=(2 * k, n), dtype=np.int32)
    for idx, element in enumerate(STYLE_KEYS):
        style_vector[idx, :] = [extract_style_feature(r["conv_metadata"], element) for r in records]
    style_diff = (style_vector[:k] - style_vector[k:]).astype(float)
    style_sum = (style_vector[:k] + style_vector[k:]).astype(float) + np.ones(style_diff.shape)
    apply_ratio = np.flatnonzero([1, 1, 1, 1])
    style_diff[apply_ratio] /= style_sum[apply_ratio]
    style_mean = np.mean(style_diff, axis=1)
    style_std = np.std(style_diff, axis=1)
    features = ((style_diff - style_mean[:, np.newaxis]) / style_std[:, np.newaxis]).T

    def contextual_bt_loss_and_grad(params, n_competitors, matchups, features, outcomes, alpha=1.0, reg=1.0, half_reg=0.5):
        reg_loss = half_reg * np.inner(params, params)
        ratings = params[:n_competitors]
        feature_params = params[n_competitors:]
        matchup_ratings = ratings[matchups]
        bt_logits = alpha * (matchup_ratings[:, 0] - matchup_ratings[:, 1])
        context_logits = np.dot(features, feature_params)
        probs = expit(bt_logits + context_logits)
        loss = -((np.log(probs) * outcomes + np.log(1.0 - probs) * (1.0 - outcomes))).sum() + reg_loss
        error = outcomes - probs
        grad = reg * params
        matchups_grads = -alpha * error
        np.add.at(grad[:n_competitors], matchups[:, [0, 1]], matchups_grads[:, None] * np.array([1.0, -1.0]))
        grad[n_competitors:] -= np.dot(features.T, error)
        return loss, grad

    initial_params = np.zeros(len(models) + features.shape[1], dtype=np.float64)
    result = minimize(
        fun=contextual_bt_loss_and_grad, x0=initial_params,
        args=(len(models), matchups, features, outcomes, alpha, reg, reg / 2.0),
        jac=True, method="L-BFGS-B", options={"maxiter": 100, "gtol": tol},  # FastChat also passes disp=False, deprecated in scipy
    )
    ratings_params = result["x"]
    scaled = ratings_params[: len(models)] * scale + init_rating  # scale_and_offset; no mixtral anchor here
    return dict(zip(models, scaled)), ratings_params[len(models):]


def _styled_battles(n: int, seed: int) -> list[Battle]:
    """Voters like long, bold answers; m3 writes them."""
    rng = np.random.default_rng(seed)
    strength = np.array([0.0, 0.3, 0.6, 0.6])
    battles = []
    for t in range(n):
        a, b = rng.choice(4, size=2, replace=False)
        texts = {}
        for side, m in (("a", a), ("b", b)):
            words = int(rng.poisson(60 if m == 3 else 25)) + 1
            texts[side] = ("**Key** point.\n" if m == 3 or rng.random() < 0.2 else "") + ("# Title\n" if rng.random() < 0.3 else "") + \
                "- item\n" * int(rng.integers(0, 4)) + "word " * words
        la, lb = len(texts["a"].split()), len(texts["b"].split())
        p = expit(strength[a] - strength[b] + 2.0 * (la - lb) / (la + lb + 1))
        u = rng.random()
        winner = "tie" if u < 0.08 else "model_a" if rng.random() < p else "model_b"
        battles.append(Battle(model_a=f"m{a}", model_b=f"m{b}", winner=winner, tstamp=1.7e9 + t, question_id=f"q{t}",
                              conversation_a=[Turn(role="user", content="Q"), Turn(role="assistant", content=texts["a"])],
                              conversation_b=[Turn(role="user", content="Q"), Turn(role="assistant", content=texts["b"])]))
    return battles


def test_style_control_agrees_with_fastchats_compute_style_control_on_our_export(tmp_path: Path) -> None:
    """Our export (conv_metadata computed from the answers) read by FastChat's own code, and
    `arena ratings --style-control` on the same file: within 0.05 Elo."""
    from service.battles import to_battle

    battles = _styled_battles(1200, seed=3)
    path = tmp_path / "export.json"
    write_battles(path, [to_battle(msgspec.to_builtins(b)) for b in battles])
    records = json.loads(path.read_text())
    assert all(set(STYLE_KEYS) <= r["conv_metadata"].keys() for r in records)
    theirs, coefficients = _fastchat_compute_style_control(records)

    result = CliRunner().invoke(cli, ["ratings", str(path), "--style-control", "--bootstrap", "0", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    ours = {row["model"]: row["rating"] for row in json.loads(result.stdout)}
    gap = max(abs(ours[m] - theirs[m]) for m in theirs)
    print(f"largest gap to FastChat: {gap:.4f} Elo; coefficients {coefficients}")
    assert gap < 0.05
    library = style_control(read_battles(path).battles, bootstrap=0)
    assert dict(zip(library.models, library.ratings)) == pytest.approx(ours, abs=1e-9)  # the CLI is the library
    assert [library.coefficients[f] for f in ("length", "headers", "lists", "bold")] == pytest.approx(coefficients, abs=2e-3)
