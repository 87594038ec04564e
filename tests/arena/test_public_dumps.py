"""The public arena dumps in and out: the Kaggle 55k CSV and the 140k schema (JSON, JSONL,
Parquet) read into FastChat battles, our export carrying FastChat's `conv_metadata`, and
style control agreeing with FastChat's `compute_style_control` on it — through the
library and through `arena battles import|export` / `arena ratings`."""

from __future__ import annotations

import json
import math
import re
import sys
from datetime import datetime
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from scipy.optimize import minimize
from scipy.special import expit

from arena.battles import Battle, BattleFormatError, Turn, read_battles, write_battles
from arena.style import style_control, style_features
from arena.style_metadata import STYLE_KEYS, compute_conv_metadata, markdown_counts
from service.cli import cli, main
from tests.redis_fixtures import settings_env

ANSWERS = [
    "# Plan\n- one\n- two\n**bold** and __this__",
    "Plain answer without markdown, but rather long and wordy, going on and on for a while.",
    "1. first\n2. second\n```python\n# not a header\nx = 1\n```\n## Done",
    "short",
    "### Heading\n* item\n+ item\n  - nested\n**a** **b**",
]


def _kaggle_rows(n: int, seed: int = 0) -> list[dict]:
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


def _parts(text: str) -> list[dict]:
    return [{"type": "text", "text": text, "image": None, "mimeType": None}]


def _arena_140k_rows(n: int, seed: int = 1) -> list[dict]:
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
            "conversation_a": [{"role": "user", "content": _parts("Q")}, {"role": "assistant", "content": _parts(texts["a"])}],
            "conversation_b": [{"role": "user", "content": _parts("Q")}, {"role": "assistant", "content": _parts(texts["b"])}],
            "conv_metadata": meta,
            "category_tag": {"math_v0.1": {"math": bool(k % 2)}, "if_v0.1": {"if": False, "score": 1}},
            "language": "en" if k % 3 else "de", "is_code": False,
            "timestamp": f"2025-05-{1 + k % 28:02d}T14:48:41.602925",
        })
    return rows


def _write(rows: list[dict], path: Path) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".csv":
        pacsv.write_csv(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    return path


# --- reading the dumps --------------------------------------------------------------------


def test_kaggle_55k_csv_maps_winners_turns_and_ids(tmp_path: Path) -> None:
    rows = _kaggle_rows(40)
    battles = read_battles(_write(rows, tmp_path / "train.csv")).battles
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
    assert read_battles(_write(rows, tmp_path / "train.jsonl")).battles == battles


def test_kaggle_55k_bad_rows_are_named_all_or_nothing(tmp_path: Path) -> None:
    rows = _kaggle_rows(6)
    rows[1].update(winner_model_a=1, winner_model_b=1, winner_tie=0)
    rows[4]["response_b"] = "not json ["
    path = _write(rows, tmp_path / "train.csv")
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
    rows = _arena_140k_rows(30)
    battles = read_battles(_write(rows, tmp_path / f"train{suffix}")).battles
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
    rows = _arena_140k_rows(4)
    rows[2]["winner"] = "left"
    rows[3]["timestamp"] = "yesterday"
    with pytest.raises(BattleFormatError) as caught:
        read_battles(_write(rows, tmp_path / "bad.parquet"))
    assert "row 3: field `winner`: 'left' is not one of" in str(caught.value)
    assert "row 4: field `timestamp`: expected an ISO 8601 time" in str(caught.value)
    with pytest.raises(BattleFormatError, match=r"line 3: field `winner`"):
        read_battles(_write(rows, tmp_path / "bad.jsonl"))
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


# --- through the CLI and the store --------------------------------------------------------


def _cli(settings, *args: str):
    return CliRunner().invoke(cli, list(args), env=settings_env(settings), catch_exceptions=False)


@pytest.mark.parametrize("name,rows", [
    ("train.csv", lambda: _kaggle_rows(25)),
    ("arena.json", lambda: _arena_140k_rows(25)),
    ("arena.jsonl", lambda: _arena_140k_rows(25)),
    ("arena.parquet", lambda: _arena_140k_rows(25)),
])
def test_import_a_public_dump_then_export_and_import_again(settings, tmp_path: Path, name: str, rows) -> None:
    source = _write(rows(), tmp_path / name)
    expected = read_battles(source).battles
    result = _cli(settings, "battles", "import", str(source))
    assert result.exit_code == 0 and "imported 25 battles (25 human); skipped 0 invalid" in result.stdout, result.output

    exported = tmp_path / "out.jsonl"
    assert _cli(settings, "battles", "export", str(exported)).exit_code == 0
    back = read_battles(exported).battles
    assert [(b.model_a, b.model_b, b.winner, b.question_id, b.tstamp, b.language, b.category_tag) for b in back] == [
        (b.model_a, b.model_b, b.winner, b.question_id, b.tstamp, b.language, b.category_tag) for b in expected]
    for old, new in zip(expected, back):
        assert new.answer_text("a") == old.answer_text("a")
        assert set(STYLE_KEYS) <= new.conv_metadata.keys()  # given by the dump, or computed for the export
        if old.conv_metadata:
            assert all(new.conv_metadata[k] == old.conv_metadata[k] for k in STYLE_KEYS)

    copy = settings.model_copy(update={"key_prefix": settings.key_prefix + "-copy"}) if hasattr(settings, "model_copy") else None
    if copy is not None:
        assert _cli(copy, "battles", "import", str(exported)).exit_code == 0
        again = tmp_path / "again.jsonl"
        assert _cli(copy, "battles", "export", str(again)).exit_code == 0
        assert again.read_text() == exported.read_text()


def test_import_errors_are_one_line_and_nothing_is_stored(settings, tmp_path: Path, monkeypatch, capsys) -> None:
    rows = _kaggle_rows(5)
    rows[2].update(winner_model_a=0, winner_model_b=0, winner_tie=0)
    path = _write(rows, tmp_path / "train.csv")
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["arena", "battles", "import", str(path)])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "row 3: field `winner_model_a`: expected exactly one of" in err and "--skip-invalid" in err
    exported = tmp_path / "none.json"
    assert _cli(settings, "battles", "export", str(exported)).exit_code == 0
    assert json.loads(exported.read_text()) == []  # all or nothing
    result = _cli(settings, "battles", "import", str(path), "--skip-invalid")
    assert result.exit_code == 0 and "imported 4 battles (4 human); skipped 1 invalid" in result.stdout


@pytest.mark.parametrize("name", ["arena.jsonl", "arena.parquet"])
def test_a_dump_is_imported_a_batch_at_a_time_and_still_all_or_nothing(settings, tmp_path: Path, monkeypatch, name: str) -> None:
    """`arena battles import` reads the file twice, a batch at a time (a 140k dump was
    3.1 GB held whole): first every record is checked, then the battles are logged batch by
    batch. A record refused in the last batch (a model name with a control character,
    which the store would refuse mid-import) still stops it before anything is logged, named
    by its line or row; with --skip-invalid the rest is logged, in batches."""
    from arena import battle_stream
    from service.store.arena import ArenaStore

    rows = _arena_140k_rows(120)
    rows[117]["model_b"] = "evil\x1fname"
    path = _write(rows, tmp_path / name)
    monkeypatch.setattr(battle_stream, "BLOCK_BYTES", 16 << 10)
    monkeypatch.setattr(battle_stream, "TABLE_ROWS", 16)
    logged, real = [], ArenaStore.record_observations

    async def spy(self, votes, **kw):
        logged.append(len(votes))
        return await real(self, votes, **kw)

    monkeypatch.setattr(ArenaStore, "record_observations", spy)
    from service.errors import InvalidInput

    with pytest.raises(InvalidInput) as refused:  # the entry point prints it as one line, exit 1
        _cli(settings, "battles", "import", str(path))
    assert logged == []
    where = "line 118" if name.endswith(".jsonl") else "row 118"
    assert f"1 invalid record: {where}: model names must not contain control characters" in refused.value.message
    assert "--skip-invalid" in refused.value.message

    result = _cli(settings, "battles", "import", str(path), "--skip-invalid")
    assert result.exit_code == 0 and "imported 119 battles (119 human); skipped 1 invalid" in result.output, result.output
    assert sum(logged) == 119 and len(logged) >= 5 and max(logged) <= 40
    exported = tmp_path / "out.jsonl"
    assert _cli(settings, "battles", "export", str(exported)).exit_code == 0
    back = read_battles(exported).battles
    assert [b.question_id for b in back] == [r["id"] for k, r in enumerate(rows) if k != 117]
    # The tags computed in the check pass and reused by the logging pass are each battle's own.
    from service.prompt_categories import battle_tags

    source = [b for k, b in enumerate(read_battles(path).battles) if k != 117]  # the reader takes it; our check refuses it
    assert [b.conv_metadata["arena"]["categories"] for b in back] == [battle_tags(b) for b in source]
    assert len({tuple(t) for t in (battle_tags(b) for b in source)}) > 1


@pytest.mark.parametrize("name,rows", [("train.csv", lambda: _kaggle_rows(60)), ("arena.jsonl", lambda: _arena_140k_rows(60))])
def test_ratings_read_a_dump_through_the_mapping_reader(tmp_path: Path, name: str, rows) -> None:
    """`arena ratings` on a dump in JSON Lines: the streaming tally leaves a foreign time
    (ISO `timestamp`) to the reader that maps it. (A Parquet or CSV dump is streamed:
    `test_the_tally_streams_a_table_dump_as_the_mapping_reader_reads_it`.)"""
    from arena.counts import PairCounts
    from arena.tally import tally_file

    rows = rows()
    if name.endswith(".jsonl"):
        for row in rows:
            row["winner"] = "tie" if row["winner"] == "both_bad" else row["winner"]  # only the timestamp is foreign
    path = _write(rows, tmp_path / name)
    if name.endswith(".jsonl"):
        assert tally_file(path) is None
    counts = PairCounts.from_battles(read_battles(path).battles)
    result = CliRunner().invoke(cli, ["ratings", str(path), "--bootstrap", "0", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    votes = {row["model"]: row["votes"] for row in json.loads(result.stdout)}
    assert sum(votes.values()) == 2 * len(rows) and set(votes) == set(counts.models)


@pytest.mark.parametrize("name", ["train.csv", "train.parquet", "arena-140k.parquet", "arena-140k.csv", "times.parquet"])
def test_the_tally_streams_a_table_dump_as_the_mapping_reader_reads_it(tmp_path: Path, monkeypatch, name: str) -> None:
    """A public dump in Parquet or CSV is counted by the streaming tally (only the columns
    it needs: never a conversation), with the counts and Elo the mapping reader gives:
    the 55k's winner columns, the 140k's `both_bad` and ISO `timestamp` (naive: UTC),
    and a Parquet time column."""
    from arena import tally as tally_module
    from arena.counts import PairCounts
    from arena.elo import online_elo
    from arena.files import record_batches
    from arena.tally import tally_file

    rows = _kaggle_rows(300) if name.startswith("train") else _arena_140k_rows(300)
    if name == "times.parquet":  # a Parquet time column, out of order, some rows with a tstamp too
        for k, row in enumerate(rows):
            row["timestamp"] = datetime(2025, 5, 1 + (k * 7) % 28, 14, k % 60, 41)
            row["tstamp"] = 1.7e9 + k if k % 5 == 0 else None
    if name == "arena-140k.csv":  # nested columns are JSON text in a CSV
        rows = [{k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()} for row in rows]
    path = _write(rows, tmp_path / name)
    battles = read_battles(path).battles
    asked = []
    monkeypatch.setattr(tally_module, "record_batches", lambda p, columns=None: asked.append(columns) or record_batches(p, columns))
    got = tally_file(path)
    assert got is not None and got.counts == PairCounts.from_battles(battles)
    assert got.elo == pytest.approx(online_elo(battles), abs=1e-9)
    assert not {"conversation_a", "conversation_b", "prompt", "response_a", "conv_metadata"} & set(asked[0])


@pytest.mark.parametrize("broken", ["flags", "time"])
def test_a_dump_row_the_mapping_reader_rejects_is_left_to_it(tmp_path: Path, broken: str) -> None:
    """A row the mapping reader rejects (two winner columns set, a time that is not ISO 8601)
    makes the tally step aside, so `arena ratings` names the row."""
    from arena.tally import tally_file

    rows = _kaggle_rows(20) if broken == "flags" else _arena_140k_rows(20)
    if broken == "flags":
        rows[7]["winner_model_b"] = rows[7]["winner_model_a"] = 1
    else:
        rows[7]["timestamp"] = "yesterday"
    path = _write(rows, tmp_path / "dump.parquet")
    assert tally_file(path) is None
    result = CliRunner().invoke(cli, ["ratings", str(path), "--bootstrap", "0"])
    assert result.exit_code != 0 and "row 8" in str(result.exception), result.exception


def test_a_category_of_a_dump_is_read_batch_by_batch_keeping_only_its_battles(tmp_path: Path, monkeypatch) -> None:
    """`arena ratings DUMP --category TAG` holds a few thousand rows at a time and keeps only
    the category's battles, without their conversations (a 140k dump was 3.2 GB whole)."""
    from arena import battle_stream as battles_module
    from service.cli.ratings import _InCategory

    rows = _arena_140k_rows(300)
    path = _write(rows, tmp_path / "dump.parquet")
    asked = []
    real = battles_module.record_batches
    monkeypatch.setattr(battles_module, "record_batches", lambda p, columns=None, **kw: asked.append(kw) or real(p, columns, **kw))
    kept = read_battles(path, keep=lambda b: b if b.language == "de" else None).battles
    assert [b.question_id for b in kept] == [r["id"] for r in rows if r["language"] == "de"]
    assert asked and asked[0]["batch_rows"] <= 4096
    every = read_battles(path).battles
    in_category = _InCategory("task_type=math", slim=True)
    slim = [b for b in map(in_category, every) if b is not None]
    assert slim and all(b.conversation_a is None and b.category_tag is None for b in slim)
    assert [(b.model_a, b.model_b, b.winner, b.tstamp) for b in slim] == [
        (b.model_a, b.model_b, b.winner, b.tstamp) for b, r in zip(every, rows) if r["category_tag"]["math_v0.1"]["math"]]
    assert _InCategory("task_type=math", slim=False)(every[1]) is every[1]
