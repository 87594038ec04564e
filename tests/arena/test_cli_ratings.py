"""`arena ratings`: the leaderboard a user sees, its JSON, its plots and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from arena.battles import Battle, write_battles
from service.cli import cli, main

SAMPLE = Path("/work/shared/data/battles_fastchat.json")
ROW_KEYS = {"model", "rating", "ci_low", "ci_high", "rank_ub", "votes", "win_rate", "elo", "flip_votes"}


@pytest.fixture
def battles_file(tmp_path: Path) -> Path:
    """300 battles among three models of clearly different strength, with answer lengths."""
    rng = np.random.default_rng(0)
    names, strength = ["small", "medium", "large"], np.array([-0.7, 0.0, 0.7])
    battles = []
    for t in range(300):
        i, j = rng.choice(3, size=2, replace=False)
        u = rng.random()
        p = 1 / (1 + np.exp(strength[j] - strength[i]))
        winner = "tie" if u < 0.1 else "model_a" if u < 0.1 + 0.9 * p else "model_b"
        battles.append(
            Battle(model_a=names[i], model_b=names[j], winner=winner, tstamp=1.7e9 + t, length_a=int(rng.integers(50, 400)), length_b=int(rng.integers(50, 400)))
        )
    path = tmp_path / "battles.jsonl"
    write_battles(path, battles)
    return path


def run(*args: str) -> object:
    return CliRunner().invoke(cli, ["ratings", *args], catch_exceptions=False)


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int | str, str, str]:
    """Through the console-script entry point, where errors become one line and an exit code."""
    monkeypatch.setattr(sys, "argv", ["arena", "ratings", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_prints_a_leaderboard(battles_file: Path) -> None:
    result = run(str(battles_file), "--bootstrap", "100")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "300 battles, 3 models" in result.stdout
    rows = [line for line in lines if any(m in line for m in ("small", "medium", "large"))]
    assert [next(m for m in ("large", "medium", "small") if m in row) for row in rows] == ["large", "medium", "small"]
    assert "+" in rows[0] and "/−" in rows[0]  # CI as +x/−y
    assert "Rank (UB)" in result.stdout and "Win rate" in result.stdout and "Elo" in result.stdout


def test_json_rows(battles_file: Path) -> None:
    result = run(str(battles_file), "--bootstrap", "100", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [r["model"] for r in rows] == ["large", "medium", "small"]
    assert all(set(r) == ROW_KEYS for r in rows)
    assert all(r["ci_low"] <= r["rating"] <= r["ci_high"] for r in rows)
    assert sum(r["votes"] for r in rows) == 600
    assert rows[0]["rank_ub"] == 1 and rows[-1]["rank_ub"] == 3
    assert all(isinstance(r["flip_votes"], int) and r["flip_votes"] > 0 for r in rows[:-1]) and rows[-1]["flip_votes"] is None


def test_explicit_fit_subcommand_and_seed_give_the_same_answer(battles_file: Path) -> None:
    short = run(str(battles_file), "--bootstrap", "50", "--json", "--seed", "7")
    explicit = run("fit", str(battles_file), "--bootstrap", "50", "--json", "--seed", "7")
    assert json.loads(short.stdout) == json.loads(explicit.stdout)
    options_first = run("--json", "--bootstrap", "50", "--seed", "7", str(battles_file))
    assert json.loads(options_first.stdout) == json.loads(short.stdout)


def test_anchor_pins_a_model(battles_file: Path) -> None:
    rows = json.loads(run(str(battles_file), "--bootstrap", "50", "--json", "--anchor", "medium=1200").stdout)
    medium = next(r for r in rows if r["model"] == "medium")
    assert medium["rating"] == pytest.approx(1200) and medium["ci_low"] == pytest.approx(1200)


def test_style_control(battles_file: Path) -> None:
    result = run(str(battles_file), "--bootstrap", "50", "--style-control")
    assert result.exit_code == 0, result.output
    assert "style-controlled" in result.stdout and "Raw BT" in result.stdout
    assert "style coefficients" in result.stdout and "length" in result.stdout
    as_json = run(str(battles_file), "--bootstrap", "50", "--style-control", "--json")
    rows = json.loads(as_json.stdout)
    assert all(set(r) == ROW_KEYS | {"rating_raw"} for r in rows)
    assert "style coefficients" in as_json.stderr


@pytest.mark.parametrize("suffix", [".svg", ".png"])
def test_plot_writes_the_chart(battles_file: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"board{suffix}"
    result = run(str(battles_file), "--bootstrap", "50", "--plot", str(out))
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in data[:1000]
    if suffix == ".svg":
        assert b"ties excluded" in data or b"P(A beats B)" in data


def test_sample_file_notes_the_weak_prior() -> None:
    result = run(str(SAMPLE), "--bootstrap", "50")
    assert result.exit_code == 0
    assert "never lost: lora-r16" in " ".join(result.stdout.split())


def test_errors_are_one_line_and_exit_nonzero(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_main(monkeypatch, capsys, str(tmp_path / "missing.json"))
    assert code == 1 and out == "" and err == f"error: {tmp_path / 'missing.json'}: no such file\n"

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"model_a": "x", "model_b": "y", "winner": "x"}, {"model_a": "x", "model_b": "y", "winner": "tie"}]))
    code, _, err = run_main(monkeypatch, capsys, str(bad))
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: {bad}: 1 invalid record: record 0: field `winner`: 'x' is not one of")
    assert "--skip-invalid" in err

    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    code, _, err = run_main(monkeypatch, capsys, str(empty))
    assert (code, err) == (1, f"error: {empty}: no battles to rate\n")

    code, _, err = run_main(monkeypatch, capsys, str(SAMPLE), "--anchor", "nobody=1000")
    assert code == 1 and "model 'nobody' is not in" in err

    code, _, err = run_main(monkeypatch, capsys, str(SAMPLE), "--plot", str(tmp_path / "chart.pdf"))
    assert code == 1 and "expected a .svg or .png" in err


def test_skip_invalid_says_how_many(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"model_a": "x", "model_b": "y", "winner": "model_a"},
                {"model_a": "x", "model_b": "x", "winner": "tie"},
                {"model_a": "y", "model_b": "x", "winner": "model_b"},
                {"winner": "tie"},
            ]
        )
    )
    code, out, err = run_main(monkeypatch, capsys, str(path), "--skip-invalid", "--bootstrap", "20", "--json")
    assert code == 0
    assert "skipped 2 invalid records" in err
    assert sum(r["votes"] for r in json.loads(out)) == 4


def test_help_lists_the_fit() -> None:
    result = CliRunner().invoke(cli, ["ratings", "--help"])
    assert result.exit_code == 0
    assert "BATTLES [OPTIONS] | COMMAND" in result.output and "fit" in result.output


def test_no_elo_gives_the_same_ratings_without_the_elo_column(battles_file: Path) -> None:
    with_elo = json.loads(run(str(battles_file), "--bootstrap", "50", "--json").stdout)
    without = json.loads(run(str(battles_file), "--bootstrap", "50", "--json", "--no-elo").stdout)
    assert [r["elo"] for r in without] == [None] * len(without) and all(r["elo"] is not None for r in with_elo)
    assert [(r["model"], r["rating"], r["ci_low"]) for r in without] == [(r["model"], r["rating"], r["ci_low"]) for r in with_elo]


def test_the_command_imports_no_heavy_library(battles_file: Path) -> None:
    """The whole command's time is the user's wait: torch, transformers, litestar and
    scipy.stats (0.6 s of import alone) stay out of it."""
    code = ("import sys\nfrom service.cli import main\nsys.argv = ['arena', 'ratings', sys.argv[1], '--bootstrap', '20', '--json']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print([m for m in ('torch', 'transformers', 'litestar', 'scipy.stats') if m in sys.modules], file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, str(battles_file)], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)[0]["model"] == "large"
    assert done.stderr.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("ordered,kept,passes", [(True, None, 1), (False, None, 1), (False, 5, 2)])
def test_a_category_is_folded_batch_by_batch_to_the_board_of_its_battles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                         ordered: bool, kept: int | None, passes: int) -> None:
    """`--category` on a JSON Lines export (and a file only the validating reader takes)
    folds the category's battles into counts and Elo a block at a time, never holding the
    file or the category's battles: the same board as rating those battles directly, also
    when the times go backwards. Then the kept columns (17 bytes a battle) give the sorted
    Elo in one read; past `KEPT_BATTLES` of them, the file is read again."""
    from arena import battle_stream, tally
    from arena.counts import PairCounts
    from arena.ratings import leaderboard, online_elo

    rng = np.random.default_rng(3)
    battles = []
    for t in range(900):
        i, j = rng.choice(4, size=2, replace=False)
        zh = bool(rng.random() < 0.5)
        battles.append(Battle(model_a=f"m{i}", model_b=f"m{j}", winner=["model_a", "model_b", "tie"][int(rng.integers(3)) if zh else int(i < j)],
                              tstamp=1.7e9 + (t if ordered else (t * 37) % 900),
                              conv_metadata={"arena": {"categories": ["language=zh" if zh else "language=latin"]}},
                              answer_a="答" * 200, answer_b="答" * 150))
    path = tmp_path / "export.jsonl"
    write_battles(path, battles)
    zh = [b for b in battles if b.conv_metadata["arena"]["categories"] == ["language=zh"]]
    expected = leaderboard(PairCounts.from_battles(zh), elo=online_elo(zh), bootstrap=30, seed=0)

    monkeypatch.setattr(battle_stream, "BLOCK_BYTES", 4096)
    if kept is not None:
        monkeypatch.setattr(tally, "KEPT_BATTLES", kept)
    largest, read, real = [], [], tally.tally_battles

    def spy(batches, **kw):
        def sized():
            read.append(1)
            for batch in batches:
                largest.append(len(batch))
                yield batch
        return real(type("Again", (), {"__iter__": lambda self: sized()})(), **kw)

    monkeypatch.setattr(tally, "tally_battles", spy)
    rows = json.loads(run(str(path), "--category", "language=zh", "--bootstrap", "30", "--json").stdout)
    assert [(r["model"], r["votes"], r["elo"], r["rating"]) for r in rows] == [
        (r.model, r.votes, pytest.approx(r.elo), pytest.approx(r.rating)) for r in expected.rows]
    assert len(largest) >= 20 and max(largest) < 20 and len(read) == passes  # many small batches
